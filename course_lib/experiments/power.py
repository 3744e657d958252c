"""How many seeds and prompts separate two methods: ``python -m course_lib power``.

The tiny track's comparison (``reproduce``: 3 seeds, 200 test prompts) reports win rates between
methods with a spread over seed pairs of about 0.04 and separates no pair. This command measures
where that spread comes from and what a decisive comparison would cost. It trains two methods
(default: online IPO and IPO-MD at the tau and beta ``reproduce`` selected, read from
``results/tiny-cpu/summary.json``) for S seeds each, from seeds ``method_seed(s, method)``,
labelled by the learned preference model as in ``reproduce`` (``--train-judge oracle`` for the
oracle). Along the way, at each step count T of ``--steps``, every policy draws K completions on
each of the N test prompts, twice:

* paired: every policy (and pi_ref) draws its k-th completion from one shared seed, so that two
  policies that agree on a prompt tend to write the same text (common random numbers);
* unpaired: every policy draws from seeds of its own.

The oracle judges every seed pair of A against B on every prompt, p[i, j, n, k], and every
policy against pi_ref. :mod:`course_lib.power` estimates the variance components of p per T and
design and predicts the 95% CI half-width and the minimum detectable effect for other numbers
of seeds, prompts and completions.

``--out`` (default ``results/power-<profile>``) receives ``p.npz`` (the judged probabilities,
float32, no pickles), ``components.json`` (per T and design; the time each part took),
``halfwidth.csv`` and ``power.png``. ``--reanalyse`` recomputes the last three from ``p.npz``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from course_lib import paths
from course_lib import validation as check
from course_lib.atomic import atomic_open, check_output_dir, claim_output_dir
from course_lib.config import Profile, opt
from course_lib.experiments import power_report as report
from course_lib.online.algorithms import ALGORITHMS, method_seed, online_algorithms

COMMAND = "python -m course_lib power"
SUMMARY = __doc__.split("\n\n")[0]
DESIGNS = ("paired", "unpaired")
ROLES = ("a", "b")
#: Prompts per sampling call. Each chunk is seeded on its own so that, in the paired design, a
#: prompt's random numbers do not depend on how long the completions of earlier chunks ran.
CHUNK = 100
MAX_COMPLETIONS = 10  # the unpaired seeds leave room for 10 draws per policy


@dataclass(frozen=True)
class PowerSettings:
    """What the power analysis trains and how it evaluates; None takes a default."""

    method_a: str = opt("online_ipo", "method A (any online algorithm)")
    method_b: str = opt("ipo_md", "method B (any online algorithm)")
    tau_a: float | None = opt(None, "tau of A (default: the one --selected chose)")
    beta_a: float | None = opt(None, "beta of A (default: the one --selected chose)")
    tau_b: float | None = opt(None, "tau of B (default: the one --selected chose)")
    beta_b: float | None = opt(None, "beta of B (default: the one --selected chose)")
    selected: str = opt(
        "results/tiny-cpu/summary.json",
        "a reproduce summary.json whose selected tau and beta are the defaults (relative to "
        "the repository)",
    )
    seeds: int = opt(4, "training seeds per method (>= 2)")
    steps: str = opt("8,16,32,64", "training steps at which the policies are evaluated")
    prompts: int = opt(500, "held-out test prompts (>= 2, at most the split's 500)")
    completions: int = opt(2, f"completions per prompt, policy and design (2 to {MAX_COMPLETIONS})")
    mode: str = opt("bt", "the oracle's mode: bt or nt")
    train_judge: str = opt("learned", "who labels training pairs: learned or oracle")
    prompts_per_step: int | None = opt(None, "prompts per training step (default: the profile's)")
    new_tokens: int | None = opt(None, "completion length (default: the profile's)")

    def step_grid(self) -> tuple[int, ...]:
        """The step counts of ``steps``, ascending: positive integers, distinct."""
        try:
            grid = tuple(int(part) for part in self.steps.split(",") if part.strip())
        except ValueError:
            grid = ()
        if not grid or min(grid) < 1 or len(set(grid)) != len(grid):
            raise ValueError(
                f"steps={self.steps!r} is invalid: a comma list of distinct positive integers, "
                "e.g. 8,16,32,64"
            )
        return tuple(sorted(grid))

    def validate(self) -> None:
        for name in ("method_a", "method_b"):
            check.choice(name, getattr(self, name), online_algorithms())
        if self.method_a == self.method_b:
            raise ValueError(f"method_a and method_b are both {self.method_a!r}: name two methods")
        for name in ("tau_a", "tau_b"):
            if getattr(self, name) is not None:
                check.tau(getattr(self, name), name)
        for name in ("beta_a", "beta_b"):
            if getattr(self, name) is not None:
                check.beta(getattr(self, name), name)
        check.integer("seeds", self.seeds, minimum=2)
        check.integer("prompts", self.prompts, minimum=2)
        check.integer("completions", self.completions, minimum=2, maximum=MAX_COMPLETIONS)
        check.choice("mode", self.mode, ("bt", "nt"))
        check.choice("train_judge", self.train_judge, ("learned", "oracle"))
        for name in ("prompts_per_step", "new_tokens"):
            if getattr(self, name) is not None:
                check.integer(name, getattr(self, name))
        self.step_grid()

    def methods(self) -> dict[str, str]:
        return {"a": self.method_a, "b": self.method_b}

    def resolve(self) -> dict[str, dict]:
        """Each role's method, tau and beta: the options given, else the selection read from
        ``selected`` (in the mode it was selected in). Fails naming what is missing."""
        self.validate()
        out = {}
        summary = None
        for role, method in self.methods().items():
            tau, beta = getattr(self, f"tau_{role}"), getattr(self, f"beta_{role}")
            uses_beta = ALGORITHMS[method].uses_beta
            if tau is None or (beta is None and uses_beta):
                summary = summary if summary is not None else read_selected(self.selected)
                chosen = summary.get(method)
                if chosen is None:
                    raise ValueError(
                        f"{self.selected} holds no selection for {method!r} (it has "
                        f"{', '.join(summary) or 'none'}); give --tau-{role} and --beta-{role}"
                    )
                tau = chosen["tau"] if tau is None else tau
                beta = chosen["beta"] if beta is None else beta
            out[role] = {"method": method, "tau": float(tau), "beta": float(beta or 0.0)}
            if not uses_beta and out[role]["beta"]:
                raise ValueError(f"beta_{role}={beta!r} is invalid: {method} samples from pi only")
        return out


def read_selected(path: str) -> dict[str, dict]:
    """``{method: {"tau", "beta"}}`` from a reproduce summary.json (the first mode's selection,
    where the sweep ran). A relative path is read from the repository."""
    file = Path(path)
    if not file.is_absolute() and not file.is_file():
        file = paths.repo_root() / file
    summary = json.loads(file.read_text(encoding="utf-8"))
    try:
        first = next(iter(summary["modes"].values()))
        return dict(first["selected"])
    except (KeyError, StopIteration, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a reproduce summary.json (no modes/selected)") from exc


def sampling_seed(design: str, k: int, method: str | None = None, seed: int | None = None) -> int:
    """The seed of the k-th draw: shared by every policy in the paired design; in the unpaired
    one, distinct per (method, training seed) through ``method_seed``; pi_ref's (method None)
    distinct from all of them."""
    if design == "paired":
        return 50_000 + k
    if method is None:
        return 55_000 + k
    return 60_000 + MAX_COMPLETIONS * method_seed(seed, method) + k


def sample_chunked(model, tokenizer, prompts, new_tokens: int, seed: int) -> list[str]:
    """One completion per prompt, each chunk of :data:`CHUNK` prompts from seed 1000 seed + c."""
    from course_lib.sampling import sample_texts

    out: list[str] = []
    for c, start in enumerate(range(0, len(prompts), CHUNK)):
        chunk = prompts[start : start + CHUNK]
        out += sample_texts(model, tokenizer, chunk, new_tokens, 1000 * seed + c, batch_size=CHUNK)
    return out


class PowerRun:
    """Train, sample, judge; the arrays go to :mod:`course_lib.experiments.power_report`."""

    def __init__(self, settings: PowerSettings, profile: Profile, progress: bool = True):
        from course_lib.tasks import load_split
        from course_lib.tasks.tiny_policy import load_tiny_policy, prompt_text

        settings.validate()
        self.settings, self.profile, self.progress = settings, profile, progress
        self.chosen = settings.resolve()
        test = load_split("test")
        if settings.prompts > len(test):
            raise ValueError(
                f"prompts={settings.prompts} is invalid: the test split has {len(test)} prompts"
            )
        self.records = test[: settings.prompts]
        self.train_records = load_split("train")
        self.prompt = prompt_text
        self._load = load_tiny_policy
        _, self.tokenizer = load_tiny_policy()
        self.new_tokens = settings.new_tokens or profile.tiny_new_tokens
        self.seconds = {"training": 0.0, "sampling": 0.0, "judging": 0.0}

    def log(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    def _sample(self, model, design: str, method=None, seed=None) -> list[list[str]]:
        prompts = [self.prompt(r.post) for r in self.records]
        start = time.perf_counter()
        out = [
            sample_chunked(
                model,
                self.tokenizer,
                prompts,
                self.new_tokens,
                sampling_seed(design, k, method, seed),
            )
            for k in range(self.settings.completions)
        ]
        self.seconds["sampling"] += time.perf_counter() - start
        return out

    def _trainer(self, role: str, seed: int):
        from course_lib.judges import OracleJudge, learned_judge
        from course_lib.online import OnlineConfig, OnlineTrainer

        s, c = self.settings, self.chosen[role]
        policy, _ = self._load()
        ref, _ = self._load()
        policy.train().requires_grad_(True)
        config = OnlineConfig(
            algorithm=c["method"],
            tau=c["tau"],
            beta=c["beta"],
            steps=max(s.step_grid()),
            prompts_per_step=s.prompts_per_step or self.profile.prompts_per_step,
            lr=ALGORITHMS[c["method"]].lr,
            max_new_tokens=self.new_tokens,
            seed=method_seed(seed, c["method"]),
            monitor_every=0,
            progress=False,
        )
        if s.train_judge == "oracle":
            judge = OracleJudge(s.mode)
        else:
            judge = learned_judge(s.mode, self.tokenizer)
        prompts = [self.prompt(r.post) for r in self.train_records]
        return OnlineTrainer(
            config, policy, self.tokenizer, judge, prompts, self.train_records, ref_model=ref
        )

    def train_and_sample(self) -> tuple[dict, dict]:
        """samples[(design, T, role, seed)] and run records; the reference's under (design,)."""
        grid = self.settings.step_grid()
        samples: dict = {}
        ref, _ = self._load()
        for design in DESIGNS:
            samples[(design,)] = self._sample(ref, design)
        del ref
        runs = []
        for role, method in self.settings.methods().items():
            for seed in range(self.settings.seeds):
                trainer = self._trainer(role, seed)
                trained = 0.0
                for T in grid:
                    start = time.perf_counter()
                    trainer.train(steps=T)
                    trained += time.perf_counter() - start
                    policy = trainer.policy.eval()
                    for design in DESIGNS:
                        samples[(design, T, role, seed)] = self._sample(
                            policy, design, method, seed
                        )
                self.seconds["training"] += trained
                runs.append({"role": role, "method": method, "seed": seed, "seconds": trained})
                self.log(
                    f"{method} seed {seed}: trained {max(grid)} steps in {trained:.0f} s "
                    f"(sampling so far {self.seconds['sampling']:.0f} s)"
                )
                del trainer
        return samples, {"runs": runs}

    def judge(self, samples: dict) -> dict[str, np.ndarray]:
        """p_<design>_T<T>[i, j, n, k] (A's seed i over B's seed j) and
        q_<design>_T<T>_<role>[seed, n, k] (the role over pi_ref), judged by the oracle."""
        from course_lib.judges import OracleJudge

        oracle = OracleJudge(self.settings.mode)
        S, K = self.settings.seeds, self.settings.completions
        start = time.perf_counter()
        arrays = {}
        for design in DESIGNS:
            ref = samples[(design,)]
            for T in self.settings.step_grid():
                a = [samples[(design, T, "a", i)] for i in range(S)]
                b = [samples[(design, T, "b", j)] for j in range(S)]
                p = np.stack(
                    [
                        np.stack(
                            [
                                np.stack(
                                    [oracle(self.records, a[i][k], b[j][k]) for k in range(K)], -1
                                )
                                for j in range(S)
                            ]
                        )
                        for i in range(S)
                    ]
                )
                arrays[f"p_{design}_T{T}"] = p.astype(np.float32)
                for role, runs in (("a", a), ("b", b)):
                    q = np.stack(
                        [
                            np.stack([oracle(self.records, r[k], ref[k]) for k in range(K)], -1)
                            for r in runs
                        ]
                    )
                    arrays[f"q_{design}_T{T}_{role}"] = q.astype(np.float32)
        self.seconds["judging"] += time.perf_counter() - start
        return arrays

    def meta(self, extra: dict) -> dict:
        return {
            "settings": asdict(self.settings),
            "chosen": self.chosen,
            "profile": self.profile.name,
            "profile_point": {
                "seeds": len(self.profile.seeds),
                "prompts": self.profile.eval_prompts,
                "steps": self.profile.train_steps,
            },
            "prompts_per_step": self.settings.prompts_per_step or self.profile.prompts_per_step,
            "new_tokens": self.new_tokens,
            "seconds": dict(self.seconds),
            **extra,
        }


