"""The exercise API (``course_lib.exercises``): one registry per notebook, checks that show the
failing case's inputs and never its expected output, hints in tiers, the solution only on an
explicit reveal, stubs reported as "not attempted yet"; and the fixes of issue 15's defects."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.exercises import (
    NOT_ATTEMPTED,
    Case,
    CheckResult,
    Exercise,
    ExerciseSet,
    _format_value,
    nb01,
    nb02,
    nb03,
    nb04,
    nb05,
    nb06,
    nb09,
    nb10,
    nb11,
    nb12,
)
from course_lib.tabular import (
    best_response as library_best_response,
)
from course_lib.tabular import (
    dice_preference,
    mirror_descent,
    offline_ipo_solution,
    regularised_nash,
)

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = sorted(p.stem[2:] for p in (ROOT / "course_lib" / "exercises").glob("nb[0-9][0-9].py"))
MODULES = {n: importlib.import_module(f"course_lib.exercises.nb{n}") for n in NUMBERS}
ALL = [(n, ex) for n, m in MODULES.items() for ex in m.EXERCISES]


def _notebook(number: str) -> dict:
    (path,) = (ROOT / "notebooks").glob(f"{number}_*.ipynb")
    return json.loads(path.read_text())


def _recorded_kv_bytes() -> int:
    summary = ROOT / "results" / "real-gpu-h200-ipo-md-8-steps" / "summary.json"
    return json.loads(summary.read_text())["estimate"]["memory"]["kv_caches"]


def _value_arguments(number: str, ex: Exercise) -> tuple[tuple, tuple]:
    """(answers, data) that the reference solution of a value exercise gives, with its data."""
    if ex.name == "disagreement":
        p_model, p_oracle = np.array([0.8, 0.3, 0.6, 0.55]), np.array([0.9, 0.2, 0.4, 0.5])
        return (ex.solution(p_model, p_oracle),), (p_model, p_oracle)
    if ex.name == "gradient_signs":
        p = np.array([0.2, 0.7, 0.55, 0.49])
        return (ex.solution(p),), (nb10.autograd_ipo_grad_h(np.zeros(4), p, 0.1),)
    if ex.name == "gpu_kv_bytes":
        return (ex.solution(),), (_recorded_kv_bytes(),)
    if ex.name == "lowest_exploitability":
        from course_lib.arena.language import Language
        from course_lib.arena.policy import PolicySpec
        from course_lib.arena.train import build_arena

        arenas = [build_arena(mode, Language(), PolicySpec(), 0) for mode in ("bt", "nt")]
        tau, beta = 0.25, 0.25
        answers = tuple(ex.solution(a, tau, beta) for a in arenas)
        return answers, (*arenas, tau, beta)
    answers = ex.solution()
    return (answers if len(ex.answers) > 1 else (answers,)), ()


# ---- every exercise --------------------------------------------------------------------------
@pytest.mark.parametrize(("number", "ex"), ALL, ids=[f"nb{n}.{ex.name}" for n, ex in ALL])
def test_every_reference_solution_passes_its_own_check(number, ex):
    module = MODULES[number]
    if ex.kind == "function":
        result = getattr(module, f"check_{ex.name}", None) or module.EXERCISES.checker(ex.name)
        result = module.EXERCISES.check(ex.name, ex.solution)
    else:
        answers, data = _value_arguments(number, ex)
        result = module.EXERCISES.check(ex.name, *answers, *data)
    assert result.passed and result.status == "ok", str(result)
    assert str(result).startswith("[OK]")


@pytest.mark.parametrize(("number", "ex"), ALL, ids=[f"nb{n}.{ex.name}" for n, ex in ALL])
def test_a_stub_or_a_missing_answer_is_not_attempted_yet(number, ex):
    module = MODULES[number]
    if ex.kind == "function":

        def stub(*args, **kwargs):
            raise NotImplementedError  # your code here

        result = module.EXERCISES.check(ex.name, stub)
    else:
        result = module.EXERCISES.check(ex.name, *([None] * len(ex.answers)), *([None] * 2))
    assert not result.passed and not result.attempted and result.status == "not attempted"
    text = str(result)
    assert text.startswith(f"[TODO] {ex.title}: {NOT_ATTEMPTED}")
    assert "Traceback" not in text and "[FAIL]" not in text


@pytest.mark.parametrize(("number", "ex"), ALL, ids=[f"nb{n}.{ex.name}" for n, ex in ALL])
def test_hints_come_in_tiers_and_never_hold_the_solution_code(number, ex):
    assert len(ex.hints) >= 2
    body = inspect.getsource(ex.solution).split('"""')[-1]  # the code after the docstring
    code_lines = [ln.strip() for ln in body.splitlines() if len(ln.strip()) >= 16]
    code_lines = [ln for ln in code_lines if not ln.startswith(("#", "def ", "return "))]
    for tier in ex.hints:
        for line in code_lines:
            assert line not in tier, (ex.name, line)
    # the first tier is the idea: shorter on formulas than the last one
    assert ex.hints[0] != ex.hints[-1]


