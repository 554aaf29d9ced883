"""The paper's CAST model (KHU-VLL/CAST ``models/bidir_modeling_crossattn.py``, loaded from a path
outside this repository: its license is CC-BY-NC, so it is never copied here) beside ours, with the
same parameters. Shared by ``model_speed.py`` and ``gpu_check.py``; needs only torch, timm, einops
(for the paper's file) and this repository's ``cast_model``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from cast_model.config import CASTConfig
from cast_model.convert import convert_official_cast, load_official_cast
from cast_model.model import CAST
from cast_model.precision import autocast


def load_paper_module(path: str | Path) -> ModuleType:
    """Import the paper's model file by path, with a clear error when it or its imports are missing."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"--paper-code: no file at {path} (expected KHU-VLL/CAST models/bidir_modeling_crossattn.py)")
    spec = importlib.util.spec_from_file_location("paper_bidir_modeling_crossattn", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's @register_model looks its module up there
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as err:
        del sys.modules[spec.name]
        raise SystemExit(f"the paper's code at {path} needs the Python package {err.name!r}, which is not "
                         f"installed here (pip install {err.name})") from err
    if not hasattr(module, "STCrossTransformer"):
        raise SystemExit(f"{path} has no STCrossTransformer: is it models/bidir_modeling_crossattn.py?")
    return module


def build_paper_model(module: ModuleType, cfg: CASTConfig) -> nn.Module:
    """The paper's single-head model for ``cfg``, randomly initialised (nothing downloaded), with the
    paper's fine-tuning policy: the parameters ours trains train, the experts are frozen."""
    if cfg.head != "single" or cfg.bcast_blocks is not None or cfg.patch_size * 14 != cfg.img_size:
        raise ValueError("the paper's code builds B-CAST in every block, a single head, and 14x14 patches")
    model = module.STCrossTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, down_ratio=cfg.down_ratio, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=cfg.num_classes, all_frames=cfg.num_frames,
        tubelet_size=cfg.tubelet_size, drop_path_rate=cfg.drop_path_rate, head_drop_rate=cfg.head_drop_rate,
        init_scale=cfg.init_scale, composition=False)
    params = dict(model.named_parameters())
    ours = {id(v): k for k, v in convert_official_cast(params).items()}
    for param in params.values():
        param.requires_grad_(CAST.is_trainable(ours[id(param)]))
    return model


def ours_from_paper(paper: nn.Module, cfg: CASTConfig) -> CAST:
    """Our model with the paper model's parameters (through the release-naming converter)."""
    return load_official_cast({k: v.detach().clone() for k, v in paper.named_parameters()}, cfg)


def allow_paper_bf16(module: ModuleType) -> None:
    """The paper's CLIP LayerNorm handles fp16 and fp32 inputs only (a bf16 input leaves its result
    unbound); give it the fp32-compute, cast-back behaviour it has for fp16, so bf16 autocast can run."""
    def forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return nn.LayerNorm.forward(self, x.float()).to(x.dtype)

    module.LayerNorm.forward = forward


def step_fns(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None,
             run: Callable | None = None) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward, training step) closures on one batch: forward under no_grad in eval mode; a step is
    forward + backward + AdamW over the trainable parameters. ``run`` replaces ``model`` as the
    callable (a compiled model)."""
    run = model if run is None else run  # a compiled module has no truth value
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def forward() -> None:
        model.eval()
        with torch.no_grad(), autocast(x.device, amp):
            run(x)

    def train_step() -> None:
        model.train()
        with autocast(x.device, amp):
            loss = nn.functional.cross_entropy(run(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return forward, train_step


def timed(fn: Callable[[], None], steps: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per call, averaged over ``steps`` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def batch(cfg: CASTConfig, batch_size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random clips and labels in every process: (B, 3, F, S, S), (B,)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch_size,), generator=gen)
    return x.to(device), y.to(device)


__all__ = ["load_paper_module", "build_paper_model", "ours_from_paper", "allow_paper_bf16", "step_fns", "timed",
           "batch"]
