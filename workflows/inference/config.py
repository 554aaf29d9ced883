"""The configurations of inference: the batch job's (:class:`InferConfig`, checked before Ray or a model is
touched), a few videos' in one process (:class:`PredictConfig`), the REST server's (:class:`ServeConfig`)
and its request file's (:class:`RequestConfig`), and the checkpoints' way in: the contract stamped into
one (:class:`StampConfig`) and a release registered (:class:`RegisterConfig`). Each field carries its
command-line help: the doors in ``workflows/`` build their flags from them (``workflows.cli.flags``).
None of them touches a file when it is made, except :class:`InferConfig`, which checks its input paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cast_model.config import PRESETS
from cast_model.precision import PRECISIONS
from cast_model.vocab import DATASETS, SAMPLINGS
from pipelines.datasets import LAYOUTS

from ..cli.flags import flag

DEVICES = ("auto", "cpu", "gpu")
_MODEL_HELP = ("models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model, any MLflow model URI, or a local "
               "checkpoint folder")
_PRECISION_HELP = "auto: bf16 autocast on GPUs and on CPUs where bf16 matmuls measure faster, else fp32"
_IN, _VIEWS, _RUN, _POOL, _OUT = "input", "views per video", "model run", "actor pool", "output"
_RECIPE = "the recipe's"


def _view(help: str, none: str = "the checkpoint's", **kw) -> Any:
    """A view override: ``None``, the checkpoint's (its training contract), or for a stamp the recipe's."""
    return field(default=None, metadata=flag(help, group=_VIEWS, none=none, **kw))


class InferConfigError(ValueError):
    """A batch-inference configuration that cannot run; raised before any work starts."""


@dataclass(frozen=True)
class InferConfig:
    model: str = field(metadata=flag(_MODEL_HELP, group=_IN))
    input: str = field(metadata=flag("shard folder, folder of videos, file list, or a native layout's video folder",
                                     group=_IN))
    out: str = field(metadata=flag("output folder or URI (predictions/ and rejects.parquet live here)", group=_OUT))
    dataset: str | None = field(default=None, metadata=flag(
        "read --input in this native layout (with --annotations, --split)", choices=LAYOUTS, group=_IN,
        none="shards, a folder or a file list"))
    annotations: str | None = field(default=None, metadata=flag(
        "with --dataset: the ssv2 labels folder, else the CSV/list file", group=_IN, none="none"))
    split: str | None = field(default=None, metadata=flag(
        "native layout: the split to read; shards: only this split", group=_IN, none="every split"))
    # Views per video; None: the checkpoint's (its contract, written by training).
    test_clips: int | None = _view("temporal views per video", metavar="N")
    test_crops: int | None = _view("spatial views per clip (1: centre, 3: left/centre/right)", choices=(1, 3))
    sampling: str | None = _view("frame sampling", choices=SAMPLINGS)
    sampling_rate: int | None = _view("dense sampling stride")
    decode_device: str = field(default="cpu", metadata=flag(
        "where the views are decoded (gpu: DALI's NVDEC decoder)", choices=("cpu", "gpu"), group=_VIEWS))
    batch_size: int = field(default=8, metadata=flag("videos per model forward (x views clips)", group=_RUN))
    top_k: int = field(default=5, metadata=flag("classes kept per video (per head)", group=_OUT))
    device: str = field(default="auto", metadata=flag(
        "model device: auto = GPU when the cluster has one now; gpu = ask Ray for GPUs and wait for them (an "
        "autoscaler adds GPU nodes)", choices=DEVICES, group=_RUN))
    precision: str = field(default="auto", metadata=flag(_PRECISION_HELP, choices=PRECISIONS, group=_RUN))
    num_replicas: int | None = field(default=None, metadata=flag(
        "a fixed number of model actors", group=_POOL, none="--min-replicas..--max-replicas"))
    gpus_per_replica: float = field(default=1.0, metadata=flag("GPUs each model actor asks Ray for (on GPU)",
                                                               group=_POOL))
    min_replicas: int = field(default=1, metadata=flag("model actor pool: at least this many", group=_POOL))
    max_replicas: int | None = field(default=None, metadata=flag(
        "model actor pool: at most this many", group=_POOL, none="the GPUs the cluster has now, >= 1"))
    retry_rejects: bool = field(default=False, metadata=flag("try the videos in rejects.parquet again", group=_IN))
    eval: bool = field(default=True, metadata=flag(
        "evaluate when the input has labels (--no-eval: predict only)", group=_OUT))
    experiment: str = field(default="cast-evaluation", metadata=flag("MLflow experiment of the evaluation runs",
                                                                     group=_OUT))
    flush_rows: int = field(default=256, metadata=flag("predictions per Parquet part (also flushed every flush_s)",
                                                       group=_OUT))
    flush_s: float = field(default=60.0, metadata=flag("seconds between flushes of a part", cli=False))
    progress_every: float = field(default=10.0, metadata=flag("seconds between progress lines", group=_RUN))
    lease_wait: float = field(default=0.0, metadata=flag(
        "seconds to wait for another job writing into --out before giving up (exit 2)", group=_OUT))
    allow_outside_links: bool = field(default=False, metadata=flag(
        "follow symlinks that lead out of an --input folder (refused as outside_root by default)", group=_IN))

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.model:
            problems.append("--model is empty")
        elif ":/" not in self.model and not Path(self.model).is_dir():
            problems.append(f"--model {self.model!r} is neither an MLflow URI (models:/..., runs:/...) nor a folder")
        if not self.out:
            problems.append("--out is empty")
        if self.dataset is not None:
            if self.dataset not in LAYOUTS:
                problems.append(f"--dataset must be one of {LAYOUTS}, got {self.dataset!r}")
            if not Path(self.input).is_dir():
                problems.append(f"--input {self.input!r} must be the dataset's video folder")
            if not self.annotations:
                problems.append(f"--dataset {self.dataset} needs --annotations")
            elif not Path(self.annotations).exists():
                problems.append(f"--annotations {self.annotations!r} does not exist")
            if self.dataset == "ssv2" and not self.split:
                problems.append("--dataset ssv2 needs --split (the <split>.json to read)")
        elif self.annotations:
            problems.append("--annotations needs --dataset (the layout to read it as)")
        if "://" in self.input:  # an object-store shard folder: listed (and checked) by inputs.list_inputs
            if self.dataset is not None:
                problems.append(f"--dataset reads a local video folder; --input {self.input!r} is a URI")
        elif not Path(self.input).exists():
            problems.append(f"--input {self.input!r} does not exist")
        for name in ("test_clips", "test_crops", "sampling_rate"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.test_crops is not None and self.test_crops not in (1, 3):
            problems.append(f"test_crops must be 1 (centre) or 3 (left/centre/right), got {self.test_crops}")
        if self.sampling is not None and self.sampling not in SAMPLINGS:
            problems.append(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.batch_size < 1 or self.top_k < 1 or self.flush_rows < 1:
            problems.append("batch_size, top_k and flush_rows must be >= 1")
        if self.num_replicas is not None and self.num_replicas < 1:
            problems.append(f"num_replicas must be >= 1, got {self.num_replicas}")
        if not 0 < self.gpus_per_replica <= 8:
            problems.append(f"gpus_per_replica must lie in (0, 8], got {self.gpus_per_replica!r}")
        if self.min_replicas < 1 or (self.max_replicas is not None and self.max_replicas < self.min_replicas):
            problems.append(f"replicas must satisfy 1 <= min_replicas <= max_replicas, got "
                            f"{self.min_replicas}..{self.max_replicas}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.decode_device not in ("cpu", "gpu"):
            problems.append(f"decode_device must be 'cpu' or 'gpu', got {self.decode_device!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (self.lease_wait >= 0 and self.flush_s > 0 and self.progress_every >= 0):
            problems.append("lease_wait and progress_every must be >= 0, flush_s > 0")
        if problems:
            raise InferConfigError("invalid batch-inference config:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class PredictConfig:
    """A few videos classified in this process (``cast-predict``): no Ray, no output folder."""

    videos: tuple[str, ...] = field(metadata=flag("video files (any container PyAV or DALI reads)", positional=True,
                                                  metavar="VIDEO"))
    model: str = field(metadata=flag(_MODEL_HELP))
    top_k: int = field(default=5, metadata=flag("classes listed per video (per head)"))
    json: bool = field(default=False, metadata=flag("one JSON object per video on stdout instead of a table"))
    test_clips: int | None = _view("temporal views per video", metavar="N")
    test_crops: int | None = _view("spatial views per clip (1: centre, 3: left/centre/right)", choices=(1, 3))
    sampling: str | None = _view("frame sampling", choices=SAMPLINGS)
    sampling_rate: int | None = _view("dense sampling stride")
    device: str = field(default="auto", metadata=flag("model device; auto: a GPU if there is one", choices=DEVICES))
    precision: str = field(default="auto", metadata=flag(_PRECISION_HELP, choices=PRECISIONS))

    def __post_init__(self) -> None:
        # Videos are not checked here: each bad one is a reject with its reason (workflows.predict).
        for name in ("top_k", "test_clips", "sampling_rate"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InferConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


@dataclass(frozen=True)
class ServeConfig:
    """A registered model served over HTTP (``cast-serve``)."""

    model: str = field(metadata=flag("models:/NAME@ALIAS, models:/NAME/VERSION or another MLflow model URI",
                                     positional=True, metavar="MODEL"))
    host: str = field(default="127.0.0.1", metadata=flag("address to listen on (0.0.0.0: every interface)"))
    port: int = field(default=5001, metadata=flag("port to listen on"))
    workers: int = field(default=1, metadata=flag("server worker processes (each loads the model)"))

    def __post_init__(self) -> None:
        if ":/" not in self.model:
            raise InferConfigError(f"MODEL {self.model}: not an MLflow model URI (models:/NAME@ALIAS); register a "
                                   f"checkpoint folder first with cast-register")
        if not 0 < self.port < 65536:
            raise InferConfigError(f"--port must be 1..65535, got {self.port}")
        if self.workers < 1:
            raise InferConfigError(f"--workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class RequestConfig:
    """The JSON request for a served model, written from video files (``cast-request``)."""

    videos: tuple[str, ...] = field(metadata=flag("video files (or, with --path, paths/URIs)", positional=True,
                                                  metavar="VIDEO"))
    path: bool = field(default=False, metadata=flag(
        "send the paths/URIs (column 'path', read by the server) instead of the files' bytes"))
    out: str = field(default="-", metadata=flag("file to write the request to ('-': stdout)", short="-o"))


@dataclass(frozen=True)
class StampConfig:
    """The training/inference contract written into a checkpoint that lacks it (``cast-stamp-checkpoint``);
    each view left ``None`` is the dataset's recipe's."""

    checkpoint: str = field(metadata=flag("checkpoint folder (cast.json + model.safetensors)", positional=True))
    dataset: str = field(metadata=flag("the dataset the model was trained on", choices=DATASETS))
    preset: str | None = field(default=None, metadata=flag(
        "the recipe preset it was trained with (its test views)", none="the recipe's own values"))
    sampling: str | None = _view("frame sampling", _RECIPE, choices=SAMPLINGS)
    sampling_rate: int | None = _view("dense sampling stride", _RECIPE)
    test_clips: int | None = _view("temporal views per video", _RECIPE, metavar="N")
    test_crops: int | None = _view("spatial views per clip (1: centre, 3: left/centre/right)", _RECIPE,
                                   choices=(1, 3))

    def views(self) -> dict[str, Any]:
        return {"sampling": self.sampling, "sampling_rate": self.sampling_rate, "test_clips": self.test_clips,
                "test_crops": self.test_crops}


@dataclass(frozen=True)
class RegisterConfig:
    """A checkpoint registered in the MLflow Model Registry (``cast-register``)."""

    checkpoint: str = field(metadata=flag(
        "the paper's released .pth, a checkpoint folder of ours (cast.json + model.safetensors), or a registered "
        "model (models:/NAME/VERSION) to register again with the current code", positional=True, metavar="CHECKPOINT"))
    dataset: str = field(metadata=flag("the dataset the checkpoint's head was trained on", choices=DATASETS))
    labels: str | None = field(default=None, metadata=flag(
        "the dataset's label file (ssv2: labels.json; k400: an annotation CSV; ek100: EPIC_100_train.csv with the "
        "class CSVs beside it); needed for a .pth", metavar="FILE", none="the checkpoint's own label map"))
    preset: str = field(default="base", metadata=flag("the model preset of a .pth", choices=sorted(PRESETS)))
    name: str | None = field(default=None, metadata=flag("registered model name", none="cast-<dataset>"))
    champion: bool = field(default=False, metadata=flag(
        "move the champion alias to this version even if one exists"))

    @property
    def registered_name(self) -> str:
        return self.name or f"cast-{self.dataset}"

    @property
    def is_registered(self) -> bool:
        """``checkpoint`` names a registered model (``models:/...``), not a file or folder."""
        return ":/" in self.checkpoint
