"""Trained real-track adapters, judged: ``python -m course_lib evaluate``.

``reproduce --track real`` trains and judges in one go, at the profile's sizes. A long run is
different: each method is trained on its own, for as long as it takes and in resumable chunks
(``python -m course_lib train --track real ... --resume``, driven by ``tools/real_trained.sh``),
and judged afterwards. This module does the judging:

1. copy each run's LoRA adapter into ``OUT/adapters/<method>/`` as safetensors (in bfloat16 by
   default: half the bytes of float32), with the run's ``run.json``, ``metrics.jsonl`` and
   ``timing.jsonl`` into ``OUT/runs/<method>/``;
2. load SmolLM2 in 4-bit NF4 with a LoRA adapter of the runs' shape, read each committed adapter
   back from ``OUT/adapters`` (so what is judged is exactly what is committed) and draw one
   completion per held-out test prompt; pi_ref (the adapter off) draws one too. Every policy
   draws from the same seed, so the comparisons are paired (the same uniforms for each policy);
3. judge every policy against pi_ref and every pair of methods, with 95% confidence intervals
   over prompts (:func:`course_lib.evaluation.compare`), by the task's oracle and by the tiny
   track's learned preference model (which reads any text with its own word-level tokenizer:
   on SmolLM2's wording it is far from the data it was trained on, which is the lesson);
4. write ``summary.json`` (the format of ``results/real-cpu/summary.json``: ``vs_reference``,
   ``matrices``, ``eval_prompts``, plus each run's settings and history), ``samples.jsonl`` and a
   ``README.md`` that reads the figures out of the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from course_lib import validation as check
from course_lib.atomic import atomic_open, atomic_write_json, atomic_write_text, claim_output_dir
from course_lib.config import opt

COMMAND = "python -m course_lib evaluate"
RUN_FILES = ("run.json", "metrics.jsonl", "timing.jsonl")
EVAL_SEED = 20_000  # the seed reproduce --track real draws its held-out samples from


@dataclass(frozen=True)
class EvaluateSettings:
    """Which trained runs to judge, and on how many held-out prompts."""

    runs: tuple[str, ...] = opt((), "run folders of `train --track real`, each with adapter/")
    eval_prompts: int = opt(128, "held-out test prompts (the test split has 500)")
    seed: int = opt(EVAL_SEED, "seed of the held-out samples (the same for every policy)")
    batch_size: int = opt(16, "prompts sampled at once")
    adapter_dtype: str = opt("bfloat16", "how the copied adapters are stored: bfloat16, float32")

    def validate(self) -> None:
        from course_lib.llm.adapters import DTYPES

        if not self.runs:
            raise ValueError("runs=() is invalid: give at least one run folder (--runs A,B)")
        check.integer("eval_prompts", self.eval_prompts, minimum=2, maximum=500)
        check.integer("seed", self.seed, minimum=0)
        check.integer("batch_size", self.batch_size)
        check.choice("adapter_dtype", self.adapter_dtype, DTYPES)


def read_runs(folders) -> dict[str, dict]:
    """``{algorithm: run.json}`` of each run folder, checked: real track, trained, one run per
    algorithm, and the same model, completion length and oracle mode for all."""
    runs: dict[str, dict] = {}
    for folder in map(Path, folders):
        run_file = folder / "run.json"
        if not run_file.is_file():
            raise FileNotFoundError(f"{run_file} is missing: is {folder} a `train` run folder?")
        record = json.loads(run_file.read_text())
        s = record["settings"]
        if s.get("track") != "real":
            raise ValueError(f"{folder} is a {s.get('track')!r} track run; evaluate needs real")
        if not (folder / "adapter" / "adapter_model.safetensors").is_file():
            raise ValueError(f"{folder} holds no trained adapter yet: finish its training first")
        if s["algorithm"] in runs:
            raise ValueError(f"two runs of {s['algorithm']}: give one folder per algorithm")
        runs[s["algorithm"]] = {**record, "folder": str(folder)}
    for key in ("model", "new_tokens", "mode"):
        values = {r["settings"][key] for r in runs.values()}
        if len(values) > 1:
            raise ValueError(
                f"the runs differ in {key} ({sorted(map(str, values))}): judge them apart"
            )
    return runs


def lora_of(folder: Path):
    """The :class:`~course_lib.llm.LoraSettings` an adapter folder was saved with."""
    from course_lib.llm import LoraSettings

    saved = json.loads((folder / "adapter_config.json").read_text())
    return LoraSettings(
        r=int(saved["r"]),
        alpha=float(saved["lora_alpha"]),
        target_modules=tuple(sorted(saved["target_modules"])),
    )


def evaluate(settings: EvaluateSettings, out: str | Path, log=print) -> dict:
    """Copy, load, sample and judge the runs of ``settings`` into ``out`` (see the module)."""
    import torch

    from course_lib.evaluation import compare
    from course_lib.experiments.real import RealSettings, chat_prompt, device_name
    from course_lib.llm import load_policy
    from course_lib.online.algorithms import label
    from course_lib.tasks import load_split

    settings.validate()
    runs = read_runs(settings.runs)
    out = claim_output_dir(Path(out), COMMAND)
    start = time.perf_counter()
    first = next(iter(runs.values()))["settings"]
    lora = lora_of(Path(runs[next(iter(runs))]["folder"]) / "adapter")
    torch.manual_seed(0)  # LoRA's A at random before the files overwrite it
    policy = load_policy(first["model"], load_in_4bit=RealSettings.load_in_4bit, lora=lora)
    copy_runs(policy.model, runs, out, settings.adapter_dtype)

    records = load_split("test")[: settings.eval_prompts]
    prompts = [chat_prompt(policy.tokenizer, r.post, r.title) for r in records]
    ref_texts, texts, seconds = draw_all(policy, prompts, list(runs), out, settings, first, log)
    samples = {m: [texts[m]] for m in runs}
    labels = {m: label(m) for m in runs}
    result = compare(judges_for(first["mode"]), records, samples, ref_texts, labels, "stderr")
    summary = {
        "track": "real",
        "command": COMMAND,
        "settings": {**asdict(settings), "runs": [shown_path(r) for r in settings.runs]},
        "runs": {
            m: {
                "settings": {**r["settings"], "model": shown_model(r["settings"]["model"])},
                "profile": r.get("profile"),
                "folder": f"runs/{m}",
            }
            for m, r in runs.items()
        },
        "device": device_name(policy.device),
        "lora": {"r": lora.r, "alpha": lora.alpha, "targets": list(lora.target_modules)},
        "adapter_bytes": {
            m: (out / "adapters" / m / "adapter_model.safetensors").stat().st_size for m in runs
        },
        "train_seconds": {m: _train_seconds(out / "runs" / m) for m in runs},
        "sample_seconds": seconds,
        "seconds_total": time.perf_counter() - start,
        "histories": {m: _history(out / "runs" / m) for m in runs},
        **result,
        "eval_prompts": len(records),
        "new_tokens": first["new_tokens"],
    }
    atomic_write_json(out / "summary.json", summary, default=str)
    write_samples(out / "samples.jsonl", records, ref_texts, texts, result)
    atomic_write_text(out / "README.md", report(summary))
    return summary


def copy_runs(model, runs: dict[str, dict], out: Path, dtype: str) -> None:
    """Each run's adapter into ``out/adapters/<method>`` (through ``model``, so that peft's names
    and config are the ones written) and its logs into ``out/runs/<method>``."""
    from course_lib.llm.adapters import load_adapter, save_adapter

    for method, record in runs.items():
        folder = Path(record["folder"])
        load_adapter(model, folder / "adapter")
        save_adapter(
            model, out / "adapters" / method, dtype, base_name(record["settings"]["model"])
        )
        for name in RUN_FILES:
            if (folder / name).is_file():
                dest = out / "runs" / method / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(dest, (folder / name).read_text())


def draw_all(policy, prompts, methods, out: Path, settings, run_settings: dict, log):
    """One completion per prompt from pi_ref (the adapter off) and from each committed adapter
    (read back from ``out/adapters``), all from the same seed. Returns (pi_ref's texts,
    {method: texts}, {policy: seconds})."""
    from course_lib.llm.adapters import load_adapter
    from course_lib.online.algorithms import label
    from course_lib.sampling import sample_texts

    def draw(adapter: bool) -> tuple[list[str], float]:
        t = time.perf_counter()
        texts = sample_texts(
            policy.model,
            policy.tokenizer,
            prompts,
            run_settings["new_tokens"],
            settings.seed,
            settings.batch_size,
            adapter=adapter,
            add_special_tokens=True,
        )
        return texts, time.perf_counter() - t

    ref_texts, ref_seconds = draw(adapter=False)
    seconds, texts = {"pi_ref": ref_seconds}, {}
    for method in methods:
        load_adapter(policy.model, out / "adapters" / method)
        texts[method], seconds[method] = draw(adapter=True)
        log(f"{label(method)}: {len(prompts)} held-out completions in {seconds[method]:.0f} s")
    return ref_texts, texts, seconds


def base_name(model: str) -> str:
    """The base model as a reader elsewhere can find it: the hub id of the embedded default, a
    hub id as given, or only the last part of a local folder (never this machine's path)."""
    from course_lib.llm import EMBEDDED_NAME

    return EMBEDDED_NAME if model == "embedded" else shown_model(model)


def shown_model(model: str) -> str:
    """``model`` as given ('embedded', a hub id), or only the last part of a local folder."""
    return Path(model).name if Path(model).exists() else model


def shown_path(folder: str | Path) -> str:
    """A run folder as the summary shows it: relative to the working folder when inside it."""
    path = Path(folder).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def judges_for(mode: str) -> dict:
    """The oracle, and the tiny track's learned model reading text with its own tokenizer."""
    from course_lib.judges import OracleJudge, learned_judge
    from course_lib.tasks.tiny_policy import load_tiny_policy

    _, tiny_tok = load_tiny_policy()
    return {"oracle": OracleJudge(mode), "learned": learned_judge(mode, tiny_tok)}


def write_samples(path: Path, records, ref_texts, texts: dict, result: dict) -> None:
    """Every held-out prompt with each policy's completion and the judges' preferences."""
    with atomic_open(path) as f:
        for i, record in enumerate(records):
            row = {"title": record.title, "post": record.post, "reference": ref_texts[i]}
            for m in texts:
                row[m] = texts[m][i]
                for judge_name, per in result["per_prompt_vs_reference"].items():
                    row[f"p_{judge_name}_{m}_vs_reference"] = per[m][i]
            f.write(json.dumps(row) + "\n")


def _history(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _train_seconds(folder: Path) -> float | None:
    """The training's compute time: the sum of its steps' times (chunks and restarts excluded)."""
    path = folder / "timing.jsonl"
    if not path.is_file():
        return None
    return sum(json.loads(line)["seconds"] for line in path.read_text().splitlines())


def report(summary: dict) -> str:
    """The README of an evaluation folder: every figure read from ``summary``."""
    from course_lib.experiments.real import RealSettings
    from course_lib.online.algorithms import label

    runs = summary["runs"]
    s0 = next(iter(runs.values()))["settings"]
    lines = [
        "# Trained real-track adapters, judged",
        "",
        f"{', '.join(label(m) for m in runs)} on SmolLM2-135M-Instruct in 4-bit NF4 with LoRA "
        f"(r = {summary['lora']['r']}, alpha = {summary['lora']['alpha']:g}), each from the "
        f"same initial adapter: {s0['steps']} steps of {s0['prompts_per_step']} prompts, two "
        f"completions of up to {s0['new_tokens']} tokens each, tau = {s0['tau']}, beta = "
        f"{s0['beta']} (IPO-MD), lr = {s0['lr'] or RealSettings.lr:g}, labels from the oracle "
        f"({s0['mode']} mode); each method draws from its own seed (seed {s0['seed']} plus the "
        "method's offset). Written by `bash tools/real_trained.sh` (README, 'The real track "
        "trained for real'), which runs `python -m course_lib train` per method and then "
        f"`{COMMAND}`; device: {summary['device']}.",
        "",
        f"Win rate against pi_ref on {summary['eval_prompts']} held-out test prompts (one "
        "completion per prompt and policy, the same seed for every policy; 95% CI over prompts):",
        "",
        "| method | judge | win rate | 95% CI | training (s) | adapter (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for judge, vs in summary["vs_reference"].items():
        for m in runs:
            wr = vs[label(m)]
            secs = summary["train_seconds"].get(m)
            lines.append(
                f"| {label(m)} | {judge} | {wr['mean']:.3f} | [{wr['low']:.3f}, {wr['high']:.3f}] "
                f"| {'' if secs is None else f'{secs:.0f}'} "
                f"| {summary['adapter_bytes'][m] / 1e6:.1f} |"
            )
    for judge, mat in summary["matrices"].items():
        lines += [
            "",
            f"Between methods, judged by the {judge} (row over column; standard error "
            "over prompts in brackets):",
            "",
            mat["markdown"],
        ]
    lines += [
        "",
        "`adapters/<method>/` holds each adapter (safetensors) and `runs/<method>/` its run's "
        "settings, per-step metrics and step times; `samples.jsonl` every held-out prompt with "
        "each policy's completion and the judges' preferences. Notebook 11 loads the adapters.",
        "",
    ]
    return "\n".join(lines)
