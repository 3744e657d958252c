"""The arena's experiment: every algorithm, both modes, several seeds, measured exactly.

:func:`run_arena` writes, into a folder it claims for ``python -m course_lib arena``
(:mod:`course_lib.atomic`: every file atomic, a folder of someone else's files refused):

* ``summary.json`` -- per mode (``bt``, ``nt``): ``algorithms.<name>.kl_to_target``,
  ``.kl_to_nash``, ``.exploitability``, ``.kl_to_ref`` (lists, one value per seed, at the last
  step), the destination's residual and method, and ``token_vs_sequence_mixture`` (per tau and
  beta, the KL between IPO-MD's token-level and sequence-level destinations, averaged over the
  prompts);
* ``curves.csv`` -- the exact metrics of every run at every evaluated step;
* ``token_vs_sequence.csv`` -- the same KLs per prompt;
* ``curves_<mode>.png`` and ``token_vs_sequence.png``.

Sizes come from :data:`ARENA_PROFILES` (``smoke``, ``cpu``, ``gpu``).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from course_lib.arena.language import Language
from course_lib.arena.policy import PolicySpec
from course_lib.arena.preference import MODES
from course_lib.arena.targets import token_vs_sequence
from course_lib.arena.train import ARENA_ALGORITHMS, build_arena, train
from course_lib.atomic import atomic_open, atomic_write_json, check_output_dir, claim_output_dir
from course_lib.tabular import kl

COMMAND = "python -m course_lib arena"
CURVE_FIELDS = (
    "mode",
    "algorithm",
    "seed",
    "step",
    "seconds",
    "kl_to_target",
    "kl_to_nash",
    "kl_to_ref",
    "exploitability",
    "regularised_exploitability",
    "kl_to_sequence_target",
)


@dataclass(frozen=True)
class ArenaProfile:
    """How big an arena experiment is (one profile per machine class)."""

    seeds: tuple[int, ...]
    steps: int
    prompts_per_step: int
    lr: float
    eval_every: int
    tau: float = 0.25
    beta: float = 0.25  # mixture weight on pi_ref of ipo_md and nash_md_pg
    label: str = "soft"
    mixture_taus: tuple[float, ...] = (0.1, 0.25, 1.0)
    mixture_betas: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
    arena_seed: int = 0  # pi_ref's weights and teacher


#: Sizes per profile (to move into course_lib.config). ``cpu`` runs in about 12 minutes on a
#: 2-core laptop (measured: see the module's report); ``smoke`` in well under a minute.
ARENA_PROFILES: dict[str, ArenaProfile] = {
    "smoke": ArenaProfile(
        seeds=(0,),
        steps=30,
        prompts_per_step=16,
        lr=2e-3,
        eval_every=15,
        tau=0.5,
        mixture_taus=(0.5,),
        mixture_betas=(0.0, 0.5, 1.0),
    ),
    "cpu": ArenaProfile(seeds=(0, 1, 2), steps=600, prompts_per_step=64, lr=2e-3, eval_every=50),
    "gpu": ArenaProfile(
        seeds=(0, 1, 2, 3, 4),
        steps=4000,
        prompts_per_step=64,
        lr=1e-3,
        eval_every=100,
        tau=0.1,
    ),
}


def arena_profile(name: str) -> ArenaProfile:
    if name not in ARENA_PROFILES:
        raise ValueError(f"profile={name!r} is invalid: one of {', '.join(ARENA_PROFILES)}")
    return ARENA_PROFILES[name]


def _check_choices(name: str, values, allowed) -> tuple:
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(
            f"{name}={list(values)!r} is invalid: a non-empty list from {', '.join(allowed)}"
        )
    return values


def run_arena(
    profile_name: str,
    out_dir: str | Path,
    seeds=None,
    modes=MODES,
    algorithms=ARENA_ALGORITHMS,
    language: Language | None = None,
    spec: PolicySpec | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Run the arena at the sizes of ``profile_name`` and write its files into ``out_dir``.

    ``seeds`` (default the profile's) are the training seeds; pi_ref is the same for all (the
    profile's ``arena_seed``). ``overrides`` replace profile fields (``steps=``, ``tau=``, ...).
    Returns the summary written to ``summary.json``.
    """
    profile = arena_profile(profile_name)
    try:
        profile = replace(profile, **overrides)
    except TypeError as exc:
        raise ValueError(
            f"{exc}; the fields are {', '.join(ArenaProfile.__annotations__)}"
        ) from None
    if seeds is not None:
        profile = replace(profile, seeds=tuple(int(s) for s in seeds))
    modes = _check_choices("modes", modes, MODES)
    algorithms = _check_choices("algorithms", algorithms, ARENA_ALGORITHMS)
    language = language or Language()
    spec = spec or PolicySpec()
    out = check_output_dir(out_dir, COMMAND)
    start = time.perf_counter()
    summary: dict = {
        "profile": profile_name,
        "settings": {**asdict(profile), "language": asdict(language), "policy": asdict(spec)},
    }
    curves: list[dict] = []
    mixture_rows: list[dict] = []
    for mode in modes:
        arena = build_arena(mode, language, spec, profile.arena_seed)
        block: dict = {"pi_ref": _describe_reference(arena), "algorithms": {}}
        t0 = time.perf_counter()
        per_prompt = _token_vs_sequence_rows(arena, language, profile, mode)
        mixture_rows += per_prompt
        block["token_vs_sequence_mixture"] = _mean_over_prompts(per_prompt)
        block["token_vs_sequence_seconds"] = time.perf_counter() - t0
        for algorithm in algorithms:
            block["algorithms"][algorithm], rows = _run_algorithm(
                arena, algorithm, profile, mode, progress
            )
            curves += rows
        summary[mode] = block
        claim_output_dir(out, COMMAND)
        _write(out, summary, curves, mixture_rows)
    summary["seconds"] = time.perf_counter() - start
    claim_output_dir(out, COMMAND)
    _write(out, summary, curves, mixture_rows)
    _figures(out, summary, curves, modes)
    return summary


