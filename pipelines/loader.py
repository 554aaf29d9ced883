"""DALI loaders for the shards: training (random frames, augmentation) and multi-view evaluation.

One code path for CPU and GPU: ``cfg.device`` only switches the decoder backend (``cpu`` / ``mixed``)
and where the later operators run. Each rank reads a disjoint part of the samples
(``fn.readers.webdataset`` with ``shard_id=rank, num_shards=world_size``, split by sample index across
all tars); inside a rank, DALI's ``num_threads`` decode in parallel. Every epoch gets its own pipeline,
built from ``(seed, epoch)``: the tar order is permuted the same way on every rank (so ranks stay
disjoint and see different samples each epoch) and the shuffle buffer is seeded from it.

    loader = train_loader(out_dir, split="train", cfg=cfg, rank=r, world_size=w)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            batch["video"]  # (B, 3, T, S, S) float32, ImageNet-normalised, on cfg.device
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from cast_model.vocab import SAMPLINGS
from pipelines.manifest import read_label_map, shard_paths
from pipelines.sampling import CROP_POSITIONS, eval_indices, train_indices
from pipelines.schema import CODECS, META_EXT, NUM_FRAMES_EXT, labels_ext
from pipelines.shards import read_index

# ImageNet statistics, as the paper's code normalises (0-255 scale for DALI).
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_VIDEO_EXTS = {ext for _, _, ext, _ in CODECS.values()}


@dataclass(frozen=True)
class LoaderConfig:
    num_frames: int = 16
    img_size: int = 224
    sampling: str = "uniform"  # "uniform" (SSV2, EK100) or "dense" (K400)
    dense_stride: int = 4
    hflip: bool = False  # never for SSV2: left/right are classes
    rand_augment: bool = True
    ra_n: int = 2  # RandAugment ops per clip
    ra_m: int = 9  # magnitude, of ra_bins - 1 (9 of 10: timm's "rand-m9")
    ra_bins: int = 11
    # Resampling of RandAugment's translate/shear/rotate. "linear" follows the recipe; "nn" costs ~1/3
    # on DALI's CPU backend, where these warps dominate the loader's time (README figures).
    ra_interp: str = "linear"
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop area range
    rrc_ratio: tuple[float, float] = (0.75, 4 / 3)
    batch_size: int = 8
    shuffle_buffer: int = 512
    seed: int = 0
    num_threads: int = 2
    device: str = "cpu"  # "cpu" or "gpu"
    device_id: int | None = None  # GPU index; None: torch.cuda.current_device()
    prefetch: int = 2
    eval_clips: int = 1
    eval_crops: int = 3

    def __post_init__(self):
        errors = []
        if self.sampling not in SAMPLINGS:
            errors.append(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.device not in ("cpu", "gpu"):
            errors.append(f"device must be 'cpu' or 'gpu', got {self.device!r}")
        if self.device == "gpu" and not torch.cuda.is_available():
            errors.append("device='gpu' but CUDA is not available")
        if self.eval_crops not in (1, 3):
            errors.append(f"eval_crops must be 1 (centre) or 3 (left/centre/right), got {self.eval_crops}")
        if min(self.num_frames, self.img_size, self.batch_size, self.num_threads, self.eval_clips,
               self.dense_stride, self.shuffle_buffer, self.prefetch) < 1:
            errors.append("num_frames, img_size, batch_size, num_threads, eval_clips, dense_stride, "
                          "shuffle_buffer and prefetch must be >= 1")
        if self.ra_interp not in ("linear", "nn"):
            errors.append(f"ra_interp must be 'linear' or 'nn', got {self.ra_interp!r}")
        if not 0 <= self.ra_m < self.ra_bins:
            errors.append(f"ra_m must be in [0, ra_bins), got {self.ra_m} with {self.ra_bins} bins")
        if errors:
            raise ValueError("invalid loader config:\n  " + "\n  ".join(errors))

    @property
    def views(self) -> int:
        return self.eval_clips * self.eval_crops


@dataclass(frozen=True)
class ShardSet:
    """The tars of one split, their sample counts, video extension and label heads."""

    tars: list[str]
    counts: list[int]
    video_ext: str
    heads: tuple[str, ...]
    labels_ext: str = "lbl"  # binary labels member: "lbl", or "cls" in shards of the old format

    @property
    def total(self) -> int:
        return sum(self.counts)


def resolve_shards(shards: str | os.PathLike | list[str], split: str) -> ShardSet:
    """A shard folder (+ split) or an explicit list of tars -> :class:`ShardSet`. Needs each tar's
    ``.idx`` beside it and ``classes.json`` in the tars' folder."""
    if isinstance(shards, (str, os.PathLike)) and Path(shards).is_dir():
        tars = shard_paths(str(shards), split)
    elif isinstance(shards, (list, tuple)) and shards:
        tars = [str(t) for t in shards]
    else:
        raise ValueError(f"shards must be a shard folder or a non-empty list of .tar paths, got {shards!r}")
    counts, exts, label_exts = [], set(), set()
    for t in tars:
        idx = Path(t).with_suffix(".idx")
        if not Path(t).is_file() or not idx.is_file():
            raise FileNotFoundError(f"{t}: tar or its .idx is missing")
        samples = read_index(idx.read_text())
        counts.append(len(samples))
        exts.update(e for s in samples[:1] for e in s if e in _VIDEO_EXTS)
        label_exts.update(labels_ext(s) for s in samples[:1])
    if len(exts) != 1:
        raise ValueError(f"expected one video codec across the shards, found extensions {sorted(exts)}")
    heads = tuple(read_label_map(Path(tars[0]).parent))  # classes.json names the label heads
    if len(label_exts) > 1:
        raise ValueError("the shards mix the old label format (binary .cls) and the new one (.lbl + ASCII .cls); "
                         "re-run preprocessing into a new folder to write them all in the new format")
    return ShardSet(tars, counts, exts.pop(), heads, label_exts.pop() if label_exts else "lbl")


