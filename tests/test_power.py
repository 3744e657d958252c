"""course_lib.power on data simulated from its own model, and `python -m course_lib power` at
smoke size."""

import csv
import json

import numpy as np
import pytest

from course_lib import power
from course_lib.commands import main
from course_lib.experiments.power import DESIGNS, PowerSettings, sampling_seed

TRUE = dict(zip(power.TERMS, (0.010, 0.020, 0.030, 0.005, 0.004, 0.006, 0.050), strict=True))


def simulate(rng, components, shape, reps=()):
    """Draws of p_ijn = 1/2 + a_i + b_j + c_n + (ab)_ij + (ac)_in + (bc)_jn + e_ijn."""
    I, J, N = shape
    sd = {t: np.sqrt(v) for t, v in components.items()}
    axes = {
        "seed_A": (I, 1, 1),
        "seed_B": (1, J, 1),
        "prompt": (1, 1, N),
        "seed_A:seed_B": (I, J, 1),
        "seed_A:prompt": (I, 1, N),
        "seed_B:prompt": (1, J, N),
        "residual": (I, J, N),
    }
    p = np.full((*reps, I, J, N), 0.5)
    for t, size in axes.items():
        p = p + rng.normal(0.0, sd[t], (*reps, *size))
    return p


def test_estimates_are_unbiased_on_simulated_data():
    # 1000 data sets of 4 x 3 x 40: the mean of each raw estimate lies within 4 Monte-Carlo
    # standard errors of the true component (a fixed seed: the test is deterministic)
    rng = np.random.default_rng(0)
    draws = np.array(
        [
            [power.variance_components(simulate(rng, TRUE, (4, 3, 40))).raw[t] for t in power.TERMS]
            for _ in range(1000)
        ]
    )
    mc_se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    truth = np.array([TRUE[t] for t in power.TERMS])
    assert np.all(np.abs(draws.mean(axis=0) - truth) < 4 * mc_se), (draws.mean(axis=0), truth)


def test_a_zero_component_is_clipped_and_named():
    rng = np.random.default_rng(1)
    comps = {**TRUE, "seed_A": 0.0}
    results = [power.variance_components(simulate(rng, comps, (3, 3, 20))) for _ in range(200)]
    negative = [r for r in results if r.raw["seed_A"] < 0]
    assert negative, "a zero component's unbiased estimate is negative about half the time"
    for r in negative:
        assert "seed_A" in r.clipped and r.variances["seed_A"] == 0.0
    assert all(min(r.variances.values()) >= 0 for r in results)


def test_variance_of_the_mean_matches_simulated_means():
    rng = np.random.default_rng(2)
    S, N, reps = 3, 20, 20_000
    means = simulate(rng, TRUE, (S, S, N), (reps,)).mean(axis=(1, 2, 3))
    predicted = power.variance_of_mean(TRUE, S, N)
    # the sample variance of 20 000 means has a relative standard error of 1%
    assert np.var(means, ddof=1) == pytest.approx(predicted, rel=0.04)
    expected = sum(
        TRUE[t] / d for t, d in zip(power.TERMS, (3, 3, 20, 9, 60, 60, 180), strict=True)
    )
    assert predicted == pytest.approx(expected, rel=1e-12)


def test_expected_spread_over_seed_pairs_matches_simulation():
    rng = np.random.default_rng(3)
    S, N = 3, 20
    pairs = simulate(rng, TRUE, (S, S, N), (20_000,)).mean(axis=3).reshape(20_000, S * S)
    observed = np.mean(np.var(pairs, axis=1, ddof=1))
    assert np.sqrt(observed) == pytest.approx(power.expected_pair_std(TRUE, S, N), rel=0.02)


def test_the_intervals_variance_is_unbiased_and_its_df_in_range():
    rng = np.random.default_rng(5)
    S, N = 3, 20
    results = [power.mean_interval(simulate(rng, TRUE, (S, S, N))) for _ in range(2000)]
    v = np.array([r["se"] ** 2 for r in results])
    # V is unbiased for Var(mean) (up to the few draws where it is negative and set to 0)
    assert v.mean() == pytest.approx(power.variance_of_mean(TRUE, S, N), rel=0.1)
    nu = np.array([r["df"] for r in results])
    finite = np.isfinite(nu)  # nu is undefined where V <= 0
    assert np.all((nu[finite] > 0) & (nu[finite] <= 2 * (S - 1) + N - 1 + 4 * (S - 1) * (N - 1)))
    assert np.all(v[~finite] == 0.0) and finite.mean() > 0.9
    zero = power.mean_interval(np.full((2, 2, 3), 0.5))
    assert zero["se"] == 0.0 and zero["halfwidth"] == 0.0


def test_halfwidth_and_mde_are_normal_quantiles_times_the_standard_error():
    se = np.sqrt(power.variance_of_mean(TRUE, 3, 200))
    assert power.ci_halfwidth(TRUE, 3, 200) == pytest.approx(1.959964 * se, rel=1e-6)
    assert power.minimum_detectable_effect(TRUE, 3, 200) == pytest.approx(
        (1.959964 + 0.841621) * se, rel=1e-6
    )


