"""Training configuration: one flat dataclass, the recipe YAMLs, command-line overrides, validation.

Precedence: dataclass defaults < ``configs/<dataset>.yaml`` ``recipe`` < its ``presets.<name>`` (when
``--preset`` names one) < command-line flags. Everything is checked by :func:`validate` before Ray
starts a worker, so a wrong path or size fails at once with a message naming the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from cast_model import PRESETS, CASTConfig
from cast_model.precision import PRECISIONS
from cast_model.vocab import DATASETS, HEADS, SAMPLINGS
from pipelines import manifest
from pipelines.manifest import CLASSES_FILE, LabelMapError

from ..cluster.shared_storage import is_uri
from ..tracking.store import DATA_DIR, REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


class TrainConfigError(ValueError):
    """A training configuration that cannot run; raised before any work starts."""


# Keyword-only so that the recipe's fields can go without a default wherever they sit: those fields
# (every key under ``recipe:`` in configs/<dataset>.yaml) have their one home in the recipe, per dataset.
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # -- what to train on ---------------------------------------------------------------------------
    dataset: str
    shards: str  # folder of training shards (``train-NNNNNN.tar`` + ``.idx``, classes.json)
    val_shards: str  # folder of validation shards
    train_split: str = "train"
    val_split: str = "validation"
    head: str = "single"
    # -- model ----------------------------------------------------------------------------------------
    preset: str
    drop_path: float
    head_drop: float
    init_scale: float
    grad_checkpointing: bool = False
    # The paper trains adapters, B-CAST and heads on frozen pretrained experts. Without expert weights
    # (random init: tests, the demo) there is nothing to preserve, and a tiny run learns faster with
    # everything trainable.
    freeze_experts: bool = True
    clip_weights: str | None = None  # expert init: CLIP ViT-B/16 state dict (safetensors or .pt)
    videomae_weights: str | None = None  # expert init: VideoMAE state dict
    init_checkpoint: str | None = None  # an official CAST release checkpoint (all weights)
    # -- optimisation (the paper's recipe) ----------------------------------------------------------
    epochs: int
    batch_size: int  # clips per worker per forward pass
    total_batch_size: int  # clips per optimizer step, all workers, all accumulation steps
    base_lr: float  # per 256 clips: lr = base_lr * total_batch_size / 256
    min_lr: float
    warmup_lr: float
    warmup_epochs: float
    weight_decay: float
    layer_decay: float
    betas: tuple[float, float]
    opt_eps: float
    clip_grad: float | None
    label_smoothing: float
    mixup: float
    cutmix: float
    mixup_prob: float
    mixup_switch_prob: float
    precision: str = "auto"  # auto|bf16|fp16|fp32, resolved by cast_model.precision (auto: bf16 on GPUs and bf16-fast CPUs)
    # -- data -------------------------------------------------------------------------------------------
    sampling: str
    sampling_rate: int
    hflip: bool
    rand_augment: bool
    rand_augment_n: int  # ops per clip
    rand_augment_m: int  # magnitude of 10
    crop_scale_min: float  # random resized crop: smallest area fraction kept (largest is 1)
    test_clips: int
    test_crops: int
    loader_threads: int = 2
    shuffle_buffer: int = 256
    # -- cluster ----------------------------------------------------------------------------------------
    num_workers: int = 1
    gpus_per_worker: float | None = None  # None: 1 when the cluster has a GPU per worker, else 0
    cpus_per_worker: float = 1.0
    # -- run bookkeeping ----------------------------------------------------------------------------------
    run_name: str = ""
    experiment: str = ""  # MLflow experiment; default cast-<dataset>
    registered_model: str = ""  # default cast-<dataset>
    storage_path: str = ""  # Ray Train storage; parse_config's default: <repo>/data/ray_results
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: epoch ends only)
    keep_checkpoints: int = 2  # best k by validation top-1 (the latest is always kept too)
    max_failures: int = 1
    # Seconds to wait for the cluster to offer the requested CPUs/GPUs (an autoscaler adding nodes)
    # before giving up; 0: fail at once when they are not there.
    resource_timeout_s: float = 600.0
    log_every: int = 1  # optimizer steps between MLflow step metrics
    seed: int = 0
    register: bool = True
    # True: the run must be resumed (both the checkpoint and the tracking store hold it), else exit 2.
    # False: resume when both hold it, start afresh (and say so) when one lacks it.
    resume: bool = False
    # Test-only: rank 1 ends its process with os._exit(1) at this global optimizer step, once per run
    # (a marker file in the run folder keeps the restarted worker alive). Exercises FailureConfig.
    fault_kill_step: int | None = None
    # Filled by :func:`resolve` from the shards (label maps) and the cluster (gpus_per_worker).
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

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
        typed = {k: coerce(k, v, hints[k], sources.get(k, "")) for k, v in values.items()}
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


# -- types -------------------------------------------------------------------------------------------------
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def field_types() -> dict[str, Any]:
    """TrainConfig field -> its (evaluated) type annotation."""
    return typing.get_type_hints(TrainConfig)


def type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


def coerce(key: str, value: Any, hint: Any, source: str = "") -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, ``X | None``, ``tuple[float, float]``, dict), or
    a :class:`TrainConfigError` naming ``key``. Lossless conversions only: "1e-3" -> 0.001, 5.0 -> 5,
    "true" -> True; 5.5 -> int and 3 -> str are errors."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(key, value, inner, source)
    try:
        return _coerce(value, hint, args)
    except (TypeError, ValueError):
        where = f" (from {source})" if source else ""
        raise TrainConfigError(f"{key}: expected {type_name(hint)}, got {value!r}{where}") from None


def _coerce(value: Any, hint: Any, args: tuple) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif hint is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        number = float(value) if isinstance(value, (float, str)) else math.nan
        if number.is_integer():
            return int(number)
    elif hint is float and not isinstance(value, bool):
        if isinstance(value, (int, float, str)):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(_coerce(v, a, typing.get_args(a)) for v, a in zip(value, args))
    elif typing.get_origin(hint) is dict and isinstance(value, dict):
        return value
    raise TypeError(value)


# -- YAML recipes ---------------------------------------------------------------------------------------
def recipe_layers(dataset: str, preset: str | None, config_dir: Path = CONFIG_DIR) -> list[tuple[str, dict[str, Any]]]:
    """``[("recipe", values), ("preset", values)]`` of ``configs/<dataset>.yaml``, in precedence order."""
    if dataset not in DATASETS:
        raise TrainConfigError(f"unknown dataset {dataset!r}; datasets: {list(DATASETS)}")
    path = Path(config_dir) / f"{dataset}.yaml"
    if not path.is_file():
        raise TrainConfigError(f"recipe {path} is missing")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("recipe"), dict):
        raise TrainConfigError(f"{path}: expected a mapping with a 'recipe' section")
    if doc.get("dataset") != dataset:
        raise TrainConfigError(f"{path} describes dataset {doc.get('dataset')!r}, not {dataset!r}")
    layers = [(f"recipe {path.name}", {"dataset": dataset, "head": doc.get("head", "single"), **doc["recipe"]})]
    if preset is not None:
        overlay = (doc.get("presets") or {}).get(preset) or {}
        if not isinstance(overlay, dict):
            raise TrainConfigError(f"{path}: presets.{preset} must be a mapping")
        layers.append((f"preset {preset} of {path.name}", {**overlay, "preset": preset}))
    return layers


def load_recipe(dataset: str, preset: str | None, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """``recipe`` of ``configs/<dataset>.yaml`` with ``presets.<preset>`` applied on top."""
    values: dict[str, Any] = {}
    for _, layer in recipe_layers(dataset, preset, config_dir):
        values.update(layer)
    return values


# -- command line -----------------------------------------------------------------------------------------
# Fields that are no flag: fixed by the entry point, the recipe, the shards, or tests.
NO_FLAG = ("dataset", "head", "shards", "val_shards", "labels", "fault_kill_step")
CHOICES: dict[str, tuple[str, ...]] = {"preset": tuple(sorted(PRESETS)), "precision": PRECISIONS,
                                       "sampling": SAMPLINGS}
FLAG_HELP: dict[str, str] = {
    "train_split": "shard split to train on (<split>-NNNNNN.tar)",
    "val_split": "shard split to validate on",
    "preset": "model size (cast_model presets); a recipe preset of the same name overlays the recipe",
    "drop_path": "stochastic depth rate",
    "head_drop": "dropout before the classification head",
    "init_scale": "scale of the head's initial weights",
    "grad_checkpointing": "recompute activations in the backward pass (less memory, more compute)",
    "freeze_experts": "train only adapters, B-CAST and heads (the paper); --no-freeze-experts: train everything",
    "clip_weights": "CLIP ViT-B/16 expert weights (safetensors or .pt) to start from",
    "videomae_weights": "VideoMAE expert weights to start from",
    "init_checkpoint": "an official CAST release checkpoint (all weights) to start from",
    "epochs": "training epochs",
    "batch_size": "clips per worker per forward pass",
    "total_batch_size": "clips per optimizer step over all workers and accumulation steps",
    "base_lr": "learning rate per 256 clips (lr = base_lr * total_batch_size / 256)",
    "min_lr": "cosine schedule's final learning rate",
    "warmup_lr": "learning rate at the start of the warm-up",
    "warmup_epochs": "linear warm-up length in epochs (fractions allowed)",
    "weight_decay": "AdamW weight decay (none on biases, norms, position tables)",
    "layer_decay": "layer-wise learning-rate decay, in (0, 1]",
    "betas": "AdamW betas (two values)",
    "opt_eps": "AdamW epsilon",
    "clip_grad": "gradient-norm clipping; none: no clipping",
    "label_smoothing": "label smoothing, in [0, 1]",
    "mixup": "mixup alpha (0: off)",
    "cutmix": "cutmix alpha (0: off)",
    "mixup_prob": "probability of mixing a batch, in [0, 1]",
    "mixup_switch_prob": "probability of cutmix instead of mixup when both are on, in [0, 1]",
    "precision": "arithmetic: auto (bf16 autocast on GPUs and on CPUs where bf16 matmuls measure faster, else fp32), bf16, fp16 (GPU), fp32",
    "sampling": "frame sampling: uniform (one frame per segment) or dense (a stride)",
    "sampling_rate": "dense sampling stride",
    "hflip": "random horizontal flips (never for SSV2: left/right are classes)",
    "rand_augment": "RandAugment, the same ops on every frame of a clip",
    "rand_augment_n": "RandAugment ops per clip",
    "rand_augment_m": "RandAugment magnitude, of 10",
    "crop_scale_min": "random resized crop: smallest area fraction kept, in (0, 1]",
    "test_clips": "temporal views per video at validation",
    "test_crops": "spatial views per clip at validation (1: centre, 3: left/centre/right)",
    "loader_threads": "DALI threads per worker",
    "shuffle_buffer": "DALI reader's shuffle buffer, in samples",
    "num_workers": "Ray Train workers",
    "gpus_per_worker": "GPUs per worker; none: 1 when the cluster has one per worker, else 0",
    "cpus_per_worker": "CPUs per worker",
    "run_name": "run name (Ray Train and MLflow); the same name resumes the run; default <dataset>-<preset>-<time>",
    "experiment": "MLflow experiment; default cast-<dataset>",
    "registered_model": "registered model name; default cast-<dataset>",
    "storage_path": "Ray Train storage (absolute path or URI visible to every node); default <repo>/data/ray_results",
    "resource_timeout_s": "seconds to wait for the requested CPUs/GPUs (an autoscaler adding nodes) before giving up",
    "checkpoint_every": "also checkpoint every N optimizer steps (0: at epoch ends only)",
    "keep_checkpoints": "checkpoints kept, best by validation top-1 (the latest is kept too)",
    "max_failures": "worker failures Ray Train recovers from",
    "log_every": "optimizer steps between MLflow step metrics",
    "seed": "random seed",
    "register": "register the best checkpoint in the MLflow Model Registry",
    "resume": "--resume: the run must resume (both the checkpoint and the tracking store hold it) or exit 2; "
              "--no-resume: resume when both hold it, else start afresh and say so",
}


class _FlagType:
    """argparse ``type=`` of a field: :func:`coerce` from text, with ``none`` for optional fields."""

    def __init__(self, name: str, hint: Any):
        self.name, self.hint = name, hint
        self.__name__ = type_name(hint)

    def __call__(self, text: str) -> Any:
        if text.lower() in ("none", "null") and type(None) in typing.get_args(self.hint):
            return None
        try:
            return coerce(self.name, text, self.hint, "flag")
        except TrainConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


def build_parser(dataset: str) -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field (but :data:`NO_FLAG`), typed from the field, with help and
    choices. Flags have no default: an absent flag keeps the recipe's (or the dataclass's) value."""
    p = argparse.ArgumentParser(
        prog=f"train_{dataset}.py", argument_default=argparse.SUPPRESS,
        description=f"Fine-tune CAST on {dataset} with Ray Train, tracked in MLflow. Values come from the "
                    f"TrainConfig defaults < configs/{dataset}.yaml (the paper's recipe) < its preset < flags; "
                    f"--print-config shows each resolved value and its source.")
    p.add_argument("--shards", required=True, help="folder of training shards")
    p.add_argument("--val-shards", required=True, help="folder of validation shards")
    p.add_argument("--config-dir", default=str(CONFIG_DIR), help="folder holding <dataset>.yaml")
    p.add_argument("--print-config", action="store_true", default=False,
                   help="print the resolved config with each value's source and exit (nothing starts)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in NO_FLAG:
            continue
        hint = field_types()[f.name]
        flag, text = "--" + f.name.replace("_", "-"), FLAG_HELP.get(f.name, "(undocumented)")
        if hint is bool:  # --x / --no-x, as in every CLI
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
            continue
        kind = _FlagType(f.name, typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint)
        p.add_argument(flag, dest=f.name, type=kind, choices=CHOICES.get(f.name),
                       nargs=len(typing.get_args(hint)) if typing.get_origin(hint) is tuple else None, help=text)
    return p


@dataclass(frozen=True)
class ParsedConfig:
    config: TrainConfig
    sources: dict[str, str]  # field -> "default", "recipe <file>", "preset <name> of <file>", "flag"
    print_config: bool


def parse_config(dataset: str, argv: Sequence[str] | None = None) -> ParsedConfig:
    """Flags over the dataset's recipe -> an unresolved, typed :class:`TrainConfig` and where each value
    came from. A wrong type is a :class:`TrainConfigError` naming the key and its source."""
    parser = build_parser(dataset)
    args = vars(parser.parse_args(argv))
    config_dir, print_config = Path(args.pop("config_dir")), args.pop("print_config")
    layers = recipe_layers(dataset, args.get("preset"), config_dir) + [("flag", args)]
    values: dict[str, Any] = {}
    sources = {f.name: "default" for f in dataclasses.fields(TrainConfig)}
    for source, layer in layers:
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))
    if not values.get("storage_path"):  # computed here, at the edge, not at import as a field default
        values["storage_path"] = str(DATA_DIR / "ray_results")
    return ParsedConfig(TrainConfig.from_dict(values, sources), sources, print_config)


