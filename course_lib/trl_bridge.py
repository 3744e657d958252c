"""Where TRL's online trainers differ from the paper, as small exact computations (notebook 12).

TRL's code (versions 1.13.0-1.16, as read in TRL's source and described in
notes/trl.md §2-4) differs from Calandriello et al. (2024) in four places that this
module makes measurable:

* **hard labels** -- ``OnlineDPOTrainer`` keeps ``mask = first_half >= second_half``: the winner by
  reward, a thresholded label ``1[p > 1/2]``. In expectation online IPO then plays the game of the
  *majority preference* :func:`majority_preference`, not ``P`` (notes/paper.md §3.5, §6.11);
* **a reward model** -- Nash-MD scored pairs by ``sigmoid(r(y) - r(y'))``, a Bradley-Terry
  preference (notes/trl.md §2.2; notes/paper.md §6.12): :func:`bradley_terry_game`;
* **summed vs length-averaged log-ratios** in the IPO target ``1/(2 tau)`` (defect D3,
  notes/trl.md §4.3): :func:`ipo_margin`, :func:`logratio_at_ipo_target`;
* **the mixture sampler** -- one KV cache shared by the policy and reference passes (D1) and a
  "reference" that still has the LoRA adapter on (D2). :func:`sampler_distribution` computes the
  exact distribution each sampler draws from on an enumerated set of completions, by feeding the
  sampler's own streams the tokens of every completion (no sampling noise), and
  :func:`total_variation` compares them.
"""

from __future__ import annotations

import copy
import itertools
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch

from course_lib.llm import LoraSettings, apply_lora, tiny_llama
from course_lib.logprobs import position_ids_from_mask
from course_lib.sampling import LMStream, new_cache
from course_lib.tabular import fit_bradley_terry, regularised_nash
from course_lib.tabular.preferences import validate_preference_matrix

__all__ = [
    "SAMPLER_STREAMS",
    "bradley_terry_game",
    "enumerate_completions",
    "ipo_margin",
    "logratio_at_ipo_target",
    "majority_preference",
    "sampler_distribution",
    "tiny_peft_policy",
    "total_variation",
]


# --------------------------------------------------------------------------------------------
# (a) hard labels and (b) reward models: which game is being solved
# --------------------------------------------------------------------------------------------
def majority_preference(P) -> np.ndarray:
    """The preference that thresholded labels implement: ``M = 1[P > 1/2] + 1/2 1[P = 1/2]``.

    With a hard label ``1[p > 1/2]`` in place of the soft label ``p`` (notes/paper.md §3.5), every
    loss that is linear in the label sees ``M`` instead of ``P``; online IPO's fixed point is then
    ``regularised_nash(M, ...)`` instead of ``regularised_nash(P, ...)`` (Calandriello eq. 12).
    ``M`` is antisymmetric whenever ``P`` is.
    """
    P = validate_preference_matrix(P)
    return np.where(P > 0.5, 1.0, np.where(P < 0.5, 0.0, 0.5))


def bradley_terry_game(P, pi_ref, tau) -> dict:
    """What a Bradley-Terry reward model does to the game.

    Fits BT scores to ``P`` (maximum likelihood, :func:`course_lib.tabular.fit_bradley_terry`),
    then solves the regularised game of the fitted preference ``sigmoid(r_i - r_j)`` -- the
    preference TRL's Nash-MD trainer used (``P = sigmoid(r(y) - r(y'))``, notes/trl.md §2.2) -- and
    the one of ``P`` itself. Returns a dict with ``scores``, ``P_fit``, ``flipped_pairs``,
    ``nash_P`` and ``nash_bt`` (both from :func:`regularised_nash`, Calandriello eq. 12).
    """
    fit = fit_bradley_terry(P)
    return {
        "scores": fit.scores,
        "P_fit": fit.P_fit,
        "flipped_pairs": fit.flipped_pairs,
        "nash_P": regularised_nash(P, pi_ref, tau),
        "nash_bt": regularised_nash(fit.P_fit, pi_ref, tau),
    }


