"""The preprocessing job: native layout -> shuffled WebDataset shards + manifest + rejects + classes.

Ray Data maps decode + resize + re-encode over the rows (a failure becomes a reject row, never an
exception); the driver groups finished samples into shards of the target size and hands each to a Ray
task that writes it under its exact name and commits it atomically. Resumable: a rerun reads the commit
markers, drops what they cover (samples and rejects), deletes uncommitted leftovers, and writes only
what is missing under shard numbers that are still free.

The entry point with argument parsing and Ray start-up is ``workflows/preprocess.py``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from pipelines.datasets import DATASETS, AnnotationError, read_dataset
from pipelines.decode import VideoDecodeError, decode_video
from pipelines.encode import EncodeConfig, encode_video
from pipelines.manifest import (CLASSES_FILE, consolidate, read_fragments, read_label_map, shard_parts,
                                write_label_map)
from pipelines.progress import format_eta
from pipelines.schema import (CODECS, META_EXT, NUM_FRAMES_EXT, VideoRow, label_column, label_members,
                              sample_key, shard_name)
from pipelines.shards import (PARTS_DIR, Member, commit_shard, join, list_names, resolve_out, write_atomic,
                              write_table_atomic)

# Short side of the stored clips (never upscaled). The VideoMAE-style loaders that CAST's code builds
# on decode frames at 256 x 320 before the random resized crop to 224; storing at 256 keeps that input
# and decodes ~1.6x fewer pixels than 320.
DEFAULT_SHORT_SIDE = {"ssv2": 256, "k400": 256, "ek100": 256, "csv": 256}
# EK100 videos run at 50/60 fps; 30 fps keeps every motion cue of a 16-segment clip at half the bytes.
DEFAULT_MAX_FPS = {"ek100": 30.0}


@dataclass(frozen=True)
class PreprocessConfig:
    dataset: str
    videos: str
    annotations: str
    split: str
    out: str
    short_side: int | None = None  # None: DEFAULT_SHORT_SIDE[dataset]
    max_fps: float | None = None  # None: DEFAULT_MAX_FPS.get(dataset); 0: keep every frame
    codec: str = "mjpeg"  # shard codec (README): mjpeg decodes fastest, vp9 is smallest; h264 needs a GPU
    gop: int = 8
    crf: int = 32  # vp9 / h264 quality
    mjpeg_q: int = 5  # mjpeg quantiser
    shard_bytes: int = 1_000_000_000  # target tar size
    max_samples_per_shard: int = 0  # 0: no limit besides shard_bytes
    min_frames: int = 2
    device: str = "cpu"  # decoding device: "gpu" uses DALI's mixed backend for every codec
    seed: int = 0  # sample order across shards
    progress_every_s: float = 10.0
    max_pending_writes: int = 4

    def __post_init__(self):
        errors = []
        if self.dataset not in DATASETS:
            errors.append(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if not Path(self.videos).is_dir():
            errors.append(f"--videos {self.videos!r} is not a folder")
        ann = Path(self.annotations)
        if self.dataset == "ssv2" and not (ann / "labels.json").is_file():
            errors.append(f"--annotations for ssv2 must be the labels folder with labels.json: {ann}")
        elif self.dataset != "ssv2" and not ann.is_file():
            errors.append(f"--annotations {ann} is not a file")
        if not self.split or any(c in self.split for c in "/.-"):
            errors.append(f"split must be a plain name without '/', '.' or '-', got {self.split!r}")
        if self.codec not in CODECS:
            errors.append(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if self.short_side is not None and self.short_side < 16:
            errors.append(f"short_side must be >= 16, got {self.short_side}")
        if self.shard_bytes <= 0 or self.max_samples_per_shard < 0:
            errors.append("shard_bytes must be > 0 and max_samples_per_shard >= 0")
        if self.device not in ("cpu", "gpu"):
            errors.append(f"device must be 'cpu' or 'gpu', got {self.device!r}")
        if self.gop < 1 or self.min_frames < 1:
            errors.append("gop and min_frames must be >= 1")
        if errors:
            raise ValueError("invalid preprocessing config:\n  " + "\n  ".join(errors))

    @property
    def resolved_short_side(self) -> int:
        return self.short_side or DEFAULT_SHORT_SIDE[self.dataset]

    @property
    def resolved_max_fps(self) -> float | None:
        fps = DEFAULT_MAX_FPS.get(self.dataset) if self.max_fps is None else self.max_fps
        return fps or None


@dataclass
class PreprocessResult:
    listed: int
    already_done: int
    written: int
    rejected: int
    shards: list[str] = field(default_factory=list)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def resample_indices(num_frames: int, fps: float, max_fps: float | None) -> np.ndarray:
    """Frame indices that bring ``fps`` down to at most ``max_fps`` (evenly spaced, first frame kept)."""
    if not max_fps or fps <= max_fps * 1.001:
        return np.arange(num_frames)
    step = fps / max_fps
    return np.unique(np.floor(np.arange(0, num_frames, step)).astype(np.int64))


@dataclass(frozen=True)
class _Work:
    """What a Ray Data task needs to turn one row into a sample (picklable, small)."""

    short_side: int
    max_fps: float | None
    encode: EncodeConfig
    device: str
    min_frames: int
    heads: tuple[str, ...]


def process_row(record: dict, work: _Work) -> dict:
    """Decode, resize, re-encode one row. Never raises for a bad video: returns a reject row instead."""
    row = VideoRow.from_record(record)
    out = {"source_id": row.source_id, "path": row.path, "key": sample_key(row.source_id), "reason": "",
           "detail": "", "video": b"", "meta": ""}
    try:
        dec = decode_video(row.path, segment=row.segment, segment_fps=row.segment_fps,
                           short_side=work.short_side, device=work.device, min_frames=work.min_frames)
    except VideoDecodeError as e:
        return out | {"reason": e.reason, "detail": e.detail[:500]}
    keep = resample_indices(dec.frames.shape[0], dec.fps, work.max_fps)
    frames = dec.frames[keep]  # (F, H, W, 3)
    fps = dec.fps * len(keep) / dec.frames.shape[0]
    try:
        video = encode_video(frames, fps, work.encode)
    except (ValueError, OSError) as e:  # av's errors derive from OSError/ValueError
        return out | {"reason": "encode_failed", "detail": str(e)[:500]}
    f, h, w, _ = frames.shape
    meta = {"key": out["key"], "source_id": row.source_id, "labels": row.labels, "num_frames": int(f),
            "fps": round(float(fps), 4), "height": int(h) - int(h) % 2, "width": int(w) - int(w) % 2,
            "segment": list(row.segment) if row.segment else None, "clamped": dec.clamped,
            "source_codec": dec.codec, "codec": work.encode.codec}
    return out | {"video": video, "meta": json.dumps(meta)}


def write_shard(out: str, split: str, tar_name: str, samples: list[dict], heads: tuple[str, ...],
                video_ext: str) -> str:
    """Build the tar members and the manifest fragment of one shard and commit them."""
    fs, base = resolve_out(out)
    members, rows = [], []
    for s in samples:
        meta = json.loads(s["meta"])
        key = meta["key"]
        members.append([Member(f"{key}.{video_ext}", s["video"]),
                        Member(f"{key}.{NUM_FRAMES_EXT}", np.array([meta["num_frames"]], "<i4").tobytes()),
                        *(Member(f"{key}.{ext}", data) for ext, data in label_members(heads, meta["labels"])),
                        Member(f"{key}.{META_EXT}", s["meta"].encode())])
        rows.append({"key": key, "split": split, "shard": tar_name, "source_id": meta["source_id"],
                     "num_frames": meta["num_frames"], "fps": meta["fps"], "height": meta["height"],
                     "width": meta["width"], "bytes": len(s["video"]), "clamped": meta["clamped"],
                     **{label_column(h): int(meta["labels"][h]) for h in heads}})
    commit_shard(fs, base, tar_name, members, pa.Table.from_pylist(rows))
    return tar_name


def _cleanup_uncommitted(fs, base: str, split: str, committed: set[int]) -> int:
    """Delete leftovers of a crashed run: temp files and tars/indices of this split with no commit
    marker (they may be half-written). Returns how many files were removed."""
    removed = 0
    for sub in ("", PARTS_DIR):
        for name in list_names(fs, base, sub):
            stem = name.split(".", 1)[0]
            tmp = name.startswith(f".{split}-") and ".tmp-" in name
            ours = stem.startswith(f"{split}-") and name.endswith((".tar", ".idx")) and sub == ""
            if tmp or (ours and stem[len(split) + 1:].isdigit() and int(stem[len(split) + 1:]) not in committed):
                fs.delete_file(join(base, sub, name) if sub else join(base, name))
                removed += 1
    return removed


def _free_indices(used: set[int]):
    i = 0
    while True:
        if i not in used:
            yield i
        i += 1


def _pin_label_map(cfg: PreprocessConfig, fs, base: str) -> dict | None:
    info = fs.get_file_info(join(base, CLASSES_FILE))
    return read_label_map(cfg.out) if info.type.name == "File" else None


def run_preprocess(cfg: PreprocessConfig, on_commit: Callable[[str], None] | None = None,
                   log: Callable[[str], None] | None = None) -> PreprocessResult:
    """Run the job on the current Ray cluster (``ray.init`` is the caller's). ``on_commit(shard)`` is
    called on the driver after each shard is committed."""
    import ray  # imported here: the pure modules of the package must not need Ray

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.time()
    fs, base = resolve_out(cfg.out)
    fs.create_dir(join(base, PARTS_DIR), recursive=True)

    # Everything that can be wrong with the inputs fails here, before any video is touched.
    pinned = _pin_label_map(cfg, fs, base)
    listing = read_dataset(cfg.dataset, cfg.videos, cfg.annotations, cfg.split, pinned)
    if pinned is not None and pinned != listing.label_map:
        raise AnnotationError(f"{join(base, CLASSES_FILE)} holds other classes than {cfg.annotations}; "
                              "use a fresh output folder per dataset")
    if pinned is None:
        write_label_map(cfg.out, listing.label_map)
    heads = listing.heads

    committed = set(shard_parts(fs, base).get(cfg.split, []))
    removed = _cleanup_uncommitted(fs, base, cfg.split, committed)
    if removed:
        log(f"[preprocess {cfg.split}] removed {removed} uncommitted file(s) of an interrupted run")
    done: set[str] = set()
    for rejects in (False, True):
        t = read_fragments(fs, base, cfg.split, rejects=rejects)
        if t is not None:
            done.update(t.column("source_id").to_pylist())

    rows, seen, dup_rejects = [], set(), []
    for r in listing.rows:
        if r.source_id in seen:
            dup_rejects.append({"split": cfg.split, "source_id": r.source_id, "path": r.path,
                                "reason": "duplicate", "detail": "listed more than once"})
            continue
        seen.add(r.source_id)
        if r.source_id not in done:
            rows.append(r)
    order = np.random.default_rng(cfg.seed).permutation(len(rows))  # shuffle samples across shards
    rows = [rows[i] for i in order]
    result = PreprocessResult(listed=len(listing.rows), already_done=len(seen & done), written=0, rejected=0)
    log(f"[preprocess {cfg.split}] {len(listing.rows)} listed, {result.already_done} already done, "
        f"{len(rows)} to process, {len(committed)} committed shard(s) kept")
    if rows:
        _write_job_record(cfg, fs, base)

    video_ext = CODECS[cfg.codec][2]
    pending_rejects: list[dict] = [r for r in dup_rejects if r["source_id"] not in done]

    def flush_rejects():
        if pending_rejects:
            name = f"{cfg.split}-rejects-{uuid.uuid4().hex[:12]}.parquet"
            write_table_atomic(fs, join(base, PARTS_DIR, name), pa.Table.from_pylist(pending_rejects))
            for r in pending_rejects:
                result.reject_reasons[r["reason"]] = result.reject_reasons.get(r["reason"], 0) + 1
            result.rejected += len(pending_rejects)
            pending_rejects.clear()

    if rows:
        work = _Work(cfg.resolved_short_side, cfg.resolved_max_fps,
                     EncodeConfig(codec=cfg.codec, gop=cfg.gop, crf=cfg.crf, mjpeg_q=cfg.mjpeg_q), cfg.device, cfg.min_frames, heads)
        ds = ray.data.from_items([r.to_record() for r in rows], override_num_blocks=max(1, min(len(rows), 256)))
        ds = ds.map(process_row, fn_kwargs={"work": work}, num_cpus=1,
                    num_gpus=0.25 if cfg.device == "gpu" else 0)
        writer = ray.remote(num_cpus=0.25)(write_shard)
        indices = _free_indices(committed)
        in_flight: dict = {}
        buffer: list[dict] = []
        buffer_bytes = 0
        processed, last_log = 0, time.time()

        def drain(max_pending: int):
            while len(in_flight) > max_pending:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    samples = in_flight.pop(ref)
                    name = ray.get(ref)  # a failed write is a bug or a full disk: let it raise
                    result.shards.append(name)
                    result.written += samples
                    if on_commit is not None:
                        on_commit(name)

        def flush_shard():
            nonlocal buffer, buffer_bytes
            if buffer:
                name = shard_name(cfg.split, next(indices))
                in_flight[writer.remote(cfg.out, cfg.split, name, buffer, heads, video_ext)] = len(buffer)
                buffer, buffer_bytes = [], 0
            flush_rejects()
            drain(cfg.max_pending_writes)

        try:
            for out in ds.iter_rows():
                processed += 1
                if out["reason"]:
                    pending_rejects.append({k: out[k] for k in ("source_id", "path", "reason", "detail")}
                                           | {"split": cfg.split})
                else:
                    buffer.append({"video": out["video"], "meta": out["meta"]})
                    buffer_bytes += len(out["video"]) + 2048  # + headers and metadata
                    if buffer_bytes >= cfg.shard_bytes or len(buffer) == cfg.max_samples_per_shard:
                        flush_shard()
                now = time.time()
                if now - last_log >= cfg.progress_every_s or processed == len(rows):
                    rate = processed / max(now - t0, 1e-9)
                    rej = result.rejected + len(pending_rejects)
                    log(f"[preprocess {cfg.split}] {processed}/{len(rows)} videos ({processed - rej} ok, "
                        f"{rej} rejected), {rate:.1f} videos/s, ETA {format_eta((len(rows) - processed) / rate)}, "
                        f"{len(result.shards) + len(in_flight)} shard(s)")
                    last_log = now
            flush_shard()
            drain(0)
        except BaseException:
            # Let shards already handed to writers finish committing (they are complete), so that a
            # rerun in the same cluster sees every marker before it decides what is left to do.
            if in_flight:
                ray.wait(list(in_flight), num_returns=len(in_flight), timeout=600)
            raise
    flush_rejects()
    n_samples, n_rejects = consolidate(cfg.out)
    result.seconds = time.time() - t0
    log(f"[preprocess {cfg.split}] done in {result.seconds:.1f}s: {result.written} written to "
        f"{len(result.shards)} shard(s), {result.rejected} rejected {result.reject_reasons}; "
        f"folder totals: {n_samples} samples, {n_rejects} rejects")
    return result


def _write_job_record(cfg: PreprocessConfig, fs, base: str) -> None:
    """What made this output: the config of each run, per split (overwritten by a rerun)."""
    record = {"config": asdict(cfg), "short_side": cfg.resolved_short_side, "max_fps": cfg.resolved_max_fps,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(fs, join(base, f"job-{cfg.split}.json"), json.dumps(record, indent=1).encode())