@pytest.mark.parametrize("number", NUMBERS)
def test_each_notebook_states_and_checks_every_exercise(number):
    nb = _notebook(number)
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    module = MODULES[number]
    for ex in module.EXERCISES:
        assert re.search(rf"\*\*Exercise {ex.number}\b", text), (number, ex.number)
        checkers = [n for n in dir(module) if getattr(getattr(module, n), "exercise", 0) == ex.name]
        assert any(f"nb{number}.{c}(" in text for c in checkers), (number, ex.name)
    # and every checker a notebook calls exists
    for name in re.findall(rf"nb{number}\.(check_\w+)\(", text):
        assert callable(getattr(module, name)), name
    # the intro says how hints, the solution and the cases are asked for
    assert f'nb{number}.hint("name", 2)' in text and "reveal=True" in text


@pytest.mark.parametrize("number", NUMBERS)
def test_every_question_an_exercise_asks_has_a_written_answer(number):
    from course_lib.editions import _exercise_blocks

    module = MODULES[number]
    for n, statement, codes in _exercise_blocks(_notebook(number)):
        assert codes, (number, n)  # every exercise has a marked solution cell
        if "?" in statement:
            assert any(ex.answer for ex in module.EXERCISES if ex.number == n), (number, n)


@pytest.mark.parametrize("number", NUMBERS)
def test_committed_exercise_outputs_reveal_no_hint_and_no_expected_value(number):
    nb = _notebook(number)
    module = MODULES[number]
    hints = [tier for ex in module.EXERCISES for tier in ex.hints]
    started = False
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        started = started or "### BEGIN SOLUTION" in src
        if not started or cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert "[FAIL]" not in text and "[TODO]" not in text and "hint:" not in text
            for tier in hints:
                assert tier[:40] not in text


# ---- the API ---------------------------------------------------------------------------------
def test_hint_tiers_advance_and_can_be_asked_for_by_number(capsys):
    ex = ExerciseSet(
        "nbXX",
        [Exercise("f", 1, lambda x: x, ("the idea", "the formula"), cases=lambda: [((1,), {})])],
    )
    ex.hint("f")
    first = capsys.readouterr().out
    assert "hint 1 of 2 for f: the idea" in first and "nbXX.hint('f', 2)" in first
    ex.hint("f")
    second = capsys.readouterr().out
    assert "hint 2 of 2 for f: the formula" in second and "reveal=True" in second
    ex.hint("f")  # stays at the last tier
    assert "the formula" in capsys.readouterr().out
    ex.hint("f", 1)
    assert "the idea" in capsys.readouterr().out
    with pytest.raises(ValueError, match="tiers 1..2"):
        ex.hint("f", 3)
    with pytest.raises(ValueError, match="no exercise named 'g'.*'f'"):
        ex.hint("g")


def test_module_hints_start_with_the_idea(capsys):
    nb01.hint("win_probability")
    out = " ".join(capsys.readouterr().out.split())
    assert "hint 1 of 2" in out and "double sum" in out and "weighted by both" in out
    assert "@" not in out  # issue 15: the old hint was the answer, "pi @ P @ pi_prime"
    nb01.hint("win_probability", 2)
    assert "hint 2 of 2" in capsys.readouterr().out


