"""CAST (Cross-Attention in Space and Time) for video action recognition: model, configs,
checkpoint import, freezing and parameter groups. Pure torch: no Ray, MLflow or DALI here."""

from .checkpoint import (CheckpointError, LabelMap, load_checkpoint, read_checkpoint_meta, save_checkpoint,
                         verify_checkpoint)
from .config import PRESETS, CASTConfig, ConfigError
from .convert import (ConversionError, convert_clip, convert_official_cast, convert_videomae, load_experts,
                      load_official_cast, read_state_dict)
from .model import CAST, count_params
from .optim import freeze_experts, param_groups

__all__ = [
    "CAST", "CASTConfig", "ConfigError", "PRESETS", "count_params",
    "freeze_experts", "param_groups",
    "load_official_cast", "load_experts", "convert_official_cast", "convert_clip", "convert_videomae",
    "read_state_dict", "ConversionError",
    "save_checkpoint", "load_checkpoint", "verify_checkpoint", "read_checkpoint_meta", "CheckpointError", "LabelMap",
]
