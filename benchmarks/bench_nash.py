"""Time of course_lib.tabular.regularised_nash against the dense-Newton solver it replaced.

    python benchmarks/bench_nash.py                              # full run, writes RESULTS.md
    python benchmarks/bench_nash.py --sizes 1000 --taus 0.1 --no-write   # quick look

For each number of responses n, tau and beta, on a random game (``random_preference(n)``,
``pi_ref`` drawn from a flat Dirichlet, both seeded), it times in interleaved rounds:

* ``dense``  -- the solver before issue 16, kept below as ``dense_newton_nash``: the same
                validation of P as then, damped Newton on the log-space residual with the full
                n x n Jacobian J = I - (I - 1 s^T) c P (diag m - m m^T) assembled and solved by
                LU at every step, first for the beta = 0 game at tau / (1 - beta), then on the
                beta equation itself. It is the baseline;
* ``course`` -- course_lib.tabular.regularised_nash: the same Newton iterations, each system
                rewritten as identity minus an antisymmetric matrix and solved by conjugate
                gradients (dense LU below 200 responses or when CG is slow, at small tau).

Both answers are checked with the same residual ``max_y |pi(y) - T(pi)(y)|``,
``T(pi) ∝ pi_ref exp(P(. > mix)/tau)``, computed from the public functions, and against each
other. Times are medians over the rounds, in wall-clock seconds and in CPU seconds of this
process (on a machine shared with other jobs the wall clock also counts the time spent
waiting for a core). Results go into benchmarks/RESULTS.md, in a section between markers that
this script rewrites.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="100,300,1000", help="comma-separated numbers of responses"
    )
    parser.add_argument("--taus", default="1,0.1,0.01", help="comma-separated KL coefficients")
    parser.add_argument("--betas", default="0,0.5", help="comma-separated mixture weights < 1")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per setting")
    # one thread: on a shared 2-core machine a second BLAS thread mostly waits for a core
    parser.add_argument(
        "--threads", type=int, default=1, help="numpy's BLAS threads (set from the command line)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # BLAS reads its thread count when numpy is first imported, so this comes before the imports
    _threads = str(parse_args().threads)
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import numpy as np  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_sampling import load_average, machine, write_section  # noqa: E402

from course_lib.tabular import (  # noqa: E402
    best_response,
    geometric_mixture,
    random_preference,
    regularised_nash,
)
from course_lib.tabular.preferences import validate_distribution  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- bench_nash:start -->", "<!-- bench_nash:end -->"
GOAL_N, GOAL_TAU, GOAL_BETA, GOAL_S = 1000, 0.1, 0.0, 0.030  # issue 16: <= 30 ms at 1000


# ---- the baseline: the solver before issue 16 ------------------------------------------------
def _validate_preference_matrix_before(P):
    """The checks of P as they were: two index searches over n x n masks and two strided
    passes over P^T (the error messages are left out: the benchmark's P is valid)."""
    arr = np.asarray(P, dtype=float)
    if np.argwhere(~np.isfinite(arr)).size or np.argwhere((arr < 0) | (arr > 1)).size:
        raise ValueError("P is not a matrix of probabilities")
    if np.abs(arr + arr.T - 1.0).max() > 1e-6:
        raise ValueError("P + P^T != 1")
    return 0.5 * (arr + 1.0 - arr.T)


def _softmax_log(z):
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


def _dense_newton(P, log_ref, tau, beta, x, tol, max_steps=40):
    """Damped Newton on F(x) = x - T(x), T(x) = log softmax(log pi_ref + P m(x) / tau),
    m(x) = softmax((1 - beta) x + beta log pi_ref), with J = I - dT/dx dense and solved by LU."""

    def mix(x):
        return np.exp(_softmax_log((1.0 - beta) * x + beta * log_ref))

    def residual(x):
        return x - _softmax_log(log_ref + P @ mix(x) / tau)

    norm = np.abs(residual(x)).max()
    for _ in range(max_steps):
        if norm <= tol:
            return x
        m = mix(x)
        t = _softmax_log(log_ref + P @ m / tau)
        A = (P * m[None, :] - np.outer(P @ m, m)) * ((1.0 - beta) / tau)  # c P (diag m - m m^T)
        A = A - np.outer(np.ones_like(t), np.exp(t) @ A)  # (I - 1 s^T) c P (diag m - m m^T)
        dx = np.linalg.solve(np.eye(x.size) - A, -(x - t))
        for step in (1.0, 0.5, 0.25, 0.125, 0.0625):
            norm_new = np.abs(residual(x + step * dx)).max()
            if norm_new < norm:
                break
        else:
            break
        x, norm = _softmax_log(x + step * dx), norm_new
    if norm > tol:  # the old solver went on with extragradient; no game timed here needs it
        raise RuntimeError(f"dense Newton stalled at residual {norm:.3g}")
    return x


def dense_newton_nash(P, pi_ref, tau, beta=0.0, tol=1e-12):
    """regularised_nash as it was before issue 16, for beta < 1 and games where Newton from
    pi_ref converges (all of those timed here): the mixture solves the beta = 0 game at
    tau / (1 - beta) (Calandriello Prop. 5.2), pi is the best response to it, then Newton on the
    beta equation itself."""
    P = _validate_preference_matrix_before(P)
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    S = np.flatnonzero(pi_ref > 0)
    P_S, log_ref = P[np.ix_(S, S)], np.log(pi_ref[S])
    z = _dense_newton(P_S, log_ref, tau / (1.0 - beta), 0.0, log_ref.copy(), tol)
    x = _dense_newton(P_S, log_ref, tau, beta, _softmax_log(log_ref + P_S @ np.exp(z) / tau), tol)
    pi = np.zeros(P.shape[0])
    pi[S] = np.exp(x)
    return pi


# ---- the measurement ---------------------------------------------------------------------------
def residual(P, pi_ref, tau, beta, pi) -> float:
    """max_y |pi(y) - T(pi)(y)|, T(pi) ∝ pi_ref exp(P(. > mix)/tau), from the public functions."""
    return float(
        np.abs(pi - best_response(P, pi_ref, tau, geometric_mixture(pi, pi_ref, beta))).max()
    )


def clock(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench(n, tau, beta, repeats):
    P = random_preference(n, seed=n)
    pi_ref = np.random.default_rng(n).dirichlet(np.ones(n))
    solvers = {
        "dense": lambda: dense_newton_nash(P, pi_ref, tau, beta),
        "course": lambda: regularised_nash(P, pi_ref, tau, beta),
    }
    for fn in solvers.values():  # warm-up: first-call allocations and imports
        fn()
    wall = {k: [] for k in solvers}
    cpu = {k: [] for k in solvers}
    for _ in range(repeats):  # interleaved, so that load changes hit both alike
        for key, fn in solvers.items():
            pi, w, c = clock(fn)
            wall[key].append(w)
            cpu[key].append(c)
    pis = {key: fn() for key, fn in solvers.items()}
    row = dict(n=n, tau=tau, beta=beta, agree=float(np.abs(pis["dense"] - pis["course"]).max()))
    for key in solvers:
        row[key] = dict(
            wall=float(np.median(wall[key])),
            cpu=float(np.median(cpu[key])),
            residual=residual(P, pi_ref, tau, beta, pis[key]),
        )
    print(
        f"n={n:>5} tau={tau:<5} beta={beta:<4}: dense {row['dense']['wall'] * 1e3:8.1f} ms "
        f"(cpu {row['dense']['cpu'] * 1e3:7.1f}), course {row['course']['wall'] * 1e3:7.1f} ms "
        f"(cpu {row['course']['cpu'] * 1e3:6.1f}), residuals {row['dense']['residual']:.1e} / "
        f"{row['course']['residual']:.1e}, max |difference| {row['agree']:.1e}",
        flush=True,
    )
    return row


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def render(rows, args, repeats, before, after, threads) -> str:
    lines = [
        START,
        "## Regularised Nash solve (`bench_nash.py`)",
        "",
        f"Machine: {machine()}; numpy BLAS threads {threads}. Load average before / after the "
        f"run: {before} and {after} (on a busy machine wall-clock times include waiting for a "
        "core; CPU seconds of the process are then the steadier figure). The two solvers ran "
        "interleaved in rounds.",
        f"Command: `{' '.join(['python benchmarks/bench_nash.py', *args])}`",
        "",
        "Random game `random_preference(n, seed=n)`, `pi_ref` from a flat Dirichlet. `dense` is "
        "the solver before issue 16 (damped Newton, the full n x n Jacobian solved by LU at "
        "every step; kept in the script as the baseline); `course` is "
        "`course_lib.tabular.regularised_nash` (the same Newton iterations, each system "
        "rewritten as identity minus an antisymmetric matrix and solved by conjugate gradients; "
        "dense LU below 200 responses or once CG needs over n / 10 steps). Times are medians of "
        f"{repeats} interleaved rounds in milliseconds; residual is "
        "`max |pi - T(pi)|` of each answer, computed the same way for both; the last column is "
        "the largest difference between the two answers.",
        "",
        "| n | tau | beta | dense: wall ms (CPU ms) | course: wall ms (CPU ms) | speed-up, wall "
        "(CPU) | residual dense | residual course | max abs(difference) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        d, c = r["dense"], r["course"]
        lines.append(
            f"| {r['n']} | {r['tau']:g} | {r['beta']:g} | {ms(d['wall'])} ({ms(d['cpu'])}) | "
            f"{ms(c['wall'])} ({ms(c['cpu'])}) | {d['wall'] / c['wall']:.1f}x "
            f"({d['cpu'] / c['cpu']:.1f}x) | {d['residual']:.1e} | {c['residual']:.1e} | "
            f"{r['agree']:.1e} |"
        )
    goal = [r for r in rows if (r["n"], r["tau"], r["beta"]) == (GOAL_N, GOAL_TAU, GOAL_BETA)]
    if goal:
        d, c = goal[0]["dense"], goal[0]["course"]
        same = c["residual"] <= max(d["residual"], 1e-16)
        lines += [
            "",
            f"Goal (issue 16): at n = {GOAL_N}, tau = {GOAL_TAU:g}, beta = {GOAL_BETA:g}, at most "
            f"{GOAL_S * 1e3:.0f} ms with the same residual: {ms(c['wall'])} ms wall, "
            f"{ms(c['cpu'])} ms CPU (dense: {ms(d['wall'])} / {ms(d['cpu'])} ms), residual "
            f"{c['residual']:.1e} against {d['residual']:.1e} -> "
            + ("met" if c["cpu"] <= GOAL_S and same else "NOT met")
            + " on CPU time"
            + ("; met on wall time too." if c["wall"] <= GOAL_S and same else "; not on wall time.")
            + " (The same residual: no larger than the dense solver's, or both below 1e-16, the "
            "rounding level of probabilities that sum to 1.)",
        ]
    lines.append(END)
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    taus = [float(v) for v in args.taus.split(",")]
    betas = [float(v) for v in args.betas.split(",")]
    if any(not 0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"--betas must lie in [0, 1), got {betas}")
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    before = load_average()
    print(f"machine: {machine()}; BLAS threads {threads}; load average {before}", flush=True)
    rows = [bench(n, tau, beta, args.repeats) for n in sizes for tau in taus for beta in betas]
    cli = sys.argv[1:] if argv is None else list(argv)
    section = render(rows, cli, args.repeats, before, load_average(), threads)
    print(section)
    if not args.no_write:
        write_section(section, RESULTS, START, END)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
