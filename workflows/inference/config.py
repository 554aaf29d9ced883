"""The batch-inference job's configuration: one dataclass, checked before Ray or a model is touched."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from types import SimpleNamespace
from pathlib import Path

from cast_model.precision import PRECISIONS
from cast_model.vocab import SAMPLINGS
from pipelines.datasets import LAYOUTS
DEVICES = ("auto", "cpu", "gpu")


class InferConfigError(ValueError):
    """A batch-inference configuration that cannot run; raised before any work starts."""


@dataclass(frozen=True)
class InferConfig:
    model: str  # models:/name@alias, models:/name/version, runs:/..., any MLflow model URI, or a folder
    input: str  # shard folder, folder of videos, file list, or a native layout's video folder
    out: str  # output folder or URI (predictions/ and rejects.parquet live here)
    dataset: str | None = None  # native layout of --input (with annotations/split), see pipelines.datasets
    annotations: str | None = None
    split: str | None = None  # native layout: the split to read; shards: only this split (None: all)
    # Views per video; None: the checkpoint's (its contract, written by training).
    test_clips: int | None = None
    test_crops: int | None = None
    sampling: str | None = None
    sampling_rate: int | None = None
    batch_size: int = 8  # videos per model forward (x views clips)
    top_k: int = 5
    num_replicas: int | None = None  # a fixed pool of model actors; None: min_replicas..max_replicas
    device: str = "auto"  # model device; "auto": GPU when the cluster has one now, "gpu": wait for one
    gpus_per_replica: float = 1.0  # GPUs each model actor asks Ray for (on GPU)
    min_replicas: int = 1  # actor pool lower bound (None num_replicas)
    max_replicas: int | None = None  # actor pool upper bound; None: the GPUs the cluster has now (>= 1)
    decode_device: str = "cpu"  # "gpu": DALI mixed decoding in the decode tasks
    precision: str = "auto"  # auto|bf16|fp16|fp32, resolved by cast_model.precision (auto: bf16 on GPUs and bf16-fast CPUs)
    retry_rejects: bool = False  # try inputs that are in rejects.parquet again
    evaluate: bool = True  # evaluation when labels are present
    experiment: str = "cast-evaluation"  # MLflow experiment of the evaluation runs
    flush_rows: int = 256  # predictions per Parquet part (also flushed every flush_s)
    flush_s: float = 60.0
    progress_every_s: float = 10.0
    lease_wait_s: float = 0.0  # another job writing into --out: wait this long for it, then exit 2

    @classmethod
    def defaults(cls) -> "SimpleNamespace":
        """The field defaults, for the CLI (one home for each default)."""
        return SimpleNamespace(**{f.name: f.default for f in fields(cls) if f.default is not MISSING})

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
        if not (self.lease_wait_s >= 0 and self.flush_s > 0 and self.progress_every_s >= 0):
            problems.append("lease_wait_s and progress_every_s must be >= 0, flush_s > 0")
        if problems:
            raise InferConfigError("invalid batch-inference config:\n  " + "\n  ".join(problems))
