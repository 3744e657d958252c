"""Learned preference models for the summarisation task: pairwise, and Bradley-Terry beside it.

The paper labels online samples with a *pairwise* preference model p_phi(y > y'|x) that reads the
prompt and both summaries (Calandriello et al. 2024, §6; NLHF §7), not a scalar reward. A learned
pairwise model is not antisymmetric by construction (paper-notes, trap 4), so it is symmetrised:

    d(x, y, y') = (f(x, y, y') - f(x, y', y)) / 2,      P_phi(y > y'|x) = sigmoid(d)

which makes P_phi(y > y') + P_phi(y' > y) = 1 (exactly in floating point: see :func:`sym_sigmoid`)
and P_phi(y > y) = 1/2. The Bradley-Terry reward model scores each summary alone, r_phi(x, y),
and sets P = sigmoid(r(x, y) - r(x, y')): it cannot express a preference cycle, which the
non-transitive oracle has.

On the tiny track both are small transformer encoders over the task's word-level tokenizer,
trained on pairs whose labels were drawn from the oracle (as a human rater would label).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course_lib.atomic import atomic_dir


def sym_sigmoid(d: torch.Tensor) -> torch.Tensor:
    """sigmoid(d), computed so that sym_sigmoid(d) + sym_sigmoid(-d) == 1 exactly.

    For d >= 0, s = sigmoid(d) lies in [1/2, 1], so 1 - s is exact (Sterbenz) and s + (1 - s)
    rounds to 1; for d < 0 the value is defined as 1 - sym_sigmoid(-d).
    """
    s = torch.sigmoid(d.abs())
    return torch.where(d >= 0, s, 1.0 - s)


@dataclass
class PMConfig:
    """Size of the encoder. ``kind`` is "pairwise" (reads x, y, y') or "bt" (reads x, y)."""

    kind: str = "pairwise"
    vocab_size: int = 0
    pad_id: int = 0
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    max_len: int = 192
    dropout: float = 0.1
    # real track: a pretrained causal LM as the encoder ("embedded", a folder or a hub id), with
    # LoRA of rank lora_r, optionally in 4-bit; d_model is then the backbone's hidden size
    backbone: str | None = None
    lora_r: int = 8
    load_in_4bit: bool = False
    separator: str = "\n\nTL;DR: "  # text between post and summary for a backbone

    def validate(self) -> None:
        if self.kind not in ("pairwise", "bt"):
            raise ValueError(f"kind={self.kind!r} is invalid: choose 'pairwise' or 'bt'")
        for name in ("vocab_size", "d_model", "layers", "heads", "max_len"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of heads={self.heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r} is invalid: must be in [0, 1)")


class _Encoder(nn.Module):
    """u(x, y): token + position + segment embeddings (0: the post, 1: the summary), a
    transformer encoder over the post and the summary together, masked mean pooling."""

    def __init__(self, cfg: PMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.seg = nn.Embedding(2, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.heads, 4 * cfg.d_model, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, ids, segments, mask):
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.tok(ids) + self.pos(positions) + self.seg(segments)
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask.bool()))
        return (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


class _BackboneEncoder(nn.Module):
    """u(x, y) from a pretrained causal LM with LoRA: the last layer's hidden state at the last
    token of ``post + separator + summary`` (a causal model has read everything there)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids, segments, mask):
        from course_lib.models import position_ids_from_mask

        out = self.lm(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
        last = mask.sum(1) - 1  # rows are right-padded
        return out.hidden_states[-1][torch.arange(ids.shape[0], device=ids.device), last].float()


class PreferenceModel(nn.Module):
    """P_phi(y > y'|x) from token ids of the post x and the summaries y, y' (lists of ints).

    Both kinds encode each (x, y) once into u(x, y). The Bradley-Terry kind scores it alone,
    r = w . u; the pairwise kind compares the two encodings with a small network
    f(x, y, y') = g([u, u', u * u', u - u']), which can order three summaries in a cycle, and
    is then symmetrised (module docstring). Encoding each summary with the post, rather than
    the post with both summaries in one sequence, halves the tokens per pair and lets one pass
    serve both orders.
    """

    def __init__(self, cfg: PMConfig, lm=None, sep_ids: Sequence[int] = ()):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.sep_ids = list(sep_ids)
        if cfg.backbone is None:
            self.net = _Encoder(cfg)
        else:
            if lm is None:
                raise ValueError(
                    "a backbone preference model needs its language model: use "
                    "backbone_preference_model() or load_preference_model()"
                )
            self.net = _BackboneEncoder(lm)
        d = cfg.d_model
        if cfg.kind == "bt":
            self.head = nn.Linear(d, 1)
        else:
            self.head = nn.Sequential(nn.Linear(4 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, 1))

    def _pack(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]):
        """(post, summary) rows with segment ids 0 and 1; the post is cut on the left so the
        summary always fits; right-padded."""
        budget = self.cfg.max_len
        rows, segs = [], []
        for x, y in pairs:
            y = (self.sep_ids + list(y))[: budget - 1]
            keep = budget - len(y)
            x = list(x)[-keep:] if keep > 0 else []
            rows.append(x + y)
            segs.append([0] * len(x) + [1] * len(y))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.cfg.pad_id, dtype=torch.long)
        seg_t = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, sg) in enumerate(zip(rows, segs, strict=True)):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            seg_t[i, : len(sg)] = torch.tensor(sg, dtype=torch.long)
            mask[i, : len(r)] = 1
        device = next(self.parameters()).device
        return ids.to(device), seg_t.to(device), mask.to(device)

    def score_difference(self, x, y, y2) -> torch.Tensor:
        """d with P = sigmoid(d); exactly antisymmetric: d(x, y, y') = -d(x, y', y)."""
        n = len(x)
        u = self.net(*self._pack(list(zip(x + x, y + y2, strict=True))))
        a, b = u[:n], u[n:]
        if self.cfg.kind == "bt":
            r = self.head(u).squeeze(-1)
            return r[:n] - r[n:]
        f_ab = self.head(torch.cat([a, b, a * b, a - b], -1)).squeeze(-1)
        f_ba = self.head(torch.cat([b, a, b * a, b - a], -1)).squeeze(-1)
        return (f_ab - f_ba) / 2

    def forward(self, x, y, y2) -> torch.Tensor:
        return sym_sigmoid(self.score_difference(list(x), list(y), list(y2)))


# ---------------------------------------------------------------------------------------------
# text in, probabilities out
# ---------------------------------------------------------------------------------------------


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _post_of(context) -> str:
    """The text the preference model reads as x: a record's post, or a string prompt."""
    return context if isinstance(context, str) else context.post


class PreferenceJudge:
    """A trained model as a judge for :mod:`course_lib.online` and :mod:`course_lib.evaluation`:
    ``judge(contexts, ys, y2s) -> P_phi(y > y')`` as a numpy array. It reads text with its own
    tokenizer, so it can judge any policy's decoded completions."""

    reads_policy_tokens = False

    def __init__(self, model: PreferenceModel, tokenizer, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts)

    @torch.no_grad()
    def __call__(self, contexts, ys, y2s) -> np.ndarray:
        if not (len(contexts) == len(ys) == len(y2s)):
            raise ValueError(
                f"need one context per pair: {len(contexts)} contexts, {len(ys)} y, {len(y2s)} y'"
            )
        out = []
        for s in range(0, len(ys), self.batch_size):
            sl = slice(s, s + self.batch_size)
            x = self.encode([_post_of(c) for c in contexts[sl]])
            out.append(self.model(x, self.encode(ys[sl]), self.encode(y2s[sl])).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


@dataclass
class Example:
    x: list[int]
    y: list[int]
    y2: list[int]
    label: float  # 1 when y was preferred (a rater's label, or a probability)
    p_oracle: float  # the oracle's P*(y > y'), for reports only


def examples_from_pairs(
    pairs, records, tokenizer, mode: str = "bt", target: str = "label"
) -> list[Example]:
    """Tokenised examples from :class:`~course_lib.tasks.PreferencePair` objects.

    ``mode`` picks the oracle ("bt" or "nt"); ``target`` trains on the sampled rater ``label``
    (the realistic case) or on the oracle's probability ``p`` (a cleaner teacher).
    """
    if mode not in ("bt", "nt"):
        raise ValueError(f"mode={mode!r} is invalid: choose 'bt' or 'nt'")
    if target not in ("label", "p"):
        raise ValueError(f"target={target!r} is invalid: choose 'label' or 'p'")
    by_id = {r.id: r for r in records}
    out = []
    for pair in pairs:
        if pair.record_id not in by_id:
            raise ValueError(f"pair {pair.id} points to record {pair.record_id!r}, not given")
        x, y, y2 = encode_texts(tokenizer, [by_id[pair.record_id].post, pair.y, pair.y_prime])
        p = getattr(pair, f"p_{mode}")
        label = float(getattr(pair, f"label_{mode}")) if target == "label" else p
        out.append(Example(x, y, y2, label, p))
    return out


def _bce(model: PreferenceModel, batch: Sequence[Example]) -> torch.Tensor:
    """Cross-entropy of the symmetrised probability against the label, both orders at once
    (the symmetrisation makes the two orders' losses equal, so one order suffices)."""
    d = model.score_difference([e.x for e in batch], [e.y for e in batch], [e.y2 for e in batch])
    label = torch.tensor([e.label for e in batch], dtype=d.dtype, device=d.device)
    return nn.functional.binary_cross_entropy_with_logits(d, label)


@torch.no_grad()
def mean_loss(model: PreferenceModel, examples: Sequence[Example], batch_size: int = 128) -> float:
    model.eval()
    total = 0.0
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        total += _bce(model, chunk).item() * len(chunk)
    return total / max(len(examples), 1)


@dataclass
class TrainReport:
    epochs_run: int
    best_epoch: int
    train_loss: list[float]
    valid_loss: list[float]
    stopped_early: bool


def train_preference_model(
    model: PreferenceModel,
    train: Sequence[Example],
    valid: Sequence[Example],
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-3,
    patience: int = 2,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainReport:
    """Adam on the cross-entropy, early stopping on the validation loss (the best weights are
    kept and restored), a checkpoint of the best model in ``out_dir`` if given."""
    from tqdm.auto import tqdm

    if not train or not valid:
        raise ValueError(
            f"need training and validation examples, got {len(train)} and {len(valid)}"
        )
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs={epochs!r} is invalid: must be a positive integer")
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, best_epoch, bad_epochs = math.inf, None, 0, 0
    train_curve, valid_curve = [], []
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        running, seen = 0.0, 0
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}", disable=not progress)
        for s in bar:
            batch = [train[i] for i in order[s : s + batch_size]]
            loss = _bce(model, batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            running += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        train_curve.append(running / seen)
        valid_curve.append(mean_loss(model, valid))
        if valid_curve[-1] < best - 1e-4:
            best, best_epoch, bad_epochs = valid_curve[-1], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    if out_dir is not None:
        save_preference_model(model, out_dir)
    return TrainReport(epoch, best_epoch, train_curve, valid_curve, epoch < epochs)


def backbone_preference_model(
    source: str = "embedded",
    kind: str = "pairwise",
    lora_r: int = 8,
    load_in_4bit: bool = False,
    max_len: int = 256,
    dropout: float = 0.0,
):
    """The real track's preference model: a pretrained causal LM (SmolLM2 by default) with a LoRA
    adapter as the encoder, the same heads and symmetrisation as the tiny one. Returns
    ``(model, tokenizer)``; train it with :func:`train_preference_model` on examples encoded with
    this tokenizer. Meant for a GPU; it runs on the CPU at smoke sizes."""
    from course_lib.models import LoraSettings, load_policy

    policy = load_policy(source, load_in_4bit=load_in_4bit, lora=LoraSettings(r=lora_r))
    tok, lm = policy.tokenizer, policy.model
    hidden = lm.config.hidden_size
    heads = lm.config.num_attention_heads
    cfg = PMConfig(
        kind=kind,
        vocab_size=len(tok),
        pad_id=tok.pad_token_id,
        d_model=hidden,
        heads=heads,
        max_len=max_len,
        dropout=dropout,
        backbone=source,
        lora_r=lora_r,
        load_in_4bit=load_in_4bit,
    )
    sep = tok(cfg.separator, add_special_tokens=False)["input_ids"]
    model = PreferenceModel(cfg, lm=lm, sep_ids=sep)
    model.head.to(next(lm.parameters()).device)
    return model, tok


def save_preference_model(model: PreferenceModel, folder: str | Path) -> Path:
    """``config.json`` + ``model.safetensors``, written to a temporary folder and renamed.

    A backbone model saves only what training changed (the LoRA adapter and the heads); its
    backbone is reloaded from ``cfg.backbone``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        (tmp / "config.json").write_text(json.dumps(asdict(model.cfg), indent=1) + "\n")
        if model.cfg.backbone is None:
            items = model.state_dict().items()
        else:
            items = ((k, v) for k, v in model.named_parameters() if v.requires_grad)
        state = {k: v.detach().cpu().contiguous() for k, v in items}
        save_file(state, str(tmp / "model.safetensors"))
    return folder


def default_model_dir(mode: str = "bt") -> Path:
    """``data/preference_model_<mode>``: the committed models of the tiny track."""
    from course_lib.tasks.summarisation import default_data_dir

    if mode not in ("bt", "nt"):
        raise ValueError(f"mode={mode!r} is invalid: choose 'bt' or 'nt'")
    return default_data_dir() / f"preference_model_{mode}"


def load_preference_model(folder: str | Path) -> PreferenceModel:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no preference model in {folder} (config.json missing)")
    cfg = PMConfig(**json.loads((folder / "config.json").read_text()))
    state = load_file(str(folder / "model.safetensors"))
    if cfg.backbone is None:
        model = PreferenceModel(cfg)
        model.load_state_dict(state)
        return model.eval()
    model, _ = backbone_preference_model(
        cfg.backbone, cfg.kind, cfg.lora_r, cfg.load_in_4bit, cfg.max_len, cfg.dropout
    )
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    if set(state) != trainable:
        raise ValueError(
            f"{folder} does not match a {cfg.backbone!r} backbone with LoRA r="
            f"{cfg.lora_r}: {sorted(set(state) ^ trainable)[:5]}"
        )
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: PreferenceModel, examples: Sequence[Example], batch_size: int = 128):
    model.eval()
    out = [
        model(
            [e.x for e in examples[s : s + batch_size]],
            [e.y for e in examples[s : s + batch_size]],
            [e.y2 for e in examples[s : s + batch_size]],
        )
        .cpu()
        .numpy()
        for s in range(0, len(examples), batch_size)
    ]
    return np.concatenate(out)


def agreement(p_model, p_oracle) -> float:
    """Share of pairs on which the model prefers the summary the oracle prefers (pairs where the
    oracle is indifferent, P* = 1/2, are left out)."""
    p_model, p_oracle = np.asarray(p_model), np.asarray(p_oracle)
    decided = p_oracle != 0.5
    return float(np.mean((p_model[decided] > 0.5) == (p_oracle[decided] > 0.5)))


def bayes_label_agreement(p_oracle) -> float:
    """The best agreement any model can reach with labels *sampled* from the oracle:
    E[max(P*, 1 - P*)], reached by predicting the oracle's preferred side (the labels' noise)."""
    p = np.asarray(p_oracle)
    return float(np.mean(np.maximum(p, 1 - p)))


@dataclass
class Calibration:
    bin_edges: np.ndarray
    mean_predicted: np.ndarray  # per bin; NaN for empty bins
    observed: np.ndarray  # per bin: mean of the outcome (a 0/1 label or the oracle's P*)
    counts: np.ndarray
    ece: float  # expected calibration error: sum_b n_b/N |observed_b - predicted_b|


def calibration(p_model, outcome, n_bins: int = 10) -> Calibration:
    """Reliability diagram data and expected calibration error (Guo et al. 2017) of predicted
    probabilities against outcomes (sampled labels, or the oracle's probabilities)."""
    p, o = np.asarray(p_model, float), np.asarray(outcome, float)
    if p.shape != o.shape or p.ndim != 1 or not len(p):
        raise ValueError(f"need two equal 1-D arrays, got shapes {p.shape} and {o.shape}")
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    mean_p = np.full(n_bins, np.nan)
    observed = np.full(n_bins, np.nan)
    for b in range(n_bins):
        if counts[b]:
            mean_p[b] = p[which == b].mean()
            observed[b] = o[which == b].mean()
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(p) * np.abs(observed[filled] - mean_p[filled])))
    return Calibration(edges, mean_p, observed, counts, ece)


def confidently_wrong(p_model, p_oracle, confidence: float = 0.9) -> float:
    """Share of pairs where the model is at least ``confidence`` sure of the side the oracle
    does not prefer: the door to preference hacking when such pairs are what a policy learns to
    produce."""
    p_model, p_oracle = np.asarray(p_model), np.asarray(p_oracle)
    wrong_hi = (p_model >= confidence) & (p_oracle < 0.5)
    wrong_lo = (p_model <= 1 - confidence) & (p_oracle > 0.5)
    return float(np.mean(wrong_hi | wrong_lo))


# ---------------------------------------------------------------------------------------------
# command line: train the committed models
# ---------------------------------------------------------------------------------------------


def train_for_task(
    mode: str = "bt",
    kind: str = "pairwise",
    n_train: int | None = None,
    epochs: int = 3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
    backbone: str | None = None,
    load_in_4bit: bool = False,
    lr: float = 1e-3,
    batch_size: int = 32,
) -> tuple[PreferenceModel, dict]:
    """Train a preference model on the synthetic task's pairs (labels sampled from the oracle in
    ``mode``), early-stopped on the validation pairs; report agreement and calibration on the
    test pairs. Returns the model and the report (also written beside the weights).

    ``backbone`` ("embedded", a folder or a hub id) trains the real track's model, a LoRA on a
    pretrained LM (:func:`backbone_preference_model`), instead of the tiny transformer.
    """
    from course_lib.tasks import load_pairs, load_split, load_tokenizer

    torch.manual_seed(seed)
    if backbone is not None:
        model, tokenizer = backbone_preference_model(backbone, kind, load_in_4bit=load_in_4bit)
    else:
        tokenizer = load_tokenizer()
        model = PreferenceModel(
            PMConfig(kind=kind, vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id)
        )
    train = examples_from_pairs(
        load_pairs("train")[:n_train], load_split("pretrain"), tokenizer, mode
    )
    valid = examples_from_pairs(load_pairs("valid"), load_split("valid"), tokenizer, mode)
    test = examples_from_pairs(load_pairs("test"), load_split("test"), tokenizer, mode)
    fit = train_preference_model(
        model,
        train,
        valid,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
    )
    p = predict(model, test)
    p_star = np.array([e.p_oracle for e in test])
    labels = np.array([e.label for e in test])
    report = {
        "mode": mode,
        "kind": kind,
        "backbone": backbone,
        "train_pairs": len(train),
        "seed": seed,
        **asdict(fit),
        "test_pairs": len(test),
        "agreement_with_oracle": agreement(p, p_star),
        "agreement_with_labels": float(np.mean((p > 0.5) == (labels > 0.5))),
        "bayes_label_agreement": bayes_label_agreement(p_star),
        "ece_vs_labels": calibration(p, labels).ece,
        "ece_vs_oracle": calibration(p, p_star).ece,
    }
    if out_dir is not None:
        save_preference_model(model, out_dir)
        (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return model, report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_lib.preference")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a preference model on the synthetic task")
    t.add_argument("--mode", choices=("bt", "nt"), default="bt")
    t.add_argument("--kind", choices=("pairwise", "bt"), default="pairwise")
    t.add_argument("--pairs", type=int, default=None, help="training pairs (default: all)")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--backbone",
        default=None,
        help="real track: 'embedded' (SmolLM2), a folder or a hub id, with LoRA",
    )
    t.add_argument("--load-in-4bit", action="store_true", help="4-bit NF4 backbone")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    _, report = train_for_task(
        args.mode,
        args.kind,
        args.pairs,
        args.epochs,
        args.seed,
        args.out,
        backbone=args.backbone,
        load_in_4bit=args.load_in_4bit,
        lr=args.lr,
        batch_size=args.batch_size,
    )
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------------------------------------
# pairs unlike the training data
# ---------------------------------------------------------------------------------------------

PERTURBATIONS = ("shuffled", "repeated", "foreign_entity", "truncated_post")


def perturbed_pairs(records, seed: int = 0) -> list[tuple[object, str, str, str]]:
    """Pairs whose texts the training data never showed: the reference summary against a
    perturbed copy of it. ``(record, reference, perturbed, kind)`` with kind in
    :data:`PERTURBATIONS`: word order shuffled; a phrase repeated; a name the post never
    mentions put in; the first sentence of the post instead of a summary. A policy that
    optimises a learned preference model drifts towards such texts; where the model is
    confidently wrong about them, it can be exploited ("preference hacking", NLHF §7)."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in records:
        ref = rec.reference
        words = ref.split()
        kind = PERTURBATIONS[len(out) % len(PERTURBATIONS)]
        if kind == "shuffled":
            text = " ".join(words[i] for i in rng.permutation(len(words)))
        elif kind == "repeated":
            cut = max(2, len(words) // 3)
            text = " ".join(words[:cut] + words[:cut] + words[cut:])
        elif kind == "foreign_entity":
            text = ref.rstrip("?.!") + " and my cousin Bartholomew in Reykjavik agrees."
        else:
            text = rec.post.split(". ")[0].strip() + "."
        if text != ref:
            out.append((rec, ref, text, kind))
    return out
