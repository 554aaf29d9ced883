"""Small real datasets and shards for the pipelines tests (VP9 / H.264 written by PyAV).

``shards_without_ray`` builds shards with the job's own per-video and per-shard functions, minus Ray,
so the loader tests do not pay for a Ray start-up.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.datasets import read_dataset
from pipelines.encode import EncodeConfig
from pipelines.manifest import consolidate, write_label_map
from pipelines.preprocess_job import _Work, process_row, write_shard
from pipelines.schema import CODECS, shard_name
from pipelines.synthetic import SynthConfig, write_dataset

# Tiny but real: 8 classes x 3 training videos, 16 frames at 48 px (a few seconds to write).
SMALL = dict(num_classes=8, videos_per_class=3, size=48, frames=16, fps=8.0)


def make_dataset(dataset: str, root: Path, bad: int = 0, **overrides) -> dict:
    cfg = SynthConfig(dataset=dataset, bad=bad, **(SMALL | overrides))
    return write_dataset(cfg, root / dataset)


def ssv2_train_val_shards(root: Path, videos_per_class: int, num_classes: int = 4) -> Path:
    """A synthetic SSV2 dataset under ``root/native`` and its train and validation shards (4 samples
    each, no Ray) in ``root/shards``, the training tests' input."""
    data = make_dataset("ssv2", root / "native", num_classes=num_classes, videos_per_class=videos_per_class)
    out = root / "shards"
    for split in ("train", "validation"):
        shards_without_ray("ssv2", data["videos"], data["annotations"], split, out, per_shard=4)
    return out


def shards_without_ray(dataset: str, videos: str, annotations: str, split: str, out: Path,
                       per_shard: int = 4, short_side: int = 40, codec: str = "vp9") -> None:
    listing = read_dataset(dataset, videos, annotations, split)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "classes.json").exists():
        write_label_map(str(out), listing.label_map)
    work = _Work(short_side, None, EncodeConfig(codec=codec), "cpu", 2, listing.heads)
    done = [r for r in (process_row(row.to_record(), work) for row in listing.rows) if not r["reason"]]
    for i in range(0, len(done), per_shard):
        write_shard(str(out), split, shard_name(split, i // per_shard), done[i:i + per_shard], listing.heads,
                    CODECS[codec][2])
    consolidate(str(out))
