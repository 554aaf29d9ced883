"""The pieces of the paper's recipe as plain functions: model, optimizer, schedule, mixup, loss.

Pure torch/timm, no Ray or MLflow: the per-worker loop wires these together, tests call them directly.
Outputs and targets travel as ``{head: tensor}`` for every dataset (``label`` for single-label
datasets, ``verb``/``noun`` for EK100), so one code path serves all three.
"""

from __future__ import annotations

import torch
from timm.data.mixup import Mixup, mixup_target
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import nn

from cast_model import CAST, freeze_experts, load_experts, load_official_cast, param_groups

from .config import TrainConfig


def build_model(cfg: TrainConfig) -> CAST:
    """CAST for ``cfg``, initialised from the files the config names (random init when it names none,
    which is what the tests and the demo train), experts frozen unless ``cfg.freeze_experts`` is off."""
    if cfg.init_checkpoint:  # a fine-tuned release: its heads must match the shards' classes
        model = load_official_cast(cfg.init_checkpoint, cfg.model_config()).train()
    else:
        model = CAST(cfg.model_config())
        if cfg.clip_weights or cfg.videomae_weights:
            load_experts(model, clip=cfg.clip_weights, videomae=cfg.videomae_weights)
    if cfg.freeze_experts:
        return freeze_experts(model)
    return model.requires_grad_(True)


def build_optimizer(cfg: TrainConfig, model: CAST) -> torch.optim.AdamW:
    """AdamW over layer-decayed groups; no weight decay on biases, norms and position tables."""
    groups = param_groups(model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    for g in groups:
        g.pop("param_names")  # names stay in param_groups' output; torch would want one per param
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.opt_eps)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int) -> CosineLRScheduler:
    """Per-optimizer-step schedule: linear warmup warmup_lr -> lr, then cosine lr -> min_lr over the
    remaining steps (warmup as a prefix, as the paper's cosine schedule). timm multiplies each group's
    lr by its ``lr_scale`` (layer decay)."""
    scale = cfg.total_batch_size / 256
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    return CosineLRScheduler(optimizer, t_initial=max(total_steps - warmup_steps, 1), lr_min=cfg.min_lr * scale,
                             warmup_t=warmup_steps, warmup_lr_init=cfg.warmup_lr * scale, warmup_prefix=True,
                             t_in_epochs=False)


class VideoMixup:
    """timm's Mixup/CutMix on clips, one lambda for every head (EK100 verb and noun mix alike).

    timm mixes images (B, C, H, W) in place; a clip batch (B, C, T, H, W) is viewed as (B, C*T, H, W)
    so one CutMix box covers the same pixels in every frame, and mixup blends whole clips.
    """

    def __init__(self, cfg: TrainConfig, num_classes: dict[str, int]) -> None:
        self.num_classes = num_classes
        self.smoothing = cfg.label_smoothing
        self.active = cfg.mixup_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0)
        self._mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                            switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.label_smoothing,
                            num_classes=max(num_classes.values())) if self.active else None

    def __call__(self, video: torch.Tensor, labels: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, C, T, H, W) clips, {head: (B,) int64} -> mixed clips, {head: (B, classes) soft targets}.
        Without mixup the labels come back as they are (hard targets)."""
        if self._mixup is None:
            return video, labels
        if len(video) % 2:
            raise ValueError(f"mixup needs an even batch, got {len(video)} clips")
        B, C, T, H, W = video.shape
        video = video.contiguous()
        lam = self._mixup._mix_batch(video.view(B, C * T, H, W))  # in place through the view
        targets = {h: mixup_target(y, self.num_classes[h], lam, self.smoothing) for h, y in labels.items()}
        return video, targets


def build_criterion(cfg: TrainConfig, mixup_active: bool) -> nn.Module:
    """Soft-target CE under mixup (label smoothing is already in the mixed targets), else label-smoothed CE."""
    if mixup_active:
        return SoftTargetCrossEntropy()
    if cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing)
    return nn.CrossEntropyLoss()


def total_loss(criterion: nn.Module, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
               ) -> torch.Tensor:
    """Sum of the per-head losses (EK100: verb CE + noun CE, as the paper)."""
    return sum(criterion(logits[h].float(), targets[h]) for h in targets)
