"""Trained real-track adapters: saved as safetensors, read back exactly, judged by ``evaluate``.

A tiny Llama saved as a local model folder stands in for SmolLM2 (the same ``load_policy`` path,
NF4 on the CPU), so the whole chain (train two methods, copy their adapters, judge them) runs in
seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import llm
from course_lib.config import get_profile
from course_lib.experiments import real_trained, train
from course_lib.llm.adapters import load_adapter, lora_state, save_adapter
from course_lib.online.algorithms import ALGORITHMS, method_seed, online_algorithms
from course_lib.sampling import sample_texts

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _policy(folder, r=4):
    torch.manual_seed(0)
    return llm.load_policy(str(folder), load_in_4bit=True, lora=llm.LoraSettings(r=r, alpha=8.0))


def _perturb(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


# -- saving and loading -------------------------------------------------------------------------
def test_an_adapter_comes_back_exactly_in_float32_and_rounded_in_bfloat16(
    tiny_model_folder, tmp_path
):
    a = _policy(tiny_model_folder)
    _perturb(a.model)
    saved = {k: v.clone() for k, v in lora_state(a.model).items()}
    save_adapter(a.model, tmp_path / "f32")
    save_adapter(a.model, tmp_path / "bf16", dtype="bfloat16")
    assert (tmp_path / "bf16" / "adapter_model.safetensors").stat().st_size < 0.6 * (
        tmp_path / "f32" / "adapter_model.safetensors"
    ).stat().st_size

    b = _policy(tiny_model_folder)  # B = 0: pi = pi_ref before the load
    assert not all(torch.equal(v, saved[k]) for k, v in lora_state(b.model).items())
    load_adapter(b.model, tmp_path / "f32")
    assert all(torch.equal(v, saved[k]) for k, v in lora_state(b.model).items())
    load_adapter(b.model, tmp_path / "bf16")
    for k, v in lora_state(b.model).items():
        assert v.dtype == saved[k].dtype
        assert torch.equal(v, saved[k].to(torch.bfloat16).float())


def test_a_loaded_adapter_gives_the_saved_policys_logits(tiny_model_folder, tmp_path):
    a = _policy(tiny_model_folder)
    _perturb(a.model)
    save_adapter(a.model, tmp_path / "ad")
    b = _policy(tiny_model_folder)
    load_adapter(b.model, tmp_path / "ad")
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        torch.testing.assert_close(b.model(ids).logits, a.model(ids).logits, rtol=0, atol=0)
        with b.reference():  # the adapter off is still the base
            base = b.model(ids).logits
        assert not torch.allclose(base, a.model(ids).logits)


def test_an_adapter_of_another_shape_or_a_broken_folder_is_refused(tiny_model_folder, tmp_path):
    a = _policy(tiny_model_folder, r=4)
    save_adapter(a.model, tmp_path / "r4")
    b = _policy(tiny_model_folder, r=2)
    with pytest.raises(ValueError, match="does not fit the model.*'r': \\(4, 2\\)"):
        load_adapter(b.model, tmp_path / "r4")
    with pytest.raises(FileNotFoundError, match="not a saved LoRA adapter"):
        load_adapter(b.model, tmp_path / "nothing")
    with pytest.raises(ValueError, match="dtype='float16' is invalid"):
        save_adapter(a.model, tmp_path / "x", dtype="float16")
    with torch.no_grad():
        next(p for n, p in a.model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        save_adapter(a.model, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


# -- seeds per method -----------------------------------------------------------------------------
def test_every_online_method_draws_from_its_own_seed():
    seeds = {m: method_seed(7, m) for m in online_algorithms()}
    assert len(set(seeds.values())) == len(seeds)
    assert seeds["online_ipo"] == 7  # online IPO keeps the run's seed
    assert all(method_seed(7, m, common=True) == 7 for m in seeds)
    assert min(ALGORITHMS[m].seed_offset for m in seeds if m != "online_ipo") >= 1000


# -- the whole chain: train, copy, judge ----------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tiny_model_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = train.TrainSettings(
        track="real",
        model=str(tiny_model_folder),
        tau=0.1,
        beta=0.125,
        lr=5e-3,
        steps=2,
        prompts_per_step=2,
        new_tokens=4,
        checkpoint_every=1,
    )
    for method in ("online_ipo", "ipo_md"):
        s = replace(base, algorithm=method)
        train.run(s, get_profile("smoke"), root / method, resume=False, progress=False)
    return root


def test_train_draws_from_the_methods_seed(two_runs):
    run = json.loads((two_runs / "ipo_md" / "run.json").read_text())
    assert run["settings"]["seed"] == 0 and not run["settings"]["common_seeds"]
    s = train.TrainSettings(**run["settings"])
    trainer = train.build_trainer(s, get_profile("smoke"), two_runs / "probe", progress=False)
    assert trainer.config.seed == 1000


def test_evaluate_judges_the_committed_adapters(two_runs, tmp_path):
    out = tmp_path / "eval"
    settings = real_trained.EvaluateSettings(
        runs=(str(two_runs / "online_ipo"), str(two_runs / "ipo_md")),
        eval_prompts=5,
        batch_size=2,
    )
    summary = real_trained.evaluate(settings, out, log=lambda *_: None)

    # the format of results/real-cpu/summary.json, for both judges
    assert summary["eval_prompts"] == 5
    for judge in ("oracle", "learned"):
        vs = summary["vs_reference"][judge]
        assert set(vs) == {"IPO", "IPO-MD"}
        for wr in vs.values():
            assert 0 <= wr["low"] <= wr["mean"] <= wr["high"] <= 1
        mat = np.array(summary["matrices"][judge]["mean"])
        np.testing.assert_allclose(mat + mat.T, 1.0)
    assert summary["runs"]["ipo_md"]["settings"]["algorithm"] == "ipo_md"
    assert len(summary["histories"]["ipo_md"]) == 2

    # what is judged is what is committed: the bfloat16 copy, loaded back, draws the samples
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    policy = _policy_like(two_runs, out)
    load_adapter(policy.model, out / "adapters" / "ipo_md")
    prompts = _eval_prompts(policy.tokenizer, 5)
    again = sample_texts(
        policy.model, policy.tokenizer, prompts, 4, settings.seed, 2, add_special_tokens=True
    )
    assert again == [r["ipo_md"] for r in rows]
    per = summary["per_prompt_vs_reference"]["oracle"]["ipo_md"]
    assert [r["p_oracle_ipo_md_vs_reference"] for r in rows] == per
    assert np.mean(per) == pytest.approx(summary["vs_reference"]["oracle"]["IPO-MD"]["mean"])

    # the logs travel with the adapters; the README reads its figures from the summary
    for name in ("run.json", "metrics.jsonl", "timing.jsonl"):
        assert (out / "runs" / "ipo_md" / name).read_bytes() == (
            two_runs / "ipo_md" / name
        ).read_bytes()
    readme = (out / "README.md").read_text()
    wr = summary["vs_reference"]["oracle"]["IPO-MD"]
    assert f"| IPO-MD | oracle | {wr['mean']:.3f} | [{wr['low']:.3f}, {wr['high']:.3f}]" in readme

    # no path of this machine in what would be committed: run folders and the base by name
    for path in (out / "summary.json", out / "adapters" / "ipo_md" / "adapter_config.json"):
        assert str(tmp_path.parent) not in path.read_text()
        assert str(two_runs) not in path.read_text()
    assert summary["settings"]["runs"] == ["online_ipo", "ipo_md"]
    config = json.loads((out / "adapters" / "ipo_md" / "adapter_config.json").read_text())
    model = json.loads((two_runs / "ipo_md" / "run.json").read_text())["settings"]["model"]
    assert config["base_model_name_or_path"] == Path(model).name

    # a second evaluation into the same folder is allowed (it is this command's own)
    real_trained.evaluate(replace(settings, eval_prompts=2), out, log=lambda *_: None)


def _policy_like(two_runs, out):
    lora = real_trained.lora_of(out / "adapters" / "ipo_md")
    run = json.loads((two_runs / "ipo_md" / "run.json").read_text())
    torch.manual_seed(0)
    return llm.load_policy(run["settings"]["model"], load_in_4bit=True, lora=lora)


def _eval_prompts(tokenizer, n):
    from course_lib.experiments.real import chat_prompt
    from course_lib.tasks import load_split

    return [chat_prompt(tokenizer, r.post, r.title) for r in load_split("test")[:n]]


def test_evaluate_refuses_unfinished_or_mixed_runs(two_runs, tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text((two_runs / "ipo_md" / "run.json").read_text())
    with pytest.raises(ValueError, match="holds no trained adapter yet"):
        real_trained.read_runs([tmp_path / "half"])
    with pytest.raises(ValueError, match="two runs of ipo_md"):
        real_trained.read_runs([two_runs / "ipo_md", two_runs / "ipo_md"])
    with pytest.raises(FileNotFoundError, match="run.json is missing"):
        real_trained.read_runs([tmp_path / "nothing"])
    with pytest.raises(ValueError, match="runs=\\(\\) is invalid"):
        real_trained.EvaluateSettings().validate()


def test_the_evaluate_command_names_a_bad_folder(capsys, tmp_path):
    from course_lib.__main__ import main

    code = main(["evaluate", "--runs", str(tmp_path / "x"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "run.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_committed_cpu_adapters_are_safetensors_and_small():
    root = Path(__file__).resolve().parents[1] / "results" / "real-trained-cpu"
    if not root.is_dir():
        pytest.skip("results/real-trained-cpu/ is not committed yet")
    summary = json.loads((root / "summary.json").read_text())
    assert summary["eval_prompts"] >= 128
    for method in summary["runs"]:
        folder = root / "adapters" / method
        assert sorted(p.name for p in folder.iterdir()) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        assert (folder / "adapter_model.safetensors").stat().st_size < 12e6


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(eval_prompts=600), "eval_prompts=600 is invalid: must be an integer in \\[2, 500\\]"),
        (dict(eval_prompts=1), "eval_prompts=1 is invalid"),
        (dict(batch_size=0), "batch_size=0 is invalid: must be a positive integer"),
        (dict(seed=-1), "seed=-1 is invalid"),
        (dict(adapter_dtype="float16"), "adapter_dtype='float16' is invalid"),
    ],
)
def test_bad_evaluate_settings_are_named(overrides, message):
    settings = real_trained.EvaluateSettings(runs=("some/run",), **overrides)
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_the_evaluate_command_refuses_too_many_prompts_with_exit_2(capsys, tmp_path):
    from course_lib.commands import main

    code = main(["evaluate", "--runs", "x", "--eval-prompts", "600", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "eval_prompts=600 is invalid: must be an integer in [2, 500]" in err
    assert "Traceback" not in err