# --------------------------------------------------------------------------------------------
# (c) summed vs length-averaged log-ratios
# --------------------------------------------------------------------------------------------
def _lengths(*values):
    for v in values:
        if not (isinstance(v, numbers.Integral) and v >= 1):
            raise ValueError(f"sequence lengths must be positive integers, got {v!r}")


def ipo_margin(logratio_w, logratio_l, len_w: int, len_l: int, normalise: str = "sum"):
    """The margin that IPO regresses to ``1/(2 tau)``.

    ``logratio_*`` are summed log-ratios ``log pi(y|x) - log pi_ref(y|x)`` of the chosen (w) and
    rejected (l) completions. ``normalise="sum"``: ``h = l_w - l_l`` (the papers, and TRL's
    online-DPO IPO branch); ``"mean"``: ``l_w/|y_w| - l_l/|y_l|`` (TRL's offline ``DPOTrainer``
    with ``loss_type="ipo"``; notes/trl.md §2.4 and §4.3, defect D3).
    """
    _lengths(len_w, len_l)
    if normalise == "sum":
        return logratio_w - logratio_l
    if normalise == "mean":
        return logratio_w / len_w - logratio_l / len_l
    raise ValueError(f"normalise must be 'sum' or 'mean', got {normalise!r}")


def logratio_at_ipo_target(tau: float, len_w: int, len_l: int, normalise: str = "sum") -> float:
    """The summed log-ratio ``log pi(y_w)/pi_ref(y_w)`` the chosen completion must reach for the
    margin to hit the IPO target ``1/(2 tau)``, when the rejected completion is left at
    ``pi_ref`` (log-ratio 0). Sum: ``1/(2 tau)``, whatever the length. Mean: ``|y_w|/(2 tau)``,
    i.e. the sequence-level effective KL coefficient is ``tau/|y_w|``.

    Solved from :func:`ipo_margin` (linear in ``logratio_w``), not from the closed forms, so the
    test of the closed forms checks the margin too.
    """
    if not (isinstance(tau, numbers.Real) and tau > 0):
        raise ValueError(f"tau must be a number > 0, got {tau!r}")
    target = 1.0 / (2.0 * tau)
    slope = ipo_margin(1.0, 0.0, len_w, len_l, normalise) - ipo_margin(
        0.0, 0.0, len_w, len_l, normalise
    )
    return float(target / slope)