def save_arrays(out: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """p.npz: the arrays and the run's description as a JSON string (loads without pickle)."""
    with atomic_open(out / "p.npz", "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    return out / "p.npz"


def load_arrays(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and description :func:`save_arrays` wrote."""
    file = Path(out) / "p.npz"
    if not file.is_file():
        raise FileNotFoundError(f"--reanalyse needs {file}, written by an earlier run")
    with np.load(file, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    return arrays, meta


def run(
    settings: PowerSettings, profile: Profile, out: Path, progress: bool = True, reanalyse=False
) -> dict:
    """Train, sample, judge (unless ``reanalyse``), then write the analysis into ``out``."""
    out = Path(out)
    check_output_dir(out, COMMAND)
    if reanalyse:
        arrays, meta = load_arrays(out)
        meta["reanalysed"] = True  # the report is newer than the run; the timings are the run's
    else:
        start = time.perf_counter()
        experiment = PowerRun(settings, profile, progress)
        samples, extra = experiment.train_and_sample()
        arrays = experiment.judge(samples)
        meta = experiment.meta(extra)
        meta["seconds"]["train_sample_judge"] = time.perf_counter() - start
        claim_output_dir(out, COMMAND)
        save_arrays(out, arrays, meta)
    return report.write(out, {k: v.astype(float) for k, v in arrays.items()}, meta)


def summary_lines(result: dict) -> str:
    """The lines ``python -m course_lib power`` prints (:func:`.power_report.summary_lines`)."""
    return report.summary_lines(result)