def test_split_separates_sampling_noise_from_what_training_fixes():
    # p_ijnk = t_ijn + u_ink + v_jnk + w_ijnk: one draw's noise has components seed_A:prompt,
    # seed_B:prompt and residual; the estimates recover both parts in expectation
    rng = np.random.default_rng(4)
    I, J, N, K, reps = 3, 3, 30, 2, 600
    noise = {t: 0.0 for t in power.TERMS} | {
        "seed_A:prompt": 0.02,
        "seed_B:prompt": 0.03,
        "residual": 0.01,
    }
    got = {"fixed": [], "sampling": []}
    for _ in range(reps):
        t = simulate(rng, TRUE, (I, J, N))
        eps = np.stack([simulate(rng, noise, (I, J, N)) - 0.5 for _ in range(K)], axis=-1)
        split = power.split_components(t[..., None] + eps)
        assert split.at(K) == split.total.variances
        got["fixed"].append([split.total.raw[x] - split.sampling_raw[x] / K for x in power.TERMS])
        got["sampling"].append([split.sampling_raw[x] for x in power.TERMS])
    for part, truth in (("fixed", TRUE), ("sampling", noise)):
        arr = np.array(got[part])
        se = arr.std(axis=0, ddof=1) / np.sqrt(reps)
        want = np.array([truth[x] for x in power.TERMS])
        assert np.all(np.abs(arr.mean(axis=0) - want) < 4 * se + 1e-12), (part, arr.mean(0), want)


def test_all_one_half_gives_zeros():
    comps = power.variance_components(np.full((3, 3, 10), 0.5))
    assert comps.variances == {t: 0.0 for t in power.TERMS} and comps.clipped == ()
    assert power.ci_halfwidth(comps, 3, 200) == 0.0
    assert power.minimum_detectable_effect(comps, 3, 200) == 0.0
    split = power.split_components(np.full((2, 2, 5, 2), 0.5))
    assert split.at(1) == {t: 0.0 for t in power.TERMS}


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: power.variance_components(np.zeros((3, 3))), r"shape \(3, 3\)"),
        (lambda: power.variance_components(np.zeros((1, 3, 4))), r"shape \(1, 3, 4\)"),
        (lambda: power.variance_components(np.full((2, 2, 2), np.nan)), "8 non-finite"),
        (lambda: power.split_components(np.zeros((2, 2, 3))), r"p\[i, j, n, k\]"),
        (lambda: power.ci_halfwidth(TRUE, 0, 200), "seeds=0"),
        (lambda: power.ci_halfwidth(TRUE, 3, 2.5), "prompts=2.5"),
        (lambda: power.ci_halfwidth({"seed_A": 0.1}, 3, 200), r"\['seed_A'\]"),
        (lambda: power.ci_halfwidth({**TRUE, "prompt": -1.0}, 3, 200), "'prompt': -1.0"),
        (lambda: power.ci_halfwidth(TRUE, 3, 200, confidence=1.0), "confidence=1.0"),
        (lambda: power.minimum_detectable_effect(TRUE, 3, 200, power=0.0), "power=0.0"),
        (lambda: power.minimum_detectable_effect(TRUE, 3, 200, alpha=2), "alpha=2"),
        (lambda: power.expected_pair_std(TRUE, 1, 200), "seeds=1"),
    ],
)
def test_bad_input_is_named(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_settings_read_the_selection_and_refuse_bad_values():
    chosen = PowerSettings().resolve()
    assert chosen["a"] == {"method": "online_ipo", "tau": 0.03, "beta": 0.0}
    assert chosen["b"]["method"] == "ipo_md" and chosen["b"]["beta"] == 0.25
    assert PowerSettings(tau_a=0.5).resolve()["a"]["tau"] == 0.5
    with pytest.raises(ValueError, match="steps='8,x'"):
        PowerSettings(steps="8,x").validate()
    with pytest.raises(ValueError, match="seeds=1"):
        PowerSettings(seeds=1).validate()
    with pytest.raises(ValueError, match="completions=11"):
        PowerSettings(completions=11).validate()


def test_paired_seeds_are_shared_and_unpaired_seeds_are_not():
    policies = [(m, s) for m in ("online_ipo", "ipo_md") for s in range(10)]
    for k in range(10):
        assert {sampling_seed("paired", k, m, s) for m, s in policies} == {
            sampling_seed("paired", k)
        }
    unpaired = [sampling_seed("unpaired", k, m, s) for m, s in policies for k in range(10)]
    unpaired += [sampling_seed("unpaired", k) for k in range(10)]
    paired = {sampling_seed("paired", k) for k in range(10)}
    assert len(set(unpaired)) == len(unpaired) and not paired & set(unpaired)


def test_cli_refuses_bad_options_before_loading(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["power", "-h"])
    assert exc.value.code == 0 and "--tau-a" in capsys.readouterr().out
    code = main(["power", "--profile", "smoke", "--steps", "0,2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "steps='0,2'" in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_power_smoke_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "power"
    args = ["--profile", "smoke", "--seeds", "2", "--steps", "1,2", "--prompts", "4"]
    assert main(["power", *args, "--no-progress", "--out", str(out)]) == 0
    assert "half-width" in capsys.readouterr().out
    for name in ("components.json", "halfwidth.csv", "power.png", "p.npz"):
        assert (out / name).is_file(), name
    result = json.loads((out / "components.json").read_text())
    assert set(result["steps"]) == {"1", "2"}
    for per_design in result["steps"].values():
        assert set(per_design) == set(DESIGNS)
        for one in per_design.values():
            comps = one["components"]
            for part in (comps["total"]["variances"], comps["fixed"]):
                values = np.array(list(part.values()))
                assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert set(result["seconds"]) >= {"training", "sampling", "judging", "analysis"}
    with open(out / "halfwidth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3 * 10 * 5  # steps x designs x K' x seeds x prompts
    assert all(float(r["halfwidth"]) >= 0 for r in rows)
    # the report is a function of p.npz alone
    assert main(["power", "--profile", "smoke", "--reanalyse", "--out", str(out)]) == 0
    again = json.loads((out / "components.json").read_text())
    assert again["steps"] == result["steps"] and again["reanalysed"] is True
