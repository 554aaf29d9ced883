"""Training state on disk: what a Ray Train checkpoint folder holds, and reading it back.

A checkpoint folder:
  ``trainable.safetensors``  the trainable parameters (the frozen experts come from their own init)
  ``train_state.pt``         optimizer, scheduler and grad-scaler state dicts, progress counters, the
                             RNG states of every rank: plain tensors/dicts/ints only, so it loads with
                             ``torch.load(weights_only=True)``
  ``progress.json``          the counters again, human-readable
  ``model/``                 (final checkpoint only) the full model in cast_model's format
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "train_state.pt"
PROGRESS_FILE = "progress.json"
MODEL_DIR = "model"


@dataclass
class Progress:
    """Where training stands. ``batch_in_epoch`` counts micro-batches of ``epoch`` already consumed (the
    loader position a resume skips to); ``step`` counts optimizer steps since the start of the run."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    clips_seen: int = 0
    best_val_top1: float = float("-inf")
    finished: bool = False


# -- RNG states as plain tensors (numpy's state tuple holds an ndarray, which weights_only refuses) --------
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4]),
        "python_version": int(py_version), "python_internal": torch.tensor(py_internal, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_internal"].tolist()),
                     state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -- save / load -------------------------------------------------------------------------------------------
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


# Seven parameters: the training state is these six objects and the folder; load_train_state mirrors it.
def save_train_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: torch.amp.GradScaler, progress: Progress, rng_states: list[dict[str, Any]]) -> Path:
    """Write a checkpoint folder; ``model`` is the unwrapped (non-DDP) module."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(path / TRAINABLE_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "progress": asdict(progress), "rng": rng_states},
               path / STATE_FILE)
    (path / PROGRESS_FILE).write_text(json.dumps(asdict(progress), indent=2))
    return path


def load_train_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: torch.amp.GradScaler, rank: int) -> Progress:
    """Restore everything :func:`save_train_state` wrote; returns the progress to continue from."""
    path = Path(path)
    weights = load_file(str(path / TRAINABLE_FILE))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise ValueError(f"{path}: trainable parameters differ from the model's (missing "
                         f"{sorted(expected - set(weights))[:5]}, unexpected {sorted(set(weights) - expected)[:5]})")
    model.load_state_dict(weights, strict=False)
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    # Same world size: each rank continues its own random streams; otherwise rank 0's seeds all.
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return Progress(**state["progress"])


def read_progress(path: str | Path) -> Progress:
    return Progress(**json.loads((Path(path) / PROGRESS_FILE).read_text()))