# --------------------------------------------------------------------------------------------
# (d) the mixture sampler: exact distributions of the correct and the two wrong samplers
# --------------------------------------------------------------------------------------------
def tiny_peft_policy(
    vocab_size: int = 5, eos_token_id: int = 4, adapter_steps: int = 25, seed: int = 3
):
    """A tiny random Llama with a LoRA adapter trained a few Adam steps towards random sequences,
    so that pi (adapter on) and pi_ref (adapter off) clearly differ. The same construction as
    ``tests/test_sampling.py``; ``init_std=0.6`` gives peaked next-token distributions."""
    base = tiny_llama(
        vocab_size=vocab_size,
        hidden=32,
        layers=1,
        heads=2,
        init_std=0.6,
        seed=seed,
        eos_token_id=eos_token_id,
    )
    policy = apply_lora(copy.deepcopy(base), LoraSettings(r=4, alpha=8))
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab_size - 1, (8, 6), generator=gen)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05)
    policy.train()
    for _ in range(adapter_steps):
        loss = policy(input_ids=data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


def correct_streams(policy) -> list[LMStream]:
    """pi with the adapter on and pi_ref with it off, each with its own KV cache (the course's
    :func:`course_lib.sampling.sample_mixture`)."""
    return [LMStream(policy, adapter=True), LMStream(policy, adapter=False)]


def shared_cache_streams(policy) -> list[LMStream]:
    """D1: both passes append to one KV cache object (TRL's ``GeometricMixtureWrapper`` with
    transformers >= 4.56, notes/trl.md §4.1)."""
    cache = new_cache(policy)
    return [
        LMStream(policy, adapter=True, cache=cache),
        LMStream(policy, adapter=False, cache=cache),
    ]


def adapter_on_streams(policy) -> list[LMStream]:
    """D2: the "reference" is the PEFT model with its adapter still on, i.e. pi itself
    (``get_base_model()`` in TRL's ``_generate_completions``, notes/trl.md §2.6, §4.2)."""
    return [LMStream(policy, adapter=True), LMStream(policy, adapter=True)]


SAMPLER_STREAMS: dict[str, Callable] = {
    "correct (two caches)": correct_streams,
    "D1 shared cache": shared_cache_streams,
    "D2 adapter-on reference": adapter_on_streams,
}


def enumerate_completions(vocab_size: int, eos_token_id: int, max_new_tokens: int) -> list:
    """Every completion a sampler with ``max_new_tokens`` can return: words then EOS, or
    ``max_new_tokens`` tokens with EOS at most at the end. Their probabilities sum to 1."""
    _lengths(vocab_size, max_new_tokens)
    if not 0 <= eos_token_id < vocab_size:
        raise ValueError(f"eos_token_id must be in 0..{vocab_size - 1}, got {eos_token_id!r}")
    words = [v for v in range(vocab_size) if v != eos_token_id]
    out = []
    for n in range(max_new_tokens):
        out += [(*w, eos_token_id) for w in itertools.product(words, repeat=n)]
    out += [
        (*w, v)
        for w in itertools.product(words, repeat=max_new_tokens - 1)
        for v in range(vocab_size)
        if v != eos_token_id
    ]
    return out


def sampler_distribution(
    streams: Sequence[LMStream],
    weights: Sequence[float],
    prompt: Sequence[int],
    completions: Sequence[Sequence[int]],
    temperature: float = 1.0,
) -> np.ndarray:
    """The probability the decode loop of :func:`course_lib.sampling.sample_from_streams` gives
    each completion, computed by running *the same streams* (fresh, with whatever cache they
    carry) on every completion at once, one token per step, as the sampler would have fed them:

        Pr(y) = prod_n softmax( sum_i w_i z_i(x, y_<n) / T )[y_n].

    So a wrong sampler (a shared cache, an adapter left on) is measured exactly, without sampling
    noise. All completions share one prompt (no padding); positions after a completion's EOS are
    fed but not counted. Returns an array aligned with ``completions``.
    """
    if len(streams) != len(weights) or not streams:
        raise ValueError(f"need one weight per stream, got {len(streams)} and {len(weights)}")
    if not completions or not prompt:
        raise ValueError("need a non-empty prompt and at least one completion")
    T = max(len(c) for c in completions)
    n = len(completions)
    toks = torch.zeros(n, T, dtype=torch.long)
    live = torch.zeros(n, T, dtype=torch.bool)
    for i, c in enumerate(completions):
        toks[i, : len(c)] = torch.tensor(c)
        live[i, : len(c)] = True
    inputs = torch.tensor([list(prompt)] * n)
    attention = torch.ones_like(inputs)
    positions = position_ids_from_mask(attention)
    logp = torch.zeros(n, dtype=torch.float64)
    models = {id(s.model): s.model for s in streams}.values()
    flags = [(m, m.training) for m in models]
    try:
        for m, _ in flags:
            m.eval()
        with torch.no_grad():
            for t in range(T):
                z = sum(
                    w * s(inputs, attention, positions)
                    for s, w in zip(streams, weights, strict=True)
                )
                lp = torch.log_softmax(z.double() / temperature, dim=-1)
                step = lp.gather(-1, toks[:, t : t + 1]).squeeze(-1)
                logp += torch.where(live[:, t], step, torch.zeros_like(step))
                inputs = toks[:, t : t + 1]
                positions = positions[:, -1:] + 1
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
    finally:
        for m, flag in flags:
            m.train(flag)
    return logp.exp().numpy()


def total_variation(p, q) -> float:
    """``TV(p, q) = 1/2 sum |p - q|`` for two probability vectors over the same outcomes."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"need two 1-D vectors of the same length, got {p.shape} and {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


# --------------------------------------------------------------------------------------------
# scaling out with `accelerate launch`
# --------------------------------------------------------------------------------------------
def effective_batch(processes: int, prompts_per_step: int, grad_accum: int = 1) -> int:
    """Prompts per optimiser step under data parallelism: every process draws its own
    ``prompts_per_step`` prompts per micro-batch (two completions each), ``grad_accum``
    micro-batches are accumulated, and the gradients are averaged across processes."""
    _lengths(processes, prompts_per_step, grad_accum)
    return processes * prompts_per_step * grad_accum


def launch_command(script: str, args: Sequence[str] = (), processes: int = 1, cpu: bool = False):
    """The ``accelerate launch`` command line (a list of strings) for ``processes`` processes.

    One process needs no launcher flags (plain ``python script`` works too). Several processes
    go through accelerate's torchrun launcher (``--multi_gpu``); on the CPU the script's
    ``Accelerator(cpu=True)`` then uses the gloo backend (as ``tests/test_online_ddp.py`` does).
    ``--mixed_precision``/``--dynamo_backend`` are given so that no saved accelerate config is
    consulted.
    """
    _lengths(processes)
    cmd = ["accelerate", "launch", "--num_processes", str(processes)]
    if processes > 1:
        cmd += ["--multi_gpu", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no" if cpu else "bf16", "--dynamo_backend", "no"]
    return [*cmd, str(script), *map(str, args)]


#: How run_launch marks its output folder (course_lib.atomic.MARKER).
RUN_LAUNCH_COMMAND = "course_lib.trl_bridge.run_launch"


def run_launch(script, out_dir, processes: int = 2, timeout: float = 600.0) -> dict:
    """Run ``script out_dir`` under ``accelerate launch`` with ``processes`` CPU processes (the
    2-process data-parallel worker of ``tests/ddp_worker.py``), then read what it wrote:
    ``rank{i}.safetensors`` (trainable weights after training) and ``batch{i}.safetensors``
    (the prompts rank i drew at step 0). Returns the seconds taken, the largest weight
    difference between rank 0 and every other rank, whether the LoRA B matrices moved, and
    whether the ranks drew different prompts.

    ``out_dir`` must be new, empty, or an earlier ``run_launch`` output folder
    (:func:`course_lib.atomic.claim_output_dir`, which creates and marks it): the worker writes its
    files there by name and would overwrite a user's ``rank0.safetensors``."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from safetensors.torch import load_file

    from course_lib.atomic import claim_output_dir

    _lengths(processes)
    script, out_dir = Path(script).resolve(), Path(out_dir)
    if not script.is_file():
        raise FileNotFoundError(f"script {script}: no such file (the worker to launch)")
    claim_output_dir(out_dir, RUN_LAUNCH_COMMAND)  # checked first; refused if not ours
    cmd = launch_command(script, [out_dir], processes, cpu=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_CONFIG_FILE": "/dev/null"}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"accelerate launch failed ({out.returncode}):\n{out.stderr[-3000:]}")
    weights = [load_file(str(out_dir / f"rank{i}.safetensors")) for i in range(processes)]
    batches = [load_file(str(out_dir / f"batch{i}.safetensors"))["ids"] for i in range(processes)]
    diff = max(float((w[n] - weights[0][n]).abs().max()) for w in weights[1:] for n in weights[0])
    return {
        "processes": processes,
        "seconds": seconds,
        "max_weight_difference": diff,
        "lora_B_moved": any(
            float(t.abs().sum()) > 0 for n, t in weights[0].items() if "lora_B" in n
        ),
        "ranks_drew_different_prompts": all(not torch.equal(b, batches[0]) for b in batches[1:]),
    }
