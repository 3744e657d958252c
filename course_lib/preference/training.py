"""Training a preference model: the cross-entropy of its symmetrised probability against the
labels, Adam with early stopping, and the whole recipe on the synthetic task
(:func:`train_for_task`, what ``python -m course_lib.preference train`` runs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course_lib.preference.examples import Example, examples_from_pairs
from course_lib.preference.metrics import agreement, bayes_label_agreement, calibration, predict
from course_lib.preference.model import PMConfig, PreferenceModel, backbone_preference_model
from course_lib.preference.storage import check_model_dir, save_preference_model
from course_lib.tasks import load_pairs, load_split, load_tokenizer
from course_lib.tasks.summarisation import PAIR_SPLITS


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
    if out_dir is not None:
        check_model_dir(out_dir)  # before training, not after it
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
    if out_dir is not None:
        check_model_dir(out_dir)  # a folder that is not the course's fails before any work
    # The corpus first (a malformed line fails in seconds), then the model (a backbone is slow).
    pairs = {split: load_pairs(split) for split in ("train", "valid", "test")}
    records = {split: load_split(PAIR_SPLITS[split][1]) for split in pairs}  # their posts
    pairs["train"] = pairs["train"][:n_train]
    torch.manual_seed(seed)
    if backbone is not None:
        model, tokenizer = backbone_preference_model(backbone, kind, load_in_4bit=load_in_4bit)
    else:
        tokenizer = load_tokenizer()
        model = PreferenceModel(
            PMConfig(kind=kind, vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id)
        )
    train, valid, test = (
        examples_from_pairs(pairs[split], records[split], tokenizer, mode) for split in pairs
    )
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
    report = {
        "mode": mode,
        "kind": kind,
        "backbone": backbone,
        "train_pairs": len(train),
        "seed": seed,
        **asdict(fit),
        **_test_report(model, test),
    }
    if out_dir is not None:
        save_preference_model(model, out_dir, report)
    return model, report


def _test_report(model: PreferenceModel, test: Sequence[Example]) -> dict:
    """Agreement with the oracle and with the sampled labels, the labels' own ceiling, and the
    calibration against both, on the held-out test examples."""
    p = predict(model, test)
    p_star = np.array([e.p_oracle for e in test])
    labels = np.array([e.label for e in test])
    return {
        "test_pairs": len(test),
        "agreement_with_oracle": agreement(p, p_star),
        "agreement_with_labels": float(np.mean((p > 0.5) == (labels > 0.5))),
        "bayes_label_agreement": bayes_label_agreement(p_star),
        "ece_vs_labels": calibration(p, labels).ece,
        "ece_vs_oracle": calibration(p, p_star).ece,
    }
