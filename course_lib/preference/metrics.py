"""How good a preference model is: agreement with the oracle and with the labels, calibration,
and the pairs on which it is confidently wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from course_lib.preference.examples import Example
from course_lib.preference.model import PreferenceModel


@torch.no_grad()
def predict(model: PreferenceModel, examples: Sequence[Example], batch_size: int = 128):
    """P_phi(y > y'|x) for each example, as a numpy array (the model is put in eval mode)."""
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