def test_the_solution_needs_an_explicit_reveal(capsys):
    nb02.solution("best_response")
    hidden = capsys.readouterr().out
    assert "def best_response" not in hidden and "np.exp" not in hidden
    assert "nb02.solution('best_response', reveal=True)" in hidden
    nb02.solution("best_response", reveal="yes")  # only True reveals
    assert "def best_response" not in capsys.readouterr().out
    nb02.solution("best_response", reveal=True)
    shown = capsys.readouterr().out
    assert "def best_response(P, pi_ref, tau, opponent):" in shown and "z.max()" in shown
    nb02.solution("two_action_nash", reveal=True)  # with the written answer to its question
    assert "tends to [1, 0]" in capsys.readouterr().out


def test_a_failing_check_shows_the_inputs_not_the_expected_output():
    def naive(P, pi_ref, tau, opponent):  # overflows at tau = 0.001
        w = pi_ref * np.exp(P @ opponent / tau)
        return w / w.sum()

    result = nb02.check_best_response(naive)
    text = str(result)
    assert not result and result.attempted and text.startswith("[FAIL] best_response")
    assert "case 3 of 6" in text and "tau = 0.001" in text and "opponent = np.array(" in text
    assert "nan" in text and "nb02.case('best_response', 3)" in text
    args, kwargs = nb02.case("best_response", 3)
    expected = nb02.best_response(*args, **kwargs)
    assert _format_value(expected) not in text
    for value in expected:
        assert f"{value:.6f}" not in text and f"{value:.4f}" not in text
    assert "nb02.hint('best_response')" in text  # a pointer to the hint, not its text
    assert nb02.EXERCISES["best_response"].hints[0] not in text


def test_a_wrong_scalar_does_not_leak_the_expected_value_through_a_difference():
    result = nb09.check_ece(lambda p, o, n_bins=10: 0.0)
    args, kwargs = nb09.case("ece", 0)
    expected = nb09.ece(*args, **kwargs)
    text = str(result)
    assert not result and "p_model = np.array(" in text and "outcome = np.array(" in text
    for digits in (3, 4, 6):
        assert f"{expected:.{digits}f}" not in text and f"{expected:.{digits}g}" not in text


def test_case_gives_copies_and_the_learner_cannot_spoil_the_reference():
    args, _ = nb02.case("best_response", 0)
    args[0][:] = 0.0  # the learner's copy only
    assert nb02.check_best_response(nb02.best_response)

    def in_place(P, pi_ref, tau, opponent):  # right answer, but scribbles on its inputs
        out = nb02.best_response(P, pi_ref, tau, opponent)
        P[:] = 0.0
        opponent[:] = 1.0
        return out

    assert nb02.check_best_response(in_place)
    with pytest.raises(IndexError, match="cases 0..5"):
        nb02.case("best_response", 6)
    with pytest.raises(ValueError, match="checked on your values"):
        nb01.case("fourth_die", 0)


def test_errors_none_and_wrong_types_are_reported_not_raised():
    assert "ZeroDivisionError" in str(nb01.check_win_probability(lambda *a: 1 / 0))
    assert "returned None" in str(nb01.check_win_probability(lambda *a: None))
    assert "not a number or an array" in str(nb01.check_win_probability(lambda *a: {"p": 1}))
    shape = nb01.check_dice_matrix(lambda dice: np.zeros(2))
    assert "shape (2,)" in str(shape) and "shape (3, 3)" in str(shape)
    assert "expected your function" in str(nb01.check_win_probability(3.0))
    bad = nb01.check_fourth_die("not a die", [1, 0, 0, 0])
    assert not bad and bad.attempted


def test_check_result_status_and_str():
    ok = CheckResult("x", True, ["fine"])
    todo = CheckResult("x", False, ["write it"], attempted=False)
    fail = CheckResult("x", False, ["case 0 of 1: ..."])
    assert (ok.status, todo.status, fail.status) == ("ok", "not attempted", "fail")
    assert bool(ok) and not todo and not fail
    assert str(todo) == "[TODO] x: not attempted yet\n  write it"
    assert str(fail).startswith("[FAIL] x\n")