def shard_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The sample range DALI's readers give ``rank`` (``floor(total * rank / world_size)`` onwards)."""
    return total * rank // world_size, total * (rank + 1) // world_size


def _epoch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class _TrainIndices:
    """Picklable callable for ``fn.python_function``: (nf, rand) -> frame indices (pure sampling)."""

    def __init__(self, num_frames: int, sampling: str, stride: int):
        self.args = (num_frames, sampling, stride)

    def __call__(self, nf: np.ndarray, rand: np.ndarray) -> np.ndarray:
        t, sampling, stride = self.args
        return train_indices(int(nf[0]), t, sampling, stride, rand)


class _EvalIndices:
    def __init__(self, num_frames: int, clips: int, sampling: str, stride: int):
        self.args = (num_frames, clips, sampling, stride)

    def __call__(self, nf: np.ndarray) -> np.ndarray:
        t, clips, sampling, stride = self.args
        return eval_indices(int(nf[0]), t, clips, sampling, stride)


# Seven parameters: DALI's pipeline_def builds the graph from plain arguments, and rank/world_size/seed
# pick this rank's shard of the data; the loaders above are the interface.
def _build_pipeline(train: bool, shards: ShardSet, tars: list[str], cfg: LoaderConfig, rank: int,
                    world_size: int, seed: int):
    """The DALI graph; ``train`` switches sampling and augmentation, ``cfg.device`` the backend."""
    from nvidia.dali import fn, pipeline_def, types

    # (DALI 2.4's auto_aug calls fn.experimental.* aliases and forces their DeprecationWarning on.)
    from nvidia.dali.auto_aug import rand_augment

    gpu = cfg.device == "gpu"
    device_id = (cfg.device_id if cfg.device_id is not None else torch.cuda.current_device()) if gpu else None
    s, t = cfg.img_size, cfg.num_frames

    @pipeline_def(enable_conditionals=train and cfg.rand_augment)
    def pipe():
        video, nf, labels, meta = fn.readers.webdataset(
            paths=tars, index_paths=[str(Path(p).with_suffix(".idx")) for p in tars],
            ext=[shards.video_ext, NUM_FRAMES_EXT, shards.labels_ext, META_EXT],
            dtypes=[types.UINT8, types.INT32, types.INT64, types.UINT8],
            missing_component_behavior="error", shard_id=rank, num_shards=world_size,
            random_shuffle=train, initial_fill=cfg.shuffle_buffer, seed=seed, pad_last_batch=not train,
            name="reader")
        if train:
            rand = fn.random.uniform(range=[0.0, 1.0], shape=[t])
            idx = fn.python_function(nf, rand, function=_TrainIndices(t, cfg.sampling, cfg.dense_stride))
        else:
            idx = fn.python_function(nf, function=_EvalIndices(t, cfg.eval_clips, cfg.sampling, cfg.dense_stride))
        frames = fn.decoders.video(video, device="mixed" if gpu else "cpu", frames=idx)  # (F, H, W, 3) uint8
        if train:
            frames = fn.random_resized_crop(frames, size=[s, s], random_area=list(cfg.rrc_scale),
                                            random_aspect_ratio=list(cfg.rrc_ratio), antialias=True)
            if cfg.rand_augment:
                # the same ops and magnitudes for every frame of a clip
                interp = types.INTERP_NN if cfg.ra_interp == "nn" else types.INTERP_LINEAR
                frames = rand_augment.rand_augment(frames, n=cfg.ra_n, m=cfg.ra_m, num_magnitude_bins=cfg.ra_bins,
                                                   shape=[s, s], interp_type=interp)
            mirror = fn.random.coin_flip() if cfg.hflip else 0
            out = fn.crop_mirror_normalize(frames, dtype=types.FLOAT, output_layout="CFHW", mean=MEAN,
                                           std=STD, mirror=mirror)  # (3, T, S, S)
        else:
            frames = fn.resize(frames, resize_shorter=s, antialias=True)
            positions = CROP_POSITIONS if cfg.eval_crops == 3 else (0.5,)
            crops = [fn.crop_mirror_normalize(frames, crop=[s, s], crop_pos_x=p, crop_pos_y=p, dtype=types.FLOAT,
                                              output_layout="CFHW", mean=MEAN, std=STD) for p in positions]
            out = fn.stack(*crops)  # (crops, 3, clips*T, S, S)
        return out, labels, meta

    p = pipe(batch_size=cfg.batch_size, num_threads=cfg.num_threads, device_id=device_id, seed=seed,
             prefetch_queue_depth=cfg.prefetch)
    p.build()
    return p


