"""Freezing and AdamW parameter groups (layer-wise lr decay, no decay on biases, norms, positions)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .model import CAST


def freeze_experts(model: CAST) -> CAST:
    """Freeze both experts: only adapters, B-CAST, the last norms and the heads keep gradients."""
    for name, param in model.named_parameters():
        param.requires_grad_(CAST.is_trainable(name))
    return model


def layer_id(name: str, depth: int) -> int:
    """0 for the stems, i + 1 for block i, depth + 1 for the norms and heads after the blocks."""
    if name.startswith(("spatial_stem.", "temporal_stem.")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def _no_weight_decay(name: str, param: nn.Parameter) -> bool:
    # Biases and LayerNorm affine parameters are 1-D; position tables and the class token are not
    # weights either.
    return param.ndim <= 1 or name.endswith(("_pos", "pos_embed", "cls_token"))


def param_groups(model: CAST, weight_decay: float = 0.05, layer_decay: float = 0.75) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters only.

    Each group carries ``lr_scale`` = layer_decay ** (depth + 1 - layer_id); timm's schedulers multiply
    the scheduled lr by it (a training loop without timm must apply it itself).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {layer_decay}")
    depth = model.config.depth
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid, no_decay = layer_id(name, depth), _no_weight_decay(name, param)
        group = groups.setdefault((lid, no_decay), {
            "name": f"layer{lid}_{'no_decay' if no_decay else 'decay'}",
            "params": [], "param_names": [],
            "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": layer_decay ** (depth + 1 - lid),
        })
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters: call freeze_experts() or unfreeze some")
    return [groups[k] for k in sorted(groups)]
