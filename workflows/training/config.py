"""The training configuration's schema: one flat dataclass, each field with its help for the command line.

Precedence: dataclass defaults < ``configs/<dataset>.yaml`` ``recipe`` < its ``presets.<name>`` (when
``--preset`` names one) < command-line flags (``training.command``, through ``workflows.cli.flags``).
The recipe YAML is read by ``training.recipe_yaml``; every check that needs no cluster is
``training.checks.validate``, run once, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from cast_model import PRESETS, CASTConfig
from cast_model.precision import PRECISIONS
from cast_model.vocab import HEADS, SAMPLINGS

from ..cli.flags import FlagError, coerce, flag


class TrainConfigError(ValueError):
    """A training configuration that cannot run; raised before any work starts."""


_DATA, _MODEL, _OPT, _AUG, _CLUSTER, _RUN = ("what to train on", "model", "optimisation (the paper's recipe)",
                                             "data and augmentation", "cluster", "run bookkeeping")


# Keyword-only so that the recipe's fields can go without a default wherever they sit: those fields
# (every key under ``recipe:`` in configs/<dataset>.yaml) have their one home in the recipe, per dataset.
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # -- what to train on ---------------------------------------------------------------------------
    dataset: str = field(metadata=flag("the dataset (set by the entry point: train_<dataset>.py)", cli=False))
    shards: str = field(metadata=flag("folder of training shards (<split>-NNNNNN.tar + .idx, classes.json)",
                                      group=_DATA))
    val_shards: str = field(metadata=flag("folder of validation shards", group=_DATA))
    train_split: str = field(default="train", metadata=flag("shard split to train on (<split>-NNNNNN.tar)",
                                                             group=_DATA))
    val_split: str = field(default="validation", metadata=flag("shard split to validate on", group=_DATA))
    head: str = field(default="single", metadata=flag("label heads (set by the recipe)", cli=False))
    # -- model ----------------------------------------------------------------------------------------
    preset: str = field(metadata=flag("model size (cast_model presets); a recipe preset of the same name "
                                      "overlays the recipe", choices=sorted(PRESETS), group=_MODEL))
    drop_path: float = field(metadata=flag("stochastic depth rate", group=_MODEL))
    head_drop: float = field(metadata=flag("dropout before the classification head", group=_MODEL))
    init_scale: float = field(metadata=flag("scale of the head's initial weights", group=_MODEL))
    grad_checkpointing: bool = field(default=False, metadata=flag(
        "recompute activations in the backward pass (less memory, more compute)", group=_MODEL))
    # The paper trains adapters, B-CAST and heads on frozen pretrained experts. Without expert weights
    # (random init: tests, the demo) there is nothing to preserve, and a tiny run learns faster with
    # everything trainable.
    freeze_experts: bool = field(default=True, metadata=flag(
        "train only adapters, B-CAST and heads (the paper); --no-freeze-experts: train everything", group=_MODEL))
    clip_weights: str | None = field(default=None, metadata=flag(
        "CLIP ViT-B/16 expert weights (safetensors or .pt) to start from", group=_MODEL, none="random init"))
    videomae_weights: str | None = field(default=None, metadata=flag(
        "VideoMAE expert weights to start from", group=_MODEL, none="random init"))
    init_checkpoint: str | None = field(default=None, metadata=flag(
        "an official CAST release checkpoint (all weights) to start from", group=_MODEL, none="none"))
    # -- optimisation (the paper's recipe) ----------------------------------------------------------
    epochs: int = field(metadata=flag("training epochs", group=_OPT))
    batch_size: int = field(metadata=flag("clips per worker per forward pass", group=_OPT))
    total_batch_size: int = field(metadata=flag(
        "clips per optimizer step over all workers and accumulation steps", group=_OPT))
    base_lr: float = field(metadata=flag("learning rate per 256 clips (lr = base_lr * total_batch_size / 256)",
                                         group=_OPT))
    min_lr: float = field(metadata=flag("cosine schedule's final learning rate", group=_OPT))
    warmup_lr: float = field(metadata=flag("learning rate at the start of the warm-up", group=_OPT))
    warmup_epochs: float = field(metadata=flag("linear warm-up length in epochs (fractions allowed)", group=_OPT))
    weight_decay: float = field(metadata=flag("AdamW weight decay (none on biases, norms, position tables)",
                                              group=_OPT))
    layer_decay: float = field(metadata=flag("layer-wise learning-rate decay, in (0, 1]", group=_OPT))
    betas: tuple[float, float] = field(metadata=flag("AdamW betas (two values)", group=_OPT))
    opt_eps: float = field(metadata=flag("AdamW epsilon", group=_OPT))
    clip_grad: float | None = field(metadata=flag("gradient-norm clipping", group=_OPT, none="no clipping"))
    label_smoothing: float = field(metadata=flag("label smoothing, in [0, 1]", group=_OPT))
    mixup: float = field(metadata=flag("mixup alpha (0: off)", group=_OPT))
    cutmix: float = field(metadata=flag("cutmix alpha (0: off)", group=_OPT))
    mixup_prob: float = field(metadata=flag("probability of mixing a batch, in [0, 1]", group=_OPT))
    mixup_switch_prob: float = field(metadata=flag(
        "probability of cutmix instead of mixup when both are on, in [0, 1]", group=_OPT))
    precision: str = field(default="auto", metadata=flag(
        "arithmetic: auto (bf16 autocast on GPUs and on CPUs where bf16 matmuls measure faster, else fp32), "
        "bf16, fp16 (GPU), fp32", choices=PRECISIONS, group=_OPT))
    # -- data -------------------------------------------------------------------------------------------
    sampling: str = field(metadata=flag("frame sampling: uniform (one frame per segment) or dense (a stride)",
                                        choices=SAMPLINGS, group=_AUG))
    sampling_rate: int = field(metadata=flag("dense sampling stride", group=_AUG))
    hflip: bool = field(metadata=flag("random horizontal flips (never for SSV2: left/right are classes)",
                                      group=_AUG))
    rand_augment: bool = field(metadata=flag("RandAugment, the same ops on every frame of a clip", group=_AUG))
    rand_augment_n: int = field(metadata=flag("RandAugment ops per clip", group=_AUG))
    rand_augment_m: int = field(metadata=flag("RandAugment magnitude, of 10", group=_AUG))
    crop_scale_min: float = field(metadata=flag("random resized crop: smallest area fraction kept, in (0, 1]",
                                                group=_AUG))
    test_clips: int = field(metadata=flag("temporal views per video at validation", group=_AUG))
    test_crops: int = field(metadata=flag("spatial views per clip at validation (1: centre, 3: left/centre/right)",
                                          choices=(1, 3), group=_AUG))
    loader_threads: int = field(default=2, metadata=flag("DALI threads per worker", group=_AUG))
    shuffle_buffer: int = field(default=256, metadata=flag("DALI reader's shuffle buffer, in samples", group=_AUG))
    # -- cluster ----------------------------------------------------------------------------------------
    num_workers: int = field(default=1, metadata=flag("Ray Train workers", group=_CLUSTER))
    gpus_per_worker: float | None = field(default=None, metadata=flag(
        "GPUs per worker", group=_CLUSTER, none="1 when the cluster has one per worker, else 0"))
    cpus_per_worker: float = field(default=1.0, metadata=flag("CPUs per worker", group=_CLUSTER))
    # Seconds to wait for the cluster to offer the requested CPUs/GPUs (an autoscaler adding nodes)
    # before giving up; 0: fail at once when they are not there.
    resource_timeout_s: float = field(default=600.0, metadata=flag(
        "seconds to wait for the requested CPUs/GPUs (an autoscaler adding nodes) before giving up",
        group=_CLUSTER))
    # -- run bookkeeping ----------------------------------------------------------------------------------
    run_name: str = field(default="", metadata=flag(
        "run name (Ray Train and MLflow); the same name resumes the run", none="<dataset>-<preset>-<time>",
        group=_RUN))
    experiment: str = field(default="", metadata=flag("MLflow experiment", none="cast-<dataset>", group=_RUN))
    registered_model: str = field(default="", metadata=flag("registered model name", none="cast-<dataset>",
                                                            group=_RUN))
    storage_path: str = field(default="", metadata=flag(
        "Ray Train storage (absolute path or URI visible to every node)", none="<repo>/data/ray_results",
        group=_RUN))
    checkpoint_every: int = field(default=0, metadata=flag(
        "also checkpoint every N optimizer steps (0: at epoch ends only)", group=_RUN))
    keep_checkpoints: int = field(default=2, metadata=flag(
        "checkpoints kept, best by validation top-1 (the latest is kept too)", group=_RUN))
    max_failures: int = field(default=1, metadata=flag("worker failures Ray Train recovers from", group=_RUN))
    log_every: int = field(default=1, metadata=flag("optimizer steps between MLflow step metrics", group=_RUN))
    seed: int = field(default=0, metadata=flag("random seed", group=_RUN))
    register: bool = field(default=True, metadata=flag(
        "register the best checkpoint in the MLflow Model Registry", group=_RUN))
    resume: bool = field(default=False, metadata=flag(
        "--resume: the run must resume (both the checkpoint and the tracking store hold it) or exit 2; "
        "--no-resume: resume when both hold it, else start afresh and say so", group=_RUN))
    # Test-only: rank 1 ends its process with os._exit(1) at this global optimizer step, once per run
    # (a marker file in the run folder keeps the restarted worker alive). Exercises FailureConfig.
    fault_kill_step: int | None = field(default=None, metadata=flag("test only: a worker fault", cli=False))
    # Filled by the preparation from the shards' classes.json (read once per process).
    labels: dict[str, dict[str, str]] = field(default_factory=dict, metadata=flag(
        "label maps (from the shards)", cli=False))

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def heads(self) -> tuple[str, ...]:
        return HEADS[self.head]

    @property
    def update_freq(self) -> int:
        """Micro-batches accumulated per optimizer step."""
        return self.total_batch_size // (self.batch_size * self.num_workers)

    @property
    def lr(self) -> float:
        return self.base_lr * self.total_batch_size / 256

    @property
    def use_gpu(self) -> bool:
        return bool(self.gpus_per_worker)

    def model_config(self) -> CASTConfig:
        sizes = ({"num_classes": len(self.labels["label"])} if self.head == "single" else
                 {"num_verbs": len(self.labels["verb"]), "num_nouns": len(self.labels["noun"])})
        return CASTConfig.preset(self.preset, head=self.head, drop_path_rate=self.drop_path,
                                 head_drop_rate=self.head_drop, init_scale=self.init_scale,
                                 grad_checkpointing=self.grad_checkpointing, **sizes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], sources: dict[str, str] | None = None) -> "TrainConfig":
        """Typed: every value is coerced to its field's type (YAML reads ``1e-3`` as a string) or the
        error names the key, the expected type and where the value came from (``sources``)."""
        hints = field_types()
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise TrainConfigError(f"unknown training settings: {unknown}")
        sources = sources or {}
        try:
            typed = {k: coerce(k, v, hints[k], sources.get(k, "")) for k, v in values.items()}
        except FlagError as err:
            raise TrainConfigError(str(err)) from None
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                         and f.name not in typed)
        if missing:  # the recipe's fields have no default: the recipe (or a flag) must give them
            raise TrainConfigError(f"settings missing from the recipe and the flags: {missing}")
        return cls(**typed)

    def params(self) -> dict[str, str]:
        """The resolved config as flat MLflow params (label maps are an artifact, not params)."""
        flat = {k: v for k, v in self.to_dict().items() if k != "labels"}
        flat.update(lr=self.lr, update_freq=self.update_freq,
                    **{f"num_{h}_classes": len(self.labels.get(h, {})) for h in self.heads})
        return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flat.items()}


def field_types() -> dict[str, Any]:
    """TrainConfig field -> its (evaluated) type annotation."""
    return typing.get_type_hints(TrainConfig)


def steps_per_epoch(batches_per_epoch: int, update_freq: int) -> int:
    """Optimizer steps in an epoch of ``batches_per_epoch`` micro-batches (a partial last group of
    micro-batches is dropped, as a DataLoader with ``drop_last`` would)."""
    return batches_per_epoch // update_freq


def warmup_steps(cfg: TrainConfig, steps_in_epoch: int) -> int:
    return int(math.ceil(cfg.warmup_epochs * steps_in_epoch))
