"""CAST (Cross-Attention in Space and Time) for video action recognition: model, configs,
checkpoint import, freezing and parameter groups. Pure torch: no Ray, MLflow or DALI here.

The public names below load on first use (PEP 562), so ``import cast_model.vocab`` -- the vocabulary
preprocessing shares -- does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("CheckpointError", "LabelMap", "load_checkpoint", "read_checkpoint_meta", "save_checkpoint",
                     "verify_checkpoint"), "checkpoint"),
    **dict.fromkeys(("PRESETS", "CASTConfig", "ConfigError"), "config"),
    **dict.fromkeys(("ConversionError", "convert_clip", "convert_official_cast", "convert_videomae", "load_experts",
                     "load_official_cast", "read_state_dict"), "convert"),
    **dict.fromkeys(("CAST", "count_params"), "model"),
    **dict.fromkeys(("freeze_experts", "param_groups"), "optim"),
}

if TYPE_CHECKING:
    from .checkpoint import (CheckpointError, LabelMap, load_checkpoint, read_checkpoint_meta, save_checkpoint,
                             verify_checkpoint)
    from .config import PRESETS, CASTConfig, ConfigError
    from .convert import (ConversionError, convert_clip, convert_official_cast, convert_videomae, load_experts,
                          load_official_cast, read_state_dict)
    from .model import CAST, count_params
    from .optim import freeze_experts, param_groups


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cast_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "CAST", "CASTConfig", "ConfigError", "PRESETS", "count_params",
    "freeze_experts", "param_groups",
    "load_official_cast", "load_experts", "convert_official_cast", "convert_clip", "convert_videomae",
    "read_state_dict", "ConversionError",
    "save_checkpoint", "load_checkpoint", "verify_checkpoint", "read_checkpoint_meta", "CheckpointError", "LabelMap",
]
