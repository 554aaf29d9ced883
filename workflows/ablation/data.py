"""A task's clips, made once and held in memory: synthetic SSV2-layout videos -> shards (the project's
preprocessing) -> one centre clip per video decoded by the project's loader -> numpy arrays.

Every trial of the ablation trains and tests on the same decoded clips, put once in Ray's object store;
a trial never decodes video. Made files are cached under ``<data_dir>/<task>-<sizes>-<task id>/`` (one
folder per task, data settings and task definition with its objects, ``made.json`` says which) and reused, so a rerun
skips straight to training and a run with other data settings or other objects makes its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SPLITS = ("train", "validation", "heldout")  # heldout: the test split, rendered from another seed
FRAMES = 24  # frames per synthetic video (the demo's), sampled down to the model's num_frames


@dataclass(frozen=True)
class Clips:
    """One split: (n, 3, F, S, S) float16 normalised clips and (n,) int64 labels."""

    video: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


@dataclass(frozen=True)
class TaskData:
    task: str
    class_names: list[str]
    train: Clips
    validation: Clips
    test: Clips


def _made(root: Path, wanted: dict) -> bool:
    marker = root / "made.json"
    if not marker.is_file():
        return False
    made = json.loads(marker.read_text())
    if made != wanted:
        raise FileExistsError(f"{root} holds data made with {made}, this run wants {wanted}: remove the folder "
                              f"or pass another --data-dir")
    return True


def write_shards(task: str, root: Path, num_classes: int, videos_per_class: int, heldout_per_class: int,
                 size: int, seed: int, log: Callable[[str], None]) -> Path:
    """The task's SSV2-layout videos and their shards under ``root`` (made once); returns the shards."""
    from pipelines.preprocess_job import PreprocessConfig, run_preprocess
    from pipelines.synthetic import SynthConfig, write_dataset

    wanted = {"task": task, "num_classes": num_classes, "videos_per_class": videos_per_class,
              "heldout_per_class": heldout_per_class, "size": size, "seed": seed, "frames": FRAMES}
    shards = root / "shards"
    if _made(root, wanted):
        return shards
    log(f"[data] {task}: writing {num_classes} classes x {videos_per_class} training videos (+ validation, + "
        f"{heldout_per_class} held-out per class from another seed), {size}px, to {root}")
    paths = write_dataset(SynthConfig(dataset="ssv2", task=task, num_classes=num_classes,
                                      videos_per_class=videos_per_class, heldout_per_class=heldout_per_class,
                                      size=size, frames=FRAMES, seed=seed), root / "videos")
    for split in SPLITS:
        result = run_preprocess(PreprocessConfig(dataset="ssv2", videos=paths["videos"], annotations=paths["annotations"],
                                                 split=split, out=str(shards), short_side=size,
                                                 max_samples_per_shard=32, progress_every=30.0))
        if result.rejected:
            raise RuntimeError(f"{result.rejected} synthetic {split} videos of {task} were rejected: see "
                               f"{shards}/rejects.parquet")
    (root / "made.json").write_text(json.dumps(wanted))
    return shards


def decode_split(shards: Path, split: str, num_frames: int, img_size: int) -> Clips:
    """Every sample of ``split`` once: uniform frame sampling, the centre crop (the recipe's test view)."""
    import torch

    from pipelines.loader import LoaderConfig, eval_loader

    cfg = LoaderConfig(num_frames=num_frames, img_size=img_size, sampling="uniform", rand_augment=False,
                       batch_size=32, num_threads=2, eval_clips=1, eval_crops=1)
    videos, labels = [], []
    for batch in eval_loader(str(shards), split=split, cfg=cfg):
        videos.append(batch["video"][:, 0].to(torch.float16).numpy())  # (B, 3, F, S, S)
        labels.append(batch["label"].numpy())
    return Clips(np.concatenate(videos), np.concatenate(labels).astype(np.int64))


def load_task(task: str, data_dir: str | Path, num_classes: int, videos_per_class: int, heldout_per_class: int,
              num_frames: int, img_size: int, seed: int, log: Callable[[str], None] = print) -> TaskData:
    """The task's three splits in memory, decoded at the model's geometry (cached as .npz beside the
    shards: plain arrays, read without pickles)."""
    from pipelines.manifest import read_label_map
    from pipelines.synthetic_tasks import class_name, task_id

    size = max(32, img_size + img_size % 2)  # the synthetic writer's smallest frame
    # the task's digest in the name: clips of other objects or another task definition are another folder
    root = Path(data_dir) / f"{task}-{videos_per_class}v{heldout_per_class}h-{size}px-seed{seed}-{task_id(task)}"
    shards = write_shards(task, root, num_classes, videos_per_class, heldout_per_class, size, seed, log)
    names = read_label_map(str(shards))["label"]
    cache = root / f"clips-{num_frames}x{img_size}.npz"
    if not cache.is_file():
        log(f"[data] {task}: decoding {', '.join(SPLITS)} at {num_frames} frames x {img_size}px")
        splits = {s: decode_split(shards, s, num_frames, img_size) for s in SPLITS}
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"{s}_{k}": getattr(c, k) for s, c in splits.items() for k in ("video", "label")})
        tmp.replace(cache)
    ours = [class_name(c, task).lower() for c in range(num_classes)]
    theirs = [names[str(i)].lower() for i in range(len(names))]
    if theirs != ours:  # appearance and motion labels are read from the class id: the ids must be the task's
        raise RuntimeError(f"{shards}: class ids do not follow task {task!r}'s numbering: {theirs[:3]} vs {ours[:3]}")
    with np.load(cache, allow_pickle=False) as z:
        splits = {s: Clips(z[f"{s}_video"], z[f"{s}_label"]) for s in SPLITS}
    return TaskData(task, [names[str(i)] for i in range(len(names))], splits["train"], splits["validation"],
                    splits["heldout"])
