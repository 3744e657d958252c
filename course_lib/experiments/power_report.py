"""The power analysis's report: components per T and design, predicted widths, the figure.

Reads the arrays of :mod:`course_lib.experiments.power` (p[i, j, n, k], A's seed i over B's
seed j on prompt n, draw k; q[s, n, k], a policy over pi_ref) and writes ``components.json``,
``halfwidth.csv`` and ``power.png``. Every prediction comes from :mod:`course_lib.power`:
the components of one completion's sampling noise and of what training and prompts fix, put
together for K' completions (``Split.at``).
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import numpy as np

from course_lib.atomic import atomic_open, atomic_write_json
from course_lib.power import (
    TERMS,
    ci_halfwidth,
    expected_pair_std,
    mean_interval,
    minimum_detectable_effect,
    split_components,
    variance_terms,
)

SEEDS_GRID = tuple(range(1, 11))
PROMPTS_GRID = (100, 200, 500, 1000, 2000)
TARGET = 0.02  # the half-width asked of a comparison that separates methods 0.5 from 0.54
FIGURE_SEEDS = (1, 2, 3, 4, 6, 10)
DESIGNS = ("paired", "unpaired")


def step_counts(arrays: dict) -> list[int]:
    return sorted({int(m.group(1)) for k in arrays if (m := re.match(r"p_paired_T(\d+)$", k))})


def shared_prompts(qa: np.ndarray, qb: np.ndarray) -> dict:
    """What evaluating both methods on the same prompts buys when they are compared through
    their win rates over pi_ref: the per-prompt variance of W_A - W_B with the same prompts,
    Var_n(qa_n - qb_n), against Var_n(qa_n) + Var_n(qb_n) with two disjoint prompt sets
    (qa_n: A's win rate over pi_ref on prompt n, averaged over seeds and draws)."""
    ma, mb = qa.mean(axis=(0, 2)), qb.mean(axis=(0, 2))
    same = float(np.var(ma - mb, ddof=1))
    disjoint = float(np.var(ma, ddof=1) + np.var(mb, ddof=1))
    return {
        "win_rate_vs_ref": {"a": float(qa.mean()), "b": float(qb.mean())},
        "per_prompt_variance_same_prompts": same,
        "per_prompt_variance_disjoint_prompts": disjoint,
        "variance_ratio_disjoint_over_same": disjoint / same if same > 0 else None,
    }


def analyse_one(pk: np.ndarray, qa: np.ndarray, qb: np.ndarray, point: dict) -> dict:
    """One (T, design): the split components and the predictions at the profile's point."""
    split = split_components(pk)
    K = split.completions
    S, N = point["seeds"], point["prompts"]
    at_k = split.at(K)
    terms = variance_terms(at_k, S, N)
    total = sum(terms.values())
    # the share more completions could remove: Var(K draws) - Var(infinitely many)
    removable = total - sum(variance_terms(split.fixed, S, N).values())
    fits = S >= 2 and S <= pk.shape[0] and N <= pk.shape[2]
    observed = pk[:S, :S, :N, 0].mean(axis=2).std(ddof=1) if fits else None
    at_point = {
        "seeds": S,
        "prompts": N,
        "variance_terms": terms,
        "dominant_term": max(terms, key=terms.get),
        "sampling_share_of_variance": min(1.0, max(0.0, removable / total)) if total else None,
    }
    for k in sorted({1, K}):
        at_point[f"completions_{k}"] = {
            "halfwidth": ci_halfwidth(split.at(k), S, N),
            "mde": minimum_detectable_effect(split.at(k), S, N),
        }
    return {
        "win_rate": split.total.mean,
        "components": split.as_dict(),
        "dominant_component": max(at_k, key=at_k.get),
        "at_profile_point": at_point,
        "std_over_seed_pairs": {
            "what": f"std of the {S}x{S} seed-pair win rates on {N} prompts, one completion "
            "(reproduce's std_runs)",
            "expected": expected_pair_std(split.at(1), S, N) if S >= 2 else None,
            "observed_in_this_run": None if observed is None else float(observed),
        },
        "shared_prompts": shared_prompts(qa, qb),
        "halfwidth_this_design": ci_halfwidth(at_k, pk.shape[0], pk.shape[2]),
        "interval_this_design": mean_interval(pk.mean(axis=3)),
    }


def smallest_design(split_at, target: float = TARGET) -> dict:
    """The fewest seeds, then the fewest prompts of the grid, whose half-width is <= target;
    and the seeds needed with unlimited prompts (sigma^2_prompt-free limit)."""
    hit = None
    for S in SEEDS_GRID:
        for N in PROMPTS_GRID:
            if ci_halfwidth(split_at, S, N) <= target:
                hit = {"seeds": S, "prompts": N, "halfwidth": ci_halfwidth(split_at, S, N)}
                break
        if hit:
            break
    seed_only = {
        t: (v if t in ("seed_A", "seed_B", "seed_A:seed_B") else 0.0) for t, v in split_at.items()
    }
    limit = next((S for S in range(1, 10_001) if ci_halfwidth(seed_only, S, 1) <= target), None)
    return {"within_grid": hit, "seeds_with_unlimited_prompts": limit}


def write_csv(out: Path, splits: dict, completions: int) -> None:
    """halfwidth.csv: predicted half-width and MDE for every (T, design, K', S, N)."""
    with atomic_open(out / "halfwidth.csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(["steps", "design", "completions", "seeds", "prompts", "halfwidth", "mde"])
        for (T, design), split in splits.items():
            for k in sorted({1, completions, 2 * completions}):
                comps = split.at(k)
                for S in SEEDS_GRID:
                    for N in PROMPTS_GRID:
                        hw = ci_halfwidth(comps, S, N)
                        mde = minimum_detectable_effect(comps, S, N)
                        w.writerow([T, design, k, S, N, f"{hw:.5f}", f"{mde:.5f}"])


def write_figure(out: Path, splits: dict, T: int, completions: int, point: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ns = np.geomspace(50, 5000, 60).astype(int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, design in zip(axes, DESIGNS, strict=True):
        comps = splits[(T, design)].at(completions)
        for S in FIGURE_SEEDS:
            ax.plot(ns, [ci_halfwidth(comps, S, int(n)) for n in ns], label=f"S = {S} seeds")
        hw = ci_halfwidth(comps, point["seeds"], point["prompts"])
        ax.plot([point["prompts"]], [hw], "ko")
        ax.annotate(
            f" reproduce's size ({point['seeds']}, {point['prompts']})", (point["prompts"], hw)
        )
        ax.axhline(TARGET, color="grey", ls="--", lw=1)
        ax.set_ylim(bottom=0)
        ax.set_xscale("log")
        ax.set_xlabel("held-out prompts N")
        ax.set_title(f"{design} sampling seeds, T = {T} steps, K = {completions}")
    axes[0].set_ylabel("predicted 95% CI half-width of P(A > B)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(out / "power.png", "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


def write(out: Path, arrays: dict, meta: dict) -> dict:
    """Analyse every (T, design), write components.json, halfwidth.csv, power.png; return the
    JSON's content (with ``headline``, what the command prints)."""
    start = time.perf_counter()
    point, K = meta["profile_point"], meta["settings"]["completions"]
    grid = step_counts(arrays)
    splits, per_step = {}, {}
    for T in grid:
        per_step[str(T)] = {}
        for design in DESIGNS:
            pk = arrays[f"p_{design}_T{T}"]
            qa, qb = arrays[f"q_{design}_T{T}_a"], arrays[f"q_{design}_T{T}_b"]
            splits[(T, design)] = split_components(pk)
            per_step[str(T)][design] = analyse_one(pk, qa, qb, point)
    last = grid[-1]
    at_profile = point["steps"] if point["steps"] in grid else last
    smallest = {str(T): {d: smallest_design(splits[(T, d)].at(K)) for d in DESIGNS} for T in grid}
    headline = {
        "steps": last,
        "completions": K,
        "smallest_design": smallest[str(last)],
        "smallest_design_by_steps": smallest,
        "at_profile_point": {
            "steps": at_profile,
            **{d: per_step[str(at_profile)][d]["at_profile_point"] for d in DESIGNS},
        },
    }
    write_csv(out, splits, K)
    write_figure(out, splits, last, K, point)
    seconds = dict(meta.get("seconds", {}))
    seconds["analysis"] = time.perf_counter() - start
    result = {
        **{k: v for k, v in meta.items() if k != "seconds"},
        "seconds": seconds,
        "terms": list(TERMS),
        "notes": NOTES,
        "headline": headline,
        "steps": per_step,
    }
    atomic_write_json(out / "components.json", result)
    return result


NOTES = [
    "p[i, j, n] is the oracle's P(y_A > y_B | x_n) averaged over K draws; components by the "
    "method of moments (course_lib.power), negative estimates clipped at 0 (listed in 'clipped').",
    "sampling_per_completion: the components of one draw's noise, from the differences between "
    "draws; fixed = total - sampling / K: what the trained policies and the prompts fix.",
    "Predictions for K' completions use total + sampling (1/K' - 1/K), clipped at 0; for N "
    "beyond the 500 test prompts they extrapolate the model (prompts a random sample).",
    "Half-width = 1.96 sqrt(Var of the mean), the components treated as known; the MDE is "
    "(z_0.975 + z_0.8) sqrt(Var) = 2.80 SE, a difference of the win rate from 1/2.",
]


def _fmt(components: dict) -> str:
    return ", ".join(f"{t} {v:.2e}" for t, v in components.items())


def _reach(small: dict) -> str:
    hit = small["within_grid"]
    where = (
        f"S = {hit['seeds']} seeds, N = {hit['prompts']} prompts"
        if hit
        else f"no (S <= {SEEDS_GRID[-1]}, N <= {PROMPTS_GRID[-1]})"
    )
    return f"{where}; with unlimited prompts S = {small['seeds_with_unlimited_prompts']}"


def _design_lines(one: dict, K: int) -> list[str]:
    comps, spread = one["components"], one["std_over_seed_pairs"]
    lines = [
        f"  components (K = {K}): {_fmt(comps['total']['variances'])}",
        f"  one draw's sampling noise: {_fmt(comps['sampling_per_completion'])}",
        f"  largest component: {one['dominant_component']}",
    ]
    if spread["expected"] is not None:
        seen = spread["observed_in_this_run"]
        lines.append(
            f"  std over seed pairs at reproduce's size, one completion: expected "
            f"{spread['expected']:.4f}" + (f", seen here {seen:.4f}" if seen is not None else "")
        )
    ratio = one["shared_prompts"]["variance_ratio_disjoint_over_same"]
    if ratio is not None:
        lines.append(
            "  through win rates over pi_ref, disjoint prompt sets would multiply the "
            f"per-prompt variance of W_A - W_B by {ratio:.1f}"
        )
    return lines


def summary_lines(result: dict) -> str:
    """What the command prints: the win rate at every T, components at the last T, the
    smallest design reaching the target, the widths and MDE at reproduce's size."""
    head, chosen = result["headline"], result["chosen"]
    T, K = head["steps"], head["completions"]
    names = " vs ".join(
        f"{c['method']} (tau {c['tau']:g}, beta {c['beta']:g})" for c in chosen.values()
    )
    lines = [f"{names}; K = {K} completions"]
    for design in DESIGNS:
        intervals = {t: d[design]["interval_this_design"] for t, d in result["steps"].items()}
        by_t = ", ".join(
            f"T {t}: {v['mean']:.3f} +- {v['halfwidth']:.3f}" for t, v in intervals.items()
        )
        lines.append(f"  {design}: A over B (t interval, Satterthwaite) {by_t}")
    for design in DESIGNS:
        lines.append(f"\n{design}, T = {T}:")
        lines += _design_lines(result["steps"][str(T)][design], K)
        lines.append(f"  half-width <= {TARGET}: {_reach(head['smallest_design'][design])}")
    at = head["at_profile_point"]
    lines.append(f"\nat reproduce's size, T = {at['steps']}:")
    for design in DESIGNS:
        p = at[design]
        widths = "; ".join(
            f"K = {k.split('_')[1]}: half-width {v['halfwidth']:.4f}, MDE {v['mde']:.4f}"
            for k, v in p.items()
            if k.startswith("completions_")
        )
        lines.append(
            f"  {design} ({p['seeds']} seeds, {p['prompts']} prompts): {widths}; largest "
            f"term {p['dominant_term']}, sampling {100 * p['sampling_share_of_variance']:.0f}%"
        )
        reach = head["smallest_design_by_steps"][str(at["steps"])][design]
        lines.append(f"    half-width <= {TARGET} at T = {at['steps']}: {_reach(reach)}")
    paired, unpaired = (at[d][f"completions_{K}"]["halfwidth"] for d in DESIGNS)
    if paired > 0:
        lines.append(f"  shared sampling seeds divide the half-width by {unpaired / paired:.2f}")
    return "\n".join(lines)