def _token_vs_sequence_rows(arena, language: Language, profile: ArenaProfile, mode: str):
    """KL between IPO-MD's token- and sequence-level destinations, per prompt, tau and beta."""
    rows = []
    for i in range(language.n_prompts):
        for row in token_vs_sequence(
            arena.P[i], arena.pi_ref[i], language.tree, profile.mixture_taus, profile.mixture_betas
        ):
            rows.append({"mode": mode, "prompt": i, **row})
    return rows


FINAL_METRICS = (
    "kl_to_target",
    "kl_to_nash",
    "exploitability",
    "kl_to_ref",
    "regularised_exploitability",
)


def _run_algorithm(arena, algorithm: str, profile: ArenaProfile, mode: str, progress: bool):
    """Train ``algorithm`` once per seed; its summary block and its curve rows."""
    runs, rows = [], []
    for seed in profile.seeds:
        run = train(
            arena,
            algorithm,
            profile.tau,
            beta=profile.beta,
            label=profile.label,
            steps=profile.steps,
            lr=profile.lr,
            prompts_per_step=profile.prompts_per_step,
            eval_every=profile.eval_every,
            seed=seed,
        )
        runs.append(run)
        rows += [{"mode": mode, "algorithm": algorithm, "seed": seed, **r} for r in run.curve]
        if progress:
            f = run.final
            print(
                f"[arena {mode}] {algorithm:11s} seed {seed}: KL to target "
                f"{f['kl_to_target']:.4f}, to pi*_tau {f['kl_to_nash']:.4f}, "
                f"exploitability {f['exploitability']:.4f} ({run.seconds:.0f} s)",
                flush=True,
            )
    beta = runs[0].config["beta"]
    target, residuals = arena.target(algorithm, profile.tau, beta, profile.label)
    nash = arena.nash(profile.tau)
    block = {key: [r.final[key] for r in runs] for key in FINAL_METRICS}
    if "kl_to_sequence_target" in runs[0].final:
        block["kl_to_sequence_target"] = [r.final["kl_to_sequence_target"] for r in runs]
    block.update(
        seeds=list(profile.seeds),
        seconds=[r.seconds for r in runs],
        beta=beta,
        target_residual=max(residuals),
        # SLiC's self-play stationary points are a set: its reported point is not certified
        target_exact=algorithm != "online_slic",
        target_kl_to_nash=float(np.mean([kl(nash[i], t) for i, t in enumerate(target)])),
        target_kl_to_ref=float(np.mean([kl(t, arena.pi_ref[i]) for i, t in enumerate(target)])),
    )
    return block, rows