def _to_torch(tensor_list, device: str) -> torch.Tensor:
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    t = tensor_list.as_tensor()
    out = torch.empty(t.shape(), dtype=to_torch_type[t.dtype],
                      device=torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else "cpu")
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream() if device == "gpu" else None)
    return out


class _ShardLoader:
    """Shared by :func:`train_loader` and :func:`eval_loader`; ``train`` picks the behaviour."""

    def __init__(self, train: bool, shards, split: str, cfg: LoaderConfig, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.train, self.cfg, self.rank, self.world_size = train, cfg, rank, world_size
        self.shards = resolve_shards(shards, split)
        lo, hi = shard_range(self.shards.total, rank, world_size)
        self.rank_samples = hi - lo
        if train:
            # DDP steps are collective: every rank runs the same number of full batches per epoch,
            # set by the smallest rank part; the remainder is dropped.
            self._len = (self.shards.total // world_size) // cfg.batch_size
            if self._len == 0:
                raise ValueError(f"{self.shards.total} samples cannot fill one batch of {cfg.batch_size} on "
                                 f"each of {world_size} ranks")
        else:
            self._len = math.ceil(self.rank_samples / cfg.batch_size)
        self.epoch = 0
        self._skip = 0

    def __len__(self) -> int:
        return self._len

    @property
    def heads(self) -> tuple[str, ...]:
        return self.shards.heads

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._skip = 0

    def skip(self, batches: int) -> None:
        """Resume mid-epoch: the next iteration starts at batch ``batches`` of the current epoch, with
        the same samples as an uninterrupted run (the skipped batches are read and decoded, not
        returned)."""
        if not 0 <= batches <= self._len:
            raise ValueError(f"cannot skip {batches} of {self._len} batches")
        self._skip = int(batches)

    def _tars(self) -> list[str]:
        if not self.train:
            return self.shards.tars
        order = np.random.default_rng(_epoch_seed(self.cfg.seed, self.epoch)).permutation(len(self.shards.tars))
        return [self.shards.tars[i] for i in order]

    def __iter__(self) -> Iterator[dict]:
        cfg = self.cfg
        seed = _epoch_seed(cfg.seed, self.epoch, self.rank)
        pipe = _build_pipeline(self.train, self.shards, self._tars(), cfg, self.rank, self.world_size, seed)
        try:
            remaining = self.rank_samples
            for step in range(self._len):
                video, labels, meta = pipe.run()
                if step < self._skip:
                    remaining -= cfg.batch_size
                    continue
                n = cfg.batch_size if self.train else min(cfg.batch_size, remaining)
                remaining -= n
                yield self._batch(video, labels, meta, n)
        finally:
            del pipe
            self._skip = 0

    def _batch(self, video, labels, meta, n: int) -> dict:
        cfg = self.cfg
        v = _to_torch(video, cfg.device)[:n]
        if not self.train:
            # (B, crops, 3, clips*T, S, S) -> (B, clips*crops, 3, T, S, S), clip-major views
            b, k, c, _, s, _ = v.shape
            v = v.view(b, k, c, cfg.eval_clips, cfg.num_frames, s, s).permute(0, 3, 1, 2, 4, 5, 6)
            v = v.reshape(b, cfg.eval_clips * k, c, cfg.num_frames, s, s)
        lab = torch.from_numpy(np.array(labels.as_array())[:n].reshape(n, -1).astype(np.int64))
        out = {"video": v, "key": [json.loads(bytes(np.array(meta.at(i))).decode())["key"] for i in range(n)]}
        target = v.device
        for j, head in enumerate(self.shards.heads):
            out[head] = lab[:, j].to(target)
        return out


def train_loader(shards, split: str = "train", *, cfg: LoaderConfig, rank: int = 0, world_size: int = 1) -> _ShardLoader:
    """Shuffled training batches: ``video`` (B, 3, T, S, S) float32, labels per head (int64), ``key``.
    ``len()`` is the same on every rank; call ``set_epoch`` before each epoch."""
    return _ShardLoader(True, shards, split, cfg, rank, world_size)


def eval_loader(shards, split: str = "validation", *, cfg: LoaderConfig, rank: int = 0,
                world_size: int = 1) -> _ShardLoader:
    """Every sample of the split exactly once across ranks, in shard order: ``video`` (B, V, 3, T, S, S)
    with V = eval_clips * eval_crops views (clip-major), labels per head, ``key``. The last batch of a
    rank may be smaller; ranks may differ by one batch."""
    return _ShardLoader(False, shards, split, cfg, rank, world_size)
