"""B-CAST's attention probabilities, captured on demand: where a spatial query looks along time (T2S)
and where a temporal query looks in space (S2T).

    with capture_attention(model) as maps:
        model(clips)
    profiles = attention_profiles(maps[-1], model.config)  # the last B-CAST block's T2S or S2T

While a capture is open every cross-attention writes its softmax(QK^T / sqrt(h)) explicitly (the same
numbers the fused kernel computes without forming them); outside one the fused path runs unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from .config import CASTConfig
from .model import CAST


@dataclass(frozen=True)
class AttentionMap:
    """One cross-attention's probabilities in one forward pass: (G, H, L, L) over its windows."""

    block: int
    direction: str  # "t2s": spatial queries, temporal keys; "s2t": temporal queries, spatial keys
    window: str  # CASTConfig.t2s_window / s2t_window
    probs: torch.Tensor


@contextmanager
def capture_attention(model: CAST) -> Iterator[list[AttentionMap]]:
    """Inside the block, each forward pass of ``model`` appends one :class:`AttentionMap` per B-CAST
    direction and block (in block order) to the list it yields."""
    maps: list[AttentionMap] = []
    hooked = []
    for i, block in enumerate(model.blocks):
        if block.bcast is None:
            continue
        for direction in ("t2s", "s2t"):
            attn = getattr(block.bcast, direction)
            if attn is None:
                continue
            attn.on_attention = (lambda probs, i=i, d=direction, w=attn.window:
                                 maps.append(AttentionMap(i, d, w, probs.float().cpu())))
            hooked.append(attn)
    try:
        yield maps
    finally:
        for attn in hooked:
            attn.on_attention = None


def attention_profiles(m: AttentionMap, config: CASTConfig) -> dict[str, torch.Tensor]:
    """A map reduced to what a person can look at, mean over heads and over the query's patches:

    ``time``  (B, T, T): for queries at step t, the mass on keys at each step t' (where a query looks
    along time); ``space`` (B, T, N): for queries at step t, the mass on each key patch n' (where a query
    looks in space). Each row sums to 1. A window that cannot see an axis gives that axis's trivial
    profile (``time`` window: every query looks only at its own patch n, so ``space`` is uniform over n).
    """
    T, N = config.num_steps, config.num_patches
    p = m.probs
    if m.window == "time":  # (B*N, H, T, T): queries (n, t) over keys (n, t')
        time = p.reshape(-1, N, p.shape[1], T, T).mean(dim=(1, 2))  # (B, T, T)
        space = torch.full((time.shape[0], T, N), 1.0 / N)
    elif m.window == "space":  # (B*T, H, N, N): queries (t, n) over keys (t, n')
        space = p.reshape(-1, T, p.shape[1], N, N).mean(dim=(2, 3))  # (B, T, N)
        time = torch.eye(T).expand(space.shape[0], T, T).clone()
    else:  # space_time, (B, H, T*N, T*N)
        full = p.reshape(p.shape[0], p.shape[1], T, N, T, N).mean(dim=(1, 3))  # (B, T, T', N')
        time, space = full.sum(dim=3), full.sum(dim=2)
    return {"time": time, "space": space}


__all__ = ["AttentionMap", "capture_attention", "attention_profiles"]