def test_exercise_definitions_are_validated():
    with pytest.raises(ValueError, match="exactly one of cases= and verify="):
        Exercise("f", 1, print, ("a", "b"))
    with pytest.raises(ValueError, match="two hint tiers"):
        Exercise("f", 1, print, ("a",), cases=lambda: [])
    with pytest.raises(ValueError, match="names its answers"):
        Exercise("f", 1, print, ("a", "b"), verify=lambda x: [])
    one = Exercise("f", 1, print, ("a", "b"), cases=lambda: [Case((1,))])
    with pytest.raises(ValueError, match="two exercises are named 'f'"):
        ExerciseSet("nbXX", [one, one])


def test_properties_run_after_the_cases_and_report_what_they_found():
    # right on every case, but not 4/tau times the Nash-MD-PG gradient elsewhere: impossible to
    # build from the cases alone, so check the property directly on a function that cheats
    cases = {
        tuple(np.round(a[0], 12))
        for a, _ in (nb05.case("online_ipo_gradient", i) for i in range(3))
    }

    def cheat(theta, P, pi_ref, tau):
        if tuple(np.round(theta, 12)) in cases:
            return nb05.online_ipo_gradient(theta, P, pi_ref, tau)
        return np.zeros_like(theta)

    result = nb05.check_online_ipo_gradient(cheat)
    assert not result and "the cases match, but not this" in str(result)


# ---- issue 15's defects, one test each -------------------------------------------------------
def test_nb01_the_fourth_die_and_the_closest_scores_are_checked():
    assert nb01.check_fourth_die(*nb01.fourth_die())
    # a die that loses to everything gives no cycle through all four
    P = dice_preference([*nb01.DICE, [0] * 6])
    assert nb01.majority_cycle(P) is None
    assert not nb01.check_fourth_die([0] * 6, regularised_nash(P, np.ones(4) / 4, 1.0))
    die = [0, 0, 6, 6, 8, 8]
    assert not nb01.check_fourth_die(die, np.ones(4) / 4)  # not its equilibrium
    assert nb01.check_closest_scores([0.3, 0.3, 0.3])  # only equal scores reach 1/18
    assert not nb01.check_closest_scores([0.0, 0.01, 0.0])
    P = dice_preference()
    rng = np.random.default_rng(0)
    gaps = [np.abs(P - nb01.bradley_terry_matrix(s)).max() for s in rng.normal(size=(500, 3))]
    assert min(gaps) >= 1 / 18 - 1e-12


def test_nb02_a_naive_best_response_fails_at_tau_0001_and_the_reference_passes():
    def naive(P, pi_ref, tau, opponent):
        w = pi_ref * np.exp(P @ opponent / tau)
        return w / w.sum()

    assert not nb02.check_best_response(naive)
    assert nb02.check_best_response(nb02.best_response)
    assert nb02.check_best_response(library_best_response)
    args, _ = nb02.case("best_response", 3)
    with np.errstate(all="ignore"):
        assert np.isnan(naive(*args)).any()  # the case really overflows
    # the tau -> 0 limit of exercise 3 is checked too: p = 1, tau = 1e-4
    with np.errstate(all="ignore"):
        assert not nb02.check_two_action_nash(
            lambda p, tau: np.array([np.exp((p - 0.5) / tau), 1.0]) / (1 + np.exp((p - 0.5) / tau))
        )
    # the gap is zero at the equilibrium and positive elsewhere: a gap without tau KL(pi, ref)
    assert not nb02.check_regularised_gap(
        lambda P, pi, ref, tau: (
            nb02.regularised_gap(P, pi, ref, tau) - tau * np.sum(pi * np.log(pi / ref))
        )
    )


