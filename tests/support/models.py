"""Tiny CAST models for the tests: a small but not degenerate config, and a saved checkpoint with the
contract training writes."""

from __future__ import annotations

from pathlib import Path

import torch

from cast_model import CAST, CASTConfig, save_checkpoint

# Small but not degenerate: 2 blocks, 4 time steps, a 4x4 grid, B-CAST width divisible by heads.
SMALL = dict(embed_dim=32, depth=2, num_heads=4, num_frames=8, img_size=32, patch_size=8)


def small(**overrides) -> CASTConfig:
    return CASTConfig.preset("tiny", **{**SMALL, **overrides})


def tiny_checkpoint(path: Path, labels: dict, **sizes) -> Path:
    """A tiny CAST with a random (not zero-initialised) head, so classes get different scores, and the
    contract training writes (dataset, heads, evaluation views)."""
    torch.manual_seed(0)
    model = CAST(CASTConfig.preset("tiny", **sizes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "head" in name:
                p.normal_(0.0, 0.05)
    extra = {"dataset": "ek100" if "verb" in labels else "ssv2", "heads": list(labels), "sampling": "uniform",
             "sampling_rate": 4, "test_clips": 2, "test_crops": 3}
    return save_checkpoint(path, model, labels, extra=extra)
