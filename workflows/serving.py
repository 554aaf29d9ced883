"""The MLflow pyfunc wrapper of a CAST checkpoint (our safetensors + cast.json folder).

Nothing is pickled: the model is logged "from code" (``serving_model.py`` names this class), the weights
travel as the checkpoint folder artifact and ``load_context`` reads them back with safetensors.

``predict`` takes float32 clips (B, 3, T, H, W), normalised like the training loader's output, and
returns logits: an ndarray (B, C) for single-label models, and for EK100 (verb/noun) a dict
``{"verb": (B, V), "noun": (B, N)}`` of ndarrays (named tensor outputs in the signature).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from cast_model import CASTConfig, load_checkpoint, read_checkpoint_meta

CHECKPOINT_ARTIFACT = "checkpoint"


class CASTPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model, self.labels = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        self.model.eval()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
                ) -> np.ndarray | dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.model(x)
        if isinstance(out, dict):
            return {k: v.float().cpu().numpy() for k, v in out.items()}
        return out.float().cpu().numpy()


def signature_for(config: CASTConfig) -> ModelSignature:
    clip = (-1, 3, config.num_frames, config.img_size, config.img_size)
    inputs = Schema([TensorSpec(np.dtype(np.float32), clip)])
    if config.head == "single":
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, config.num_classes))])
    else:
        outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, config.num_verbs), "verb"),
                          TensorSpec(np.dtype(np.float32), (-1, config.num_nouns), "noun")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example_for(config: CASTConfig) -> np.ndarray:
    """One clip of zeros: normalised-input scale, and small in the model's JSON example file."""
    return np.zeros((1, 3, config.num_frames, config.img_size, config.img_size), dtype=np.float32)


def checkpoint_config(checkpoint_dir: str | Path) -> CASTConfig:
    return CASTConfig.from_dict(read_checkpoint_meta(checkpoint_dir)["config"])