def test_nb03_exercise_2_is_not_the_worked_example_of_section_2():
    def section_2(p, mu, pi_ref, tau):  # sigmoid(1/(2 tau)): only for p = 1, uniform mu and ref
        pi1 = 1 / (1 + np.exp(-0.5 / tau))
        return np.array([pi1, 1 - pi1])

    assert not nb03.check_two_action_ipo(section_2)
    # and the answer does not depend on mu, as the written answer says
    a = nb03.two_action_ipo(0.7, np.array([0.9, 0.1]), np.array([0.3, 0.7]), 0.2)
    b = nb03.two_action_ipo(0.7, np.array([0.1, 0.9]), np.array([0.3, 0.7]), 0.2)
    np.testing.assert_allclose(a, b)
    P2 = np.array([[0.5, 0.7], [0.3, 0.5]])
    np.testing.assert_allclose(a, regularised_nash(P2, [0.3, 0.7], 0.2), atol=1e-9)


def test_nb03_exercise_3_is_possible_and_its_numbers():
    P, uniform = dice_preference(), np.ones(3) / 3
    # at tau = 0.1 no data give more than 0.5255 on B (the old exercise asked for 0.9) ...
    most = nb03._max_on_b(0.1)
    assert most == pytest.approx(0.5255, abs=1e-4)
    c = np.array([0.0, 0.0, 1.0])
    assert offline_ipo_solution(P, uniform, c, 0.1)[1] == pytest.approx(most, abs=1e-12)
    # ... and a finer search (log pi*(B) is concave in mu) finds nothing better
    rng = np.random.default_rng(1)
    mus = rng.dirichlet(np.ones(3) * 0.3, size=4000)
    assert max(offline_ipo_solution(P, uniform, m, 0.1)[1] for m in mus) <= most + 1e-12
    # at tau = 0.02 data on C give 0.938 > 0.9
    assert offline_ipo_solution(P, uniform, c, nb03.TAU_B)[1] == pytest.approx(0.938, abs=1e-3)
    assert nb03.check_data_for_die_b(c, most)
    assert not nb03.check_data_for_die_b(np.ones(3) / 3, most)  # 1/3 on B
    assert not nb03.check_data_for_die_b(c, 0.9)  # claims 0.9 reachable at tau = 0.1
    assert not nb03.check_data_for_die_b(np.array([0.5, 0.5, 0.5]), most)  # not a distribution


def test_nb04_eta_stop_is_defined_computed_and_checked():
    exact = nb04.omd_exact_threshold()
    assert exact == pytest.approx(5.0677, abs=1e-3)
    assert nb04.omd_spectral_radius(exact - 0.01) < 1 < nb04.omd_spectral_radius(exact + 0.01)
    # the linearisation tells what a run does: converges just below, orbits just above
    below = mirror_descent(nb04.CYCLE, nb04.CYCLE_REF, nb04.CYCLE_TAU, exact - 0.05, 40_000)
    above = mirror_descent(nb04.CYCLE, nb04.CYCLE_REF, nb04.CYCLE_TAU, exact + 0.05, 40_000)
    assert np.abs(below[-1] - below[-2]).max() < 1e-12
    assert np.ptp(above[-500:], axis=0).max() > 1e-2
    assert nb04.check_omd_threshold(exact + 0.09) and nb04.check_omd_threshold(exact - 0.09)
    low, high = nb04.check_omd_threshold(4.9), nb04.check_omd_threshold(5.5)
    assert not low and "go higher" in str(low)
    assert not high and "too large" in str(high)
    assert f"{exact:.2f}" not in str(low) + str(high)


def test_nb04_exercise_3b_step_for_temperature():
    assert nb04.step_for_temperature(0.1, 0.5) == pytest.approx(8.0)  # section 4's last row
    assert not nb04.check_step_for_temperature(lambda tau, tau_mix: tau_mix / tau)


