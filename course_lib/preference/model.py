"""The preference model P_phi(y > y'|x): its configuration, its encoders and its heads.

A pairwise model compares two encodings with a small network and is symmetrised (package
docstring); a Bradley-Terry model scores each summary alone. The encoder is a small transformer
over the task's word-level tokenizer (tiny track) or a pretrained causal LM with LoRA (real track,
:func:`backbone_preference_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from course_lib.llm import LoraSettings, load_policy
from course_lib.logprobs import position_ids_from_mask


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
    is then symmetrised (package docstring). Encoding each summary with the post, rather than
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
    ``(model, tokenizer)``; train it with
    :func:`~course_lib.preference.training.train_preference_model` on examples encoded with this
    tokenizer. Meant for a GPU; it runs on the CPU at smoke sizes."""
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


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens: what the model reads as x, y and y'."""
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