def config_from_args(dataset: str, argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse flags over the dataset's recipe -> an unresolved :class:`TrainConfig`."""
    return parse_config(dataset, argv).config


def format_config(cfg: TrainConfig, sources: dict[str, str]) -> str:
    """One line per field: name, value, source."""
    values = cfg.to_dict()
    width = max(map(len, values))
    return "\n".join(f"{k:<{width}}  {json.dumps(v) if k != 'labels' else '(from the shards)':<24}  "
                     f"{sources.get(k, 'default')}" for k, v in values.items())


# -- validation -----------------------------------------------------------------------------------------
def shard_files(folder: str | Path, split: str) -> list[Path]:
    return sorted(Path(folder).glob(f"{split}-*.tar"))


def read_label_map(folder: str | Path) -> dict[str, dict[str, str]]:
    """The shards' ``classes.json`` (:func:`pipelines.manifest.read_label_map`), its problems as
    :class:`TrainConfigError`."""
    try:
        return manifest.read_label_map(folder)
    except LabelMapError as err:
        raise TrainConfigError(str(err)) from err


def validate(cfg: TrainConfig) -> None:
    """Every check that needs no cluster: fields, sizes, paths, shards, label maps. Problems are reported
    together, a stage at a time (later stages read what earlier ones checked)."""
    for stage in ((_field_problems,), (_size_and_path_problems, _shard_problems)):
        problems = [problem for check in stage for problem in check(cfg)]
        if problems:
            raise TrainConfigError("invalid training config: " + "; ".join(problems))
    _check_label_maps(cfg)


def _field_problems(cfg: TrainConfig) -> list[str]:
    """Each field on its own: known names, ranges, absolute paths."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(cfg.dataset in DATASETS, f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    need(cfg.head in HEADS, f"head must be one of {sorted(HEADS)}, got {cfg.head!r}")
    need(cfg.preset in PRESETS, f"unknown preset {cfg.preset!r}; presets: {sorted(PRESETS)}")
    need(cfg.sampling in SAMPLINGS, f"sampling must be one of {SAMPLINGS}, got {cfg.sampling!r}")
    need(cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    for name in ("epochs", "batch_size", "total_batch_size", "num_workers", "test_clips", "test_crops",
                 "loader_threads", "sampling_rate", "keep_checkpoints", "log_every", "shuffle_buffer",
                 "rand_augment_n"):
        need(isinstance(getattr(cfg, name), int) and getattr(cfg, name) > 0,
             f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    for name in ("checkpoint_every", "max_failures"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("base_lr", "cpus_per_worker"):
        need(getattr(cfg, name) > 0, f"{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in ("min_lr", "warmup_lr", "warmup_epochs", "weight_decay", "mixup", "cutmix", "opt_eps"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("label_smoothing", "mixup_prob", "mixup_switch_prob"):
        need(0.0 <= getattr(cfg, name) <= 1.0, f"{name} must lie in [0, 1], got {getattr(cfg, name)!r}")
    need(0.0 < cfg.crop_scale_min <= 1.0, f"crop_scale_min must lie in (0, 1], got {cfg.crop_scale_min!r}")
    need(0 <= cfg.rand_augment_m <= 10, f"rand_augment_m must lie in [0, 10], got {cfg.rand_augment_m!r}")
    need(0.0 < cfg.layer_decay <= 1.0, f"layer_decay must lie in (0, 1], got {cfg.layer_decay!r}")
    need(0.0 <= cfg.drop_path < 1.0, f"drop_path must lie in [0, 1), got {cfg.drop_path!r}")
    need(len(cfg.betas) == 2 and all(0.0 <= b < 1.0 for b in cfg.betas), f"betas must be two values in [0, 1)")
    need(cfg.clip_grad is None or cfg.clip_grad > 0, f"clip_grad must be > 0 or None, got {cfg.clip_grad!r}")
    need(cfg.gpus_per_worker is None or cfg.gpus_per_worker >= 0,
         f"gpus_per_worker must be >= 0, got {cfg.gpus_per_worker!r}")
    need(bool(cfg.run_name) and "/" not in cfg.run_name, f"run_name must be a non-empty name without '/', "
         f"got {cfg.run_name!r}")
    need(not ("'" in cfg.run_name and '"' in cfg.run_name),
         f"run_name must not hold both ' and \" (MLflow filters cannot match it), got {cfg.run_name!r}")
    need(is_uri(cfg.storage_path) or Path(cfg.storage_path).is_absolute(),
         f"storage_path must be an absolute path or a URI such as s3://bucket/prefix (Ray workers change "
         f"their working directory), got {cfg.storage_path!r}")
    need(cfg.resource_timeout_s >= 0, f"resource_timeout_s must be >= 0, got {cfg.resource_timeout_s!r}")
    for name in ("shards", "val_shards"):
        need(not is_uri(getattr(cfg, name)), f"{name} {getattr(cfg, name)}: the DALI loaders read local files, "
             f"not URIs; copy the shards to a folder every node mounts and pass that folder")
    return problems


def _size_and_path_problems(cfg: TrainConfig) -> list[str]:
    """Fields together: batch arithmetic, the weights to start from."""
    problems: list[str] = []
    # Batch arithmetic: the total batch must split evenly into workers x micro-batches.
    per_step = cfg.batch_size * cfg.num_workers
    if cfg.total_batch_size % per_step:
        problems.append(
            f"total_batch_size {cfg.total_batch_size} is not divisible by batch_size {cfg.batch_size} x "
            f"num_workers {cfg.num_workers} = {per_step} (it sets the gradient accumulation steps)")
    if cfg.mixup_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        problems.append(f"batch_size {cfg.batch_size} must be even while mixup/cutmix is on (it mixes "
                        f"each clip with its mirror in the batch)")

    for name in ("clip_weights", "videomae_weights", "init_checkpoint"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"{name}: {path} does not exist")
    if cfg.init_checkpoint and (cfg.clip_weights or cfg.videomae_weights):
        problems.append("init_checkpoint already holds the experts: drop clip_weights/videomae_weights")
    return problems


def _shard_problems(cfg: TrainConfig) -> list[str]:
    """The shard folders: tars of the split, their DALI indices, classes.json."""
    problems: list[str] = []
    for name, split in (("shards", cfg.train_split), ("val_shards", cfg.val_split)):
        folder = Path(getattr(cfg, name))
        if not folder.is_dir():
            problems.append(f"{name}: {folder} is not a folder")
            continue
        tars = shard_files(folder, split)
        if not tars:
            problems.append(f"{name}: no '{split}-*.tar' shards in {folder}")
        missing_idx = [t.name for t in tars if not t.with_suffix(".idx").is_file()]
        if missing_idx:
            problems.append(f"{name}: shards without a DALI .idx file: {missing_idx[:5]}")
        if not (folder / CLASSES_FILE).is_file():
            problems.append(f"{name}: {CLASSES_FILE} is missing in {folder}")
    return problems


def _check_label_maps(cfg: TrainConfig) -> None:
    """The shards' label maps against each other, the recipe's heads and the config; the model buildable."""
    train_labels, val_labels = read_label_map(cfg.shards), read_label_map(cfg.val_shards)
    if set(train_labels) != set(cfg.heads):
        raise TrainConfigError(f"{cfg.shards}/classes.json has heads {sorted(train_labels)}; the {cfg.dataset} "
                               f"recipe trains heads {list(cfg.heads)}")
    if train_labels != val_labels:
        raise TrainConfigError(f"the label maps of {cfg.shards} and {cfg.val_shards} differ")
    for head, names in train_labels.items():
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))) or len(ids) < 2:
            raise TrainConfigError(f"classes.json head '{head}' must name classes 0..C-1 (C >= 2)")
    if cfg.labels and cfg.labels != train_labels:
        raise TrainConfigError("labels in the config differ from the shards' classes.json")
    # The model must be buildable with these sizes (catches e.g. a preset override that breaks it).
    dataclasses.replace(cfg, labels=train_labels).model_config()


def resolve(cfg: TrainConfig, cluster_gpus: float, cluster_cpus: float) -> TrainConfig:
    """Fill the label maps and the GPU count, and check the request fits the cluster."""
    validate(cfg)
    gpus = cfg.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if cluster_gpus >= cfg.num_workers else 0.0
    if gpus * cfg.num_workers > cluster_gpus:
        raise TrainConfigError(f"{cfg.num_workers} workers x {gpus:g} GPUs requested, the Ray cluster has "
                               f"{cluster_gpus:g} GPUs")
    if cfg.cpus_per_worker * cfg.num_workers > cluster_cpus:
        raise TrainConfigError(f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs requested, the Ray "
                               f"cluster has {cluster_cpus:g} CPUs")
    return dataclasses.replace(cfg, gpus_per_worker=gpus, labels=read_label_map(cfg.shards))


def steps_per_epoch(batches_per_epoch: int, update_freq: int) -> int:
    """Optimizer steps in an epoch of ``batches_per_epoch`` micro-batches (a partial last group of
    micro-batches is dropped, as a DataLoader with ``drop_last`` would)."""
    return batches_per_epoch // update_freq


def warmup_steps(cfg: TrainConfig, steps_in_epoch: int) -> int:
    return int(math.ceil(cfg.warmup_epochs * steps_in_epoch))