def test_nb05_online_dpo_with_bradley_terry_is_rlhf_not_nash():
    from course_lib.tabular import bradley_terry

    s, ref, tau = np.array([1.0, 0.0, -0.5]), np.array([0.2, 0.5, 0.3]), 0.5
    rlhf = nb05.online_dpo_bradley_terry(s, ref, tau)
    nash = regularised_nash(bradley_terry(s), ref, tau)
    assert np.abs(rlhf - nash).max() > 1e-2
    assert not nb05.check_online_dpo_bradley_terry(
        lambda scores, r, t: regularised_nash(bradley_terry(scores), r, t)
    )
    # with two responses it is section 6's point: logit(pi1) = logit(p)/tau
    p = 0.7
    two = nb05.online_dpo_bradley_terry(np.array([np.log(p / (1 - p)), 0.0]), [0.5, 0.5], 0.1)
    assert two[0] == pytest.approx(1 / (1 + (3 / 7) ** 10))


def test_nb06_hints_use_the_notebooks_notation():
    for ex in nb06.EXERCISES:
        for tier in ex.hints:
            assert "pi'" not in tier, tier
    assert "pi^beta" in " ".join(nb06.EXERCISES["ipo_md_gradient"].hints)
    assert "pi'" not in inspect.getsource(nb06)


def test_nb09_the_sign_check_says_how_many_not_which():
    p = np.array([0.2, 0.7, 0.55, 0.49])
    grad = nb10.autograd_ipo_grad_h(np.zeros(4), p, 0.1)
    assert nb10.check_gradient_signs(np.sign(0.5 - p), grad)
    wrong = nb10.check_gradient_signs(np.ones(4), grad)
    text = str(wrong)
    assert not wrong and "2 of 4 signs are wrong" in text
    assert "autograd" not in text and "[0, 3]" not in text and "[" not in text.split("\n")[1]
    assert "give one sign per pair" in str(nb10.check_gradient_signs([1, -1], grad))


def test_nb09_the_committed_notebook_does_not_print_the_gradient_before_the_exercise():
    nb = _notebook("09")
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if "### BEGIN SOLUTION" in src:
            break
        assert "h.grad.numpy()" not in src and "print(h.grad" not in src
        for out in cell.get("outputs", []):
            assert "dL/dh" not in "".join(out.get("text", ""))


def test_nb10_gpu_kv_bytes_is_checked_against_the_recorded_run():
    recorded = _recorded_kv_bytes()
    assert nb11.gpu_kv_bytes() == recorded == 353_894_400
    assert not nb11.check_gpu_kv_bytes(recorded // 2, recorded)  # one cache only
    assert str(recorded) not in str(nb11.check_gpu_kv_bytes(recorded // 2, recorded))
    notebook = "\n".join("".join(c["source"]) for c in _notebook("10")["cells"])
    assert "kv_caches = " not in notebook  # the exercise cell no longer prints the answer


def test_nb11_properties_are_checked():
    def not_antisymmetric(P, lengths, lam):
        out = nb12.length_penalised_preference(P, lengths, lam)
        return out if lam == 0 else np.triu(out) + np.tril(out.T, -1)

    assert not nb12.check_length_penalised_preference(not_antisymmetric)


def test_tensors_and_large_inputs_are_shown_compactly():
    assert _format_value(torch.tensor([[1, 2]])) == "torch.tensor([[1, 2]], dtype=torch.int64)"
    assert _format_value(np.zeros(100)) == "an array of shape (100,), float64"
    assert _format_value(0.1) == "0.1"


def test_checks_are_logged_for_the_grader(tmp_path, monkeypatch):
    grading = pytest.importorskip("course_lib.grading")
    log = tmp_path / "checks.jsonl"
    monkeypatch.setenv(grading.LOG_ENV, str(log))
    nb01.check_win_probability(nb01.win_probability)
    nb01.check_fourth_die(None, None)
    nb02.check_best_response(lambda *a: 0)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows == [
        {"module": "nb01", "exercise": "win_probability", "status": "ok"},
        {"module": "nb01", "exercise": "fourth_die", "status": "not attempted"},
        {"module": "nb02", "exercise": "best_response", "status": "fail"},
    ]
    monkeypatch.delenv(grading.LOG_ENV)
    nb01.check_win_probability(nb01.win_probability)  # no grader: nothing written
    assert len(log.read_text().splitlines()) == 3
