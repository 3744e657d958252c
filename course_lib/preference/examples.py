"""Training examples for a preference model: labelled pairs of the synthetic task, tokenised;
and pairs unlike the training data, to probe where a model can be exploited."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from course_lib.preference.model import encode_texts


@dataclass
class Example:
    """One labelled pair, tokenised: the post ``x`` and the two summaries ``y``, ``y2``."""

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
