"""The real track: settings, prompts, a whole run on a tiny 4-bit model, and the CLI on SmolLM2.

The tiny model stands in for SmolLM2 where only the plumbing is under test (it is saved as a
local folder, loaded through the same ``load_policy`` path and quantised to NF4 on the CPU). The
last test runs the real thing, ``python -m course_lib reproduce --track real`` in the smoke
profile, on the embedded SmolLM2 in 4-bit: the run CI makes, with no mocks.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import llm, resources
from course_lib.config import get_profile
from course_lib.experiments.real import RealSettings, RealTrack, chat_prompt, load_prompts
from course_lib.judges import model_judge
from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")
FIXTURES = Path(__file__).parent / "fixtures"


def settings_for(folder, **overrides):
    base = dict(
        model=str(folder),
        methods=("online_ipo", "ipo_md"),
        steps=2,
        prompts_per_step=2,
        new_tokens=4,
        eval_prompts=3,
        lr=5e-3,
    )
    return RealSettings(**{**base, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(tau=0.0), "tau=0.0 is invalid"),
        (dict(beta=1.5), "beta=1.5 is invalid: the mixture weight on pi_ref, a finite number >= 0"),
        (dict(lr=float("inf")), "lr=inf is invalid"),
        (dict(judge="no/such/folder"), "judge='no/such/folder' is invalid"),
        (dict(prompts="missing.jsonl"), "prompts='missing.jsonl' is invalid"),
        (dict(methods=("offline_ipo",)), "methods=.* choose one or more online algorithms"),
        (dict(mode="xx"), "mode='xx' is invalid"),
        (dict(steps=0), "steps=0 is invalid: must be a positive integer"),
        (dict(prompts="tldr"), "have no oracle"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        RealSettings(**overrides).sized(get_profile("smoke")).validate()


def test_sizes_come_from_the_profile_unless_given():
    prof = get_profile("cpu")
    s = RealSettings(steps=5).sized(prof)
    assert s.steps == 5
    assert (s.prompts_per_step, s.new_tokens, s.eval_prompts) == (
        prof.real_prompts_per_step,
        prof.real_new_tokens,
        prof.real_eval_prompts,
    )


def test_chat_prompt_holds_instruction_and_post(tiny_model_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_folder)
    plain = chat_prompt(tok, "my cat ate my homework", title="help")
    assert plain.endswith("TL;DR:") and "POST: my cat ate my homework" in plain

    class Templated:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "<user>" + messages[0]["content"] + "<assistant>"

    templated = chat_prompt(Templated(), "my cat ate my homework")
    assert templated.startswith("<user>Summarise") and templated.endswith("<assistant>")


def test_local_tldr_prompts_split_and_need_a_judge(tiny_model_folder, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_folder)
    s = RealSettings(prompts=str(FIXTURES / "tldr_prompts.jsonl"), judge="some/folder")
    train_p, train_c, eval_p, eval_c = load_prompts(s, tok, n_train=10, n_eval=1)
    assert len(train_p) == 2 and len(eval_p) == 1 and set(train_c).isdisjoint(eval_c)
    assert all(c.startswith("SUBREDDIT:") for c in train_c + eval_c)
    bad = RealSettings(prompts=str(tmp_path / "none.jsonl"), judge="x")
    with pytest.raises(ValueError, match="none.jsonl'? is invalid"):
        load_prompts(bad, tok, 2, 2)


@pytest.mark.slow
def test_a_whole_run_on_a_tiny_4bit_model(tiny_model_folder, tmp_path):
    logs = []
    track = RealTrack(
        get_profile("smoke"),
        settings_for(tiny_model_folder),
        tmp_path / "out",
        progress=False,
        log=logs.append,
    )
    policy = track.load()
    assert policy.load_in_4bit and llm.count_4bit_linears(policy.model) > 0
    initial = {k: v.clone() for k, v in track._initial_adapter.items()}
    summary = track.run()

    # before training: the estimate, with exact parts, printed
    assert "estimated memory" in logs[0] and "estimated time" in logs[0]
    est = summary["estimate"]["memory"]
    assert est["adapter"] == resources.trainable_bytes(policy.model)
    # the estimate describes the weights after the first sampling forward; bitsandbytes' CPU
    # repacking (which would change them on AVX512-BF16 CPUs) is off in the course, so nothing
    # was repacked during the run, and the bytes are those a CPU without it holds
    assert est["base"] + est["adapter"] == llm.memory_footprint_bytes(policy.model)
    assert not any(
        getattr(getattr(p, "quant_state", None), "packing_format_for_cpu", False)
        for p in policy.model.parameters()
    )
    assert summary["estimate"]["time"]["total"] > 0
    # after: measured
    assert "measured:" in logs[-1]
    assert all(p and p > 0 for p in summary["measured"]["peak_bytes"].values())
    # AdamW's two moments per adapter weight: the estimate's optimiser part, to the byte
    assert set(summary["measured"]["optimiser_bytes"].values()) == {est["optimiser"]}
    assert summary["measured"]["peak_what"]
    assert set(summary["histories"]) == {"online_ipo", "ipo_md"}
    assert all(len(h) == 2 for h in summary["histories"].values())

    # training moved the adapter away from its start (the last method's weights are loaded)
    now = dict(policy.model.named_parameters())
    assert any(not torch.equal(now[k], v) for k, v in initial.items())
    track.reset_adapter()
    assert all(torch.equal(now[k], v) for k, v in initial.items())

    # evaluation: CIs over prompts, an antisymmetric matrix, every sample written
    vs = summary["vs_reference"]["oracle"]
    assert set(vs) == {"IPO", "IPO-MD"} and all(0 <= v["mean"] <= 1 for v in vs.values())
    mat = np.array(summary["matrices"]["oracle"]["mean"])
    np.testing.assert_allclose(mat + mat.T, 1.0)
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"reference", "online_ipo", "ipo_md"} <= set(rows[0])
    per = summary["per_prompt_vs_reference"]["oracle"]["online_ipo"]
    assert [r["p_oracle_online_ipo_vs_reference"] for r in rows] == per
    assert np.mean(per) == pytest.approx(vs["IPO"]["mean"])
    assert json.loads((out / "summary.json").read_text())["settings"]["steps"] == 2
    assert "standard error over prompts" in (out / "matrix_oracle.md").read_text()


def test_a_tiny_track_preference_model_is_refused_as_a_real_judge(tiny_model_folder, tmp_path):
    from course_lib.preference import default_model_dir

    s = settings_for(tiny_model_folder, judge=str(default_model_dir("bt")))
    track = RealTrack(get_profile("smoke"), s, progress=False, log=lambda *_: None)
    track.load()
    with pytest.raises(ValueError, match="tiny-track preference model"):
        model_judge(s.judge, track.policy.tokenizer)


@pytest.mark.slow
def test_reproduce_real_track_smoke_on_smollm2_in_4bit(tmp_path, capsys):
    """The CI run of the real track: the embedded SmolLM2, NF4 on the CPU, LoRA, three methods."""
    from course_lib.__main__ import main

    out = tmp_path / "real"
    assert main(["reproduce", "--track", "real", "--profile", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "estimated memory of one step" in printed and "in 4-bit NF4" in printed
    assert "measured:" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["load_in_4bit"] and summary["settings"]["model"] == "embedded"
    assert set(summary["histories"]) == {"online_ipo", "ipo_md", "online_dpo"}
    losses = [h["loss"] for hist in summary["histories"].values() for h in hist]
    assert all(np.isfinite(losses))
    mat = np.array(summary["matrices"]["oracle"]["mean"])
    np.testing.assert_allclose(mat + mat.T, 1.0)
    # SmolLM2 in NF4: far below its 513 MiB in fp32 (benchmarks/RESULTS.md)
    assert summary["estimate"]["memory"]["base"] < 200 * 2**20


def test_a_preference_model_on_another_vocabulary_is_refused(tiny_model_folder, tmp_path):
    """A real-track judge must read the policy's tokens: a backbone model built on a tokenizer
    with another vocabulary is an error naming both sizes."""
    from transformers import AutoTokenizer

    from course_lib import preference as pf

    other = tmp_path / "other_backbone"
    save_tokenizer(build_tokenizer(["a b c d e f"]), other)
    tok = AutoTokenizer.from_pretrained(other)
    llm.tiny_llama(
        vocab_size=len(tok),
        hidden=64,
        layers=1,
        heads=4,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    ).save_pretrained(other)
    pm, _ = pf.backbone_preference_model(str(other), lora_r=2, max_len=16)
    pf.save_preference_model(pm, tmp_path / "pm")
    track = RealTrack(
        get_profile("smoke"),
        settings_for(tiny_model_folder, load_in_4bit=False),
        progress=False,
        log=lambda *_: None,
    )
    track.load()
    with pytest.raises(ValueError, match=rf"vocabulary of {len(tok)} tokens .* the policy \d+"):
        model_judge(str(tmp_path / "pm"), track.policy.tokenizer)