def _describe_reference(arena) -> dict:
    n = arena.pi_ref.shape[1]
    uniform = np.full(n, 1.0 / n)
    return {
        "kl_to_uniform": [kl(p, uniform) for p in arena.pi_ref],
        "min": float(arena.pi_ref.min()),
        "max": float(arena.pi_ref.max()),
    }


def _mean_over_prompts(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["tau"], r["beta"]) for r in rows})
    for tau, beta in keys:
        sel = [r for r in rows if r["tau"] == tau and r["beta"] == beta]
        out.append(
            {
                "tau": tau,
                "beta": beta,
                "kl_token_sequence": float(np.mean([r["kl_token_sequence"] for r in sel])),
                "kl_sequence_token": float(np.mean([r["kl_sequence_token"] for r in sel])),
                "max_residual": float(
                    max(max(r["residual_token"], r["residual_sequence"]) for r in sel)
                ),
            }
        )
    return out


def _write_csv(path: Path, rows: list[dict], fields) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write(out: Path, summary: dict, curves: list[dict], mixture_rows: list[dict]) -> None:
    _write_csv(out / "curves.csv", curves, CURVE_FIELDS)
    if mixture_rows:
        _write_csv(out / "token_vs_sequence.csv", mixture_rows, list(mixture_rows[0]))
    atomic_write_json(out / "summary.json", json.loads(json.dumps(summary, default=float)))


def _figures(out: Path, summary: dict, curves: list[dict], modes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for mode in modes:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for algorithm in summary[mode]["algorithms"]:
            rows = [r for r in curves if r["mode"] == mode and r["algorithm"] == algorithm]
            steps = sorted({r["step"] for r in rows})
            for ax, key in zip(axes, ("kl_to_target", "kl_to_nash", "exploitability"), strict=True):
                mean = [np.mean([r[key] for r in rows if r["step"] == s]) for s in steps]
                ax.plot(steps, mean, label=algorithm)
        for ax, key in zip(axes, ("kl_to_target", "kl_to_nash", "exploitability"), strict=True):
            ax.set_xlabel("step")
            ax.set_title(f"{mode}: {key} (mean over seeds)")
            if key != "exploitability":
                ax.set_yscale("log")
        axes[0].axhline(0.01, color="grey", ls=":", lw=1)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        with atomic_open(out / f"curves_{mode}.png", "wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        rows = summary[mode]["token_vs_sequence_mixture"]
        for tau in sorted({r["tau"] for r in rows}):
            # beta = 0 and 1 are exactly 0 (both mixtures are pi, resp. pi_ref): off a log scale
            sel = [r for r in rows if r["tau"] == tau and 0.0 < r["beta"] < 1.0]
            ax.plot(
                [r["beta"] for r in sel],
                [r["kl_token_sequence"] for r in sel],
                "o-",
                label=f"tau = {tau:g}",
            )
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("beta (0 at beta = 0 and 1)")
        ax.set_ylabel("KL(token-level || sequence-level)")
        ax.set_title(f"{mode}: IPO-MD's two destinations")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(out / "token_vs_sequence.png", "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
