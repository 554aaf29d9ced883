"""The preprocessing job: native layout -> shuffled WebDataset shards + manifest + rejects + classes.

Ray Data maps decode + resize + re-encode over the rows (a failure becomes a reject row, never an
exception); the driver groups finished samples into shards of the target size and hands each to a Ray
task that writes it under its exact name and commits it atomically. One writer per output (a lease,
``pipelines.lease``). Resumable: a rerun deletes uncommitted leftovers, brings the committed samples and
rejects in line with the current input (``pipelines.reconcile``) and writes only what is missing under
shard numbers that are still free. The same input gives the same shards, byte for byte.

The entry point with argument parsing and Ray start-up is ``workflows/preprocess.py``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from pipelines.datasets import LAYOUTS, AnnotationError, Listing, read_dataset
from pipelines.clips import Clip, ClipRequest, ClipSettings, encode_clips
from pipelines.decode import VideoDecodeError
from pipelines.encode import EncodeConfig
from pipelines.memory import DEFAULT_BUDGET_BYTES
from pipelines.probe import MIN_VIDEO_FRAMES, check_inside
from pipelines.manifest import (CLASSES_FILE, consolidate, read_label_map, shard_parts,
                                write_label_map)
from pipelines.progress import format_eta
from pipelines.lease import OutputLease, hold
from pipelines.reconcile import FINGERPRINT_COLUMN, Reconciled, fingerprint, reconcile
from pipelines.sampling import DEFAULT_MAX_FPS
from pipelines.schema import (CODECS, META_EXT, NUM_FRAMES_EXT, REJECT_REASONS, VideoRow, count_rejects,
                              label_column, label_members, sample_key, shard_name)
from pipelines.shards import (PARTS_DIR, Member, commit_shard, join, list_names, resolve_out, write_atomic,
                              write_table_atomic)

# Short side of the stored clips (never upscaled). The VideoMAE-style loaders that CAST's code builds
# on decode frames at 256 x 320 before the random resized crop to 224; storing at 256 keeps that input
# and decodes ~1.6x fewer pixels than 320.
DEFAULT_SHORT_SIDE = {"ssv2": 256, "k400": 256, "ek100": 256, "csv": 256}
# Encoder quality ranges: MJPEG's qscale (ffmpeg: 2 best .. 31 smallest), VP9's and x264's CRF.
QUALITY_RANGE = {"mjpeg": (2, 31), "vp9": (0, 63), "h264": (0, 51)}


@dataclass(frozen=True)
class PreprocessConfig:
    # Each field's ``metadata`` is its command-line help (``workflows/preprocess.py`` builds its flags from
    # them with ``workflows.cli.flags``; written as plain dicts: pipelines imports nothing from workflows).
    dataset: str = field(metadata={"help": "the annotations' layout", "choices": LAYOUTS, "group": "input"})
    videos: str = field(metadata={"help": "folder of the videos (the split's folder for k400)", "group": "input"})
    annotations: str = field(metadata={"help": "ssv2: the labels folder; others: the CSV/list file",
                                       "group": "input"})
    split: str = field(metadata={"help": "train / validation / test ... (names the shards)", "group": "input"})
    out: str = field(metadata={"help": "output folder or URI (file://, s3://, gs://, hdfs://)", "group": "output"})
    short_side: int | None = field(default=None, metadata={  # None: DEFAULT_SHORT_SIDE[dataset]
        "help": "resize to this short side (never upscaled)", "none": "256", "group": "output"})
    max_fps: float | None = field(default=None, metadata={  # None: DEFAULT_MAX_FPS.get(dataset); 0: keep all
        "help": "drop frames above this rate (0: keep every frame)", "none": "30 for ek100, else every frame",
        "group": "output"})
    # Shard encoding; the defaults are EncodeConfig's. Codec (README): mjpeg decodes fastest, vp9 is
    # smallest; h264 needs a GPU.
    codec: str = field(default=EncodeConfig.codec, metadata={
        "help": "shard codec: mjpeg (fastest to decode) or vp9 (smallest) train on CPU or GPU; h264 only on GPU "
                "(DALI mixed)", "choices": sorted(CODECS), "group": "shard encoding"})
    gop: int = field(default=EncodeConfig.gop, metadata={"help": "frames between keyframes in the shards",
                                                          "group": "shard encoding"})
    crf: int = field(default=EncodeConfig.crf, metadata={"help": "vp9 / h264 quality (lower: better, bigger)",
                                                          "group": "shard encoding"})
    mjpeg_q: int = field(default=EncodeConfig.mjpeg_q, metadata={
        "help": "mjpeg quantiser (2: best .. 31: smallest)", "group": "shard encoding"})
    shard_bytes: int = field(default=1_000_000_000, metadata={"help": "target shard size in bytes",
                                                               "group": "shard encoding"})
    max_samples_per_shard: int = field(default=0, metadata={"help": "samples per shard at most (0: no limit)",
                                                             "group": "shard encoding"})
    # Never below MIN_VIDEO_FRAMES: the one rule of preprocessing and inference.
    min_frames: int = field(default=MIN_VIDEO_FRAMES, metadata={"help": "fewer decoded frames: a reject",
                                                                 "cli": False})
    # Per-video decode memory budget (MiB): a video whose decode would need more, by the estimate from
    # its probe or by the watchdog, is a ``too_large`` reject (pipelines.memory); also the memory each
    # decode task asks Ray for, so a node is never packed with more decodes than it holds.
    decode_memory_mb: int = field(default=DEFAULT_BUDGET_BYTES >> 20, metadata={
        "help": "per-video decode memory budget (MiB); a video that needs more is a too_large reject",
        "group": "job"})
    allow_outside_links: bool = field(default=False, metadata={
        "help": "follow symlinks that lead out of --videos (refused as outside_root by default)", "group": "input"})
    # "gpu" uses DALI's mixed backend for every codec; the command line also takes "auto" (a GPU when the
    # cluster has one) and resolves it before building this config.
    decode_device: str = field(default="cpu", metadata={"help": "decoding device (auto: a GPU when the cluster "
                                                         "has one)", "choices": ("auto", "cpu", "gpu"),
                                                         "group": "job"})
    seed: int = field(default=0, metadata={"help": "sample order across shards", "group": "job"})
    progress_every: float = field(default=10.0, metadata={"help": "seconds between progress lines", "group": "job"})
    max_pending_writes: int = field(default=4, metadata={"help": "shard writes in flight", "cli": False})
    # Reject reasons tried again on a rerun even though nothing changed ("all": every reason; () none),
    # e.g. after a wrong flag. ``missing`` by default: a listed video that has arrived since is tried
    # again. Inputs whose file or annotation changed since (a replaced file, a fixed label) are always
    # tried again: see pipelines.reconcile.
    retry_rejects: tuple[str, ...] = field(default=("missing",), metadata={
        "help": "comma-separated reject reasons to try again on a rerun, 'all' or 'none' (missing: once the "
                "video exists); inputs whose file or annotation changed are always retried", "sep": ",",
        "group": "job"})
    lease_wait: float = field(default=0.0, metadata={  # another job writing into OUT: wait, then exit 2
        "help": "seconds to wait for another job writing into --out before giving up (exit 2)", "group": "job"})

    def __post_init__(self):
        errors = []
        if self.dataset not in LAYOUTS:
            errors.append(f"dataset must be one of {LAYOUTS}, got {self.dataset!r}")
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
        if self.decode_device not in ("cpu", "gpu"):
            errors.append(f"decode_device must be 'cpu' or 'gpu', got {self.decode_device!r}")
        if self.gop < 1 or self.min_frames < MIN_VIDEO_FRAMES:
            errors.append(f"gop must be >= 1 and min_frames >= {MIN_VIDEO_FRAMES}")
        if self.decode_memory_mb < 64:
            errors.append(f"decode_memory_mb must be >= 64, got {self.decode_memory_mb}")
        if self.max_fps is not None and not (math.isfinite(self.max_fps) and self.max_fps >= 0):
            errors.append(f"max_fps must be > 0 (0: keep every frame), got {self.max_fps}")
        lo, hi = QUALITY_RANGE["mjpeg"]
        if not lo <= self.mjpeg_q <= hi:
            errors.append(f"mjpeg_q must be in {lo}..{hi}, got {self.mjpeg_q}")
        lo, hi = QUALITY_RANGE.get(self.codec, (0, 63))
        if self.codec in ("vp9", "h264") and not lo <= self.crf <= hi:
            errors.append(f"crf for {self.codec} must be in {lo}..{hi}, got {self.crf}")
        unknown = set(self.retry_rejects) - set(REJECT_REASONS) - {"all"}
        if unknown:
            errors.append(f"retry_rejects: unknown reasons {sorted(unknown)}; choose from {REJECT_REASONS} or 'all'")
        if not (self.progress_every >= 0 and self.max_pending_writes >= 1 and self.lease_wait >= 0):
            errors.append("progress_every and lease_wait must be >= 0, max_pending_writes >= 1")
        if errors:
            raise ValueError("invalid preprocessing config:\n  " + "\n  ".join(errors))

    @property
    def retry(self) -> frozenset[str]:
        return frozenset(REJECT_REASONS if "all" in self.retry_rejects else self.retry_rejects)

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
    removed: int = 0  # samples/rejects of inputs no longer listed, dropped (pipelines.reconcile)
    changed: int = 0  # inputs whose labels/segment/file changed since they were done, redone
    retried: int = 0  # rejects tried again (--retry-rejects)
    rewritten: list[str] = field(default_factory=list)  # shards un-committed because of the above
    shards: list[str] = field(default_factory=list)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Work:
    """What a Ray Data task needs to turn one row into a sample (picklable, small)."""

    short_side: int
    max_fps: float | None
    encode: EncodeConfig
    device: str
    min_frames: int
    heads: tuple[str, ...]
    memory_budget: int | None = DEFAULT_BUDGET_BYTES
    videos_root: str | None = None  # refuse paths that lead out of it (None: follow every link)


def process_row(record: dict, work: _Work) -> dict:
    """Decode, resize, re-encode one row. Never raises for a bad video: returns a reject row instead."""
    return process_group([record], work)[0]


def process_group(records: list[dict], work: _Work) -> list[dict]:
    """The rows of one video file (an EK100 recording's segments, else one row): the video is decoded
    once and its frames routed to each row's clip (``pipelines.clips``). One output row per record, in
    order, each a sample or a reject; never raises for a bad video."""
    rows = [VideoRow.from_record(r) for r in records]
    outs = [{"source_id": row.source_id, "path": row.path, "key": sample_key(row.source_id), "reason": "",
             "detail": "", "video": b"", "meta": "", "fingerprint": rec.get("fingerprint")}
            for row, rec in zip(rows, records)]
    try:
        if work.videos_root is not None and os.path.lexists(rows[0].path):
            check_inside(rows[0].path, work.videos_root)
        settings = ClipSettings(work.short_side, work.max_fps, work.encode, work.device, work.min_frames,
                                work.memory_budget)
        clips = encode_clips(rows[0].path, [ClipRequest(r.segment, r.segment_fps) for r in rows], settings)
    except VideoDecodeError as e:
        return [out | {"reason": e.reason, "detail": e.detail[:500]} for out in outs]
    except Exception as e:  # noqa: BLE001 - one input must never stop a job; recorded with its type
        return [out | {"reason": "unexpected_error", "detail": f"{type(e).__name__}: {e}"[:500]} for out in outs]
    return [out | _sample(row, out["key"], clip, work) for row, out, clip in zip(rows, outs, clips)]


def _sample(row: VideoRow, key: str, clip: Clip | VideoDecodeError, work: _Work) -> dict:
    if isinstance(clip, VideoDecodeError):
        return {"reason": clip.reason, "detail": clip.detail[:500]}
    meta = {"key": key, "source_id": row.source_id, "labels": row.labels, "num_frames": clip.frames,
            "fps": round(float(clip.fps), 4), "height": clip.height, "width": clip.width,
            "segment": list(row.segment) if row.segment else None, "clamped": clip.clamped,
            "source_codec": clip.source_codec, "codec": work.encode.codec}
    return {"video": clip.video, "meta": json.dumps(meta)}


def group_by_video(todo: list[dict]) -> list[list[dict]]:
    """``todo``'s records grouped by file, groups in order of first appearance, records in order: each
    group is one decode task (a video read once for all its segments)."""
    groups: dict[str, list[dict]] = {}
    for r in todo:
        groups.setdefault(r["path"], []).append(r)
    return list(groups.values())


def _process_group_row(item: dict, work: _Work) -> list[dict]:
    return process_group(json.loads(item["group"]), work)


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
                     **{label_column(h): int(meta["labels"][h]) for h in heads},
                     FINGERPRINT_COLUMN: s.get("fingerprint")})
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


def prepare_listing(cfg: PreprocessConfig) -> Listing:
    """Read and check the annotations against the output's pinned classes: everything that can be
    wrong with the inputs fails here (:class:`AnnotationError`), before Ray or any video."""
    fs, base = resolve_out(cfg.out)
    pinned = _pin_label_map(cfg, fs, base)
    listing = read_dataset(cfg.dataset, cfg.videos, cfg.annotations, cfg.split, pinned)
    if pinned is not None and pinned != listing.label_map:
        raise AnnotationError(f"{join(base, CLASSES_FILE)} holds other classes than {cfg.annotations}; "
                              "use a fresh output folder per dataset")
    return listing


def run_preprocess(cfg: PreprocessConfig, on_commit: Callable[[str], None] | None = None,
                   log: Callable[[str], None] | None = None, listing: Listing | None = None) -> PreprocessResult:
    """Run the job on the current Ray cluster (``ray.init`` is the caller's) under the output's lease
    (one writer per output; :class:`pipelines.lease.LeaseHeld` when another live job has it).
    ``on_commit(shard)`` is called on the driver after each shard is committed; ``listing`` is
    :func:`prepare_listing`'s, when the caller already checked the annotations."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with hold(cfg.out, f"preprocess {cfg.split}", wait_s=cfg.lease_wait, log=log) as lease:
        return _run(cfg, listing or prepare_listing(cfg), lease, on_commit, log)


def _plan(cfg: PreprocessConfig, fs, base: str, listing: Listing, log) -> tuple[list[dict], list[dict], Reconciled]:
    """(records to process in shard order, duplicate rejects to write, what the output holds)."""
    committed = set(shard_parts(fs, base).get(cfg.split, []))
    removed = _cleanup_uncommitted(fs, base, cfg.split, committed)
    if removed:
        log(f"[preprocess {cfg.split}] removed {removed} uncommitted file(s) of an interrupted run")
    firsts: dict[str, VideoRow] = {}
    dups = []
    for r in listing.rows:
        if r.source_id in firsts:
            dups.append(r)
        else:
            firsts[r.source_id] = r
    prints = {sid: fingerprint(r) for sid, r in firsts.items()}
    state = reconcile(fs, base, cfg.split, listing.rows, prints, committed, cfg.retry, log)
    _cleanup_uncommitted(fs, base, cfg.split, state.committed)
    # Sorted by id, then a seeded permutation: the same input always gives the same shards.
    todo = [firsts[sid].to_record() | {"fingerprint": prints[sid]} for sid in sorted(firsts) if sid not in state.done]
    todo = [todo[i] for i in np.random.default_rng(cfg.seed).permutation(len(todo))]
    dup_rejects = [{"split": cfg.split, "source_id": r.source_id, "path": r.path, FINGERPRINT_COLUMN: prints[r.source_id]}
                   | duplicate_reason(r, firsts[r.source_id]) for r in dups]
    dup_rejects = [d for d in dup_rejects if (d["source_id"], d["reason"]) not in state.rejected]
    dup_rejects = list({d["source_id"]: d for d in dup_rejects}.values())  # one row per id
    return todo, dup_rejects, state


def duplicate_reason(again: VideoRow, first: VideoRow) -> dict[str, str]:
    """The reject of a source id listed again: ``duplicate`` when it says the same as the first listing
    (kept), ``conflicting_labels`` when its labels or segment differ (the first is kept; both named)."""
    if (again.labels, again.segment) == (first.labels, first.segment):
        return {"reason": "duplicate", "detail": "listed more than once"}
    return {"reason": "conflicting_labels",
            "detail": f"listed again with labels {again.labels} segment {again.segment}; kept the first: "
                      f"labels {first.labels} segment {first.segment}"}


def _run(cfg: PreprocessConfig, listing: Listing, lease: OutputLease, on_commit, log) -> PreprocessResult:
    import ray  # imported here: the pure modules of the package must not need Ray

    t0 = time.time()
    fs, base = resolve_out(cfg.out)
    fs.create_dir(join(base, PARTS_DIR), recursive=True)
    pinned = _pin_label_map(cfg, fs, base)  # again, under the lease: the listing may predate it
    if pinned is None:
        write_label_map(cfg.out, listing.label_map)
    elif pinned != listing.label_map:
        raise AnnotationError(f"{join(base, CLASSES_FILE)} holds other classes than {cfg.annotations}")
    todo, dup_rejects, state = _plan(cfg, fs, base, listing, log)
    result = PreprocessResult(listed=len(listing.rows), already_done=len(state.done), written=0, rejected=0,
                              removed=state.removed, changed=state.changed, retried=state.retried,
                              rewritten=state.rewritten)
    log(f"[preprocess {cfg.split}] {len(listing.rows)} listed, {result.already_done} already done, "
        f"{len(todo)} to process, {len(state.committed)} committed shard(s) kept")
    if todo or dup_rejects:
        _write_job_record(cfg, fs, base)
    rejects = _RejectWriter(cfg.split, fs, base, lease, result)
    rejects.pending.extend(dup_rejects)
    if todo:
        shards = _ShardCommitter(cfg, ray, listing.heads, state.committed, lease, result, on_commit)
        _process(cfg, todo, shards, rejects, log)
    rejects.flush()
    n_samples, n_rejects = consolidate(cfg.out)
    result.seconds = time.time() - t0
    log(f"[preprocess {cfg.split}] done in {result.seconds:.1f}s: {result.written} written to "
        f"{len(result.shards)} shard(s), {result.rejected} rejected {result.reject_reasons}; "
        f"folder totals: {n_samples} samples, {n_rejects} rejects")
    return result


class _RejectWriter:
    """Reject rows of this run, committed in batches as fragments (the one reject counter)."""

    def __init__(self, split: str, fs, base: str, lease: OutputLease, result: PreprocessResult) -> None:
        self.split, self.fs, self.base, self.lease, self.result = split, fs, base, lease, result
        self.pending: list[dict] = []

    def add(self, row: dict) -> None:
        self.pending.append({k: row[k] for k in ("source_id", "path", "reason", "detail")}
                            | {"split": self.split, FINGERPRINT_COLUMN: row.get("fingerprint")})

    def flush(self) -> None:
        if not self.pending:
            return
        self.lease.check()
        name = f"{self.split}-rejects-{uuid.uuid4().hex[:12]}.parquet"
        write_table_atomic(self.fs, join(self.base, PARTS_DIR, name), pa.Table.from_pylist(self.pending))
        count_rejects(self.result.reject_reasons, self.pending)
        self.result.rejected += len(self.pending)
        self.pending.clear()


# A decode task's own memory besides its video: the interpreter, PyAV, numpy, the encoded sample.
_TASK_BASE_BYTES = 256 << 20


def task_memory(cfg: PreprocessConfig) -> int:
    """Bytes a decode task asks Ray for: its base plus the per-video budget it enforces itself."""
    return _TASK_BASE_BYTES + (cfg.decode_memory_mb << 20)


def _ordered_dataset(ray, todo: list[dict], cfg: PreprocessConfig, work: _Work):
    """Ray Data map over ``todo`` that yields rows in ``todo``'s order (not task completion order), so
    the same input gives the same shards byte for byte."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        groups = [{"group": json.dumps(g)} for g in group_by_video(todo)]
        ds = ray.data.from_items(groups, override_num_blocks=max(1, min(len(groups), 256)))
        ds = ds.flat_map(_process_group_row, fn_kwargs={"work": work}, num_cpus=1,
                         num_gpus=0.25 if cfg.decode_device == "gpu" else 0, memory=task_memory(cfg))
        ds.context.execution_options.preserve_order = True
    finally:
        ctx.execution_options.preserve_order = before
    return ds


class _ShardCommitter:
    """The driver's side of writing shards: groups finished samples into shards of the target size,
    hands each to a Ray task under the next free name and counts what got committed."""

    def __init__(self, cfg: PreprocessConfig, ray, heads: tuple[str, ...], committed: set[int],
                 lease: OutputLease, result: PreprocessResult, on_commit) -> None:
        self.cfg, self.ray, self.heads, self.lease = cfg, ray, heads, lease
        self.result, self.on_commit = result, on_commit
        self.writer = ray.remote(num_cpus=0.25)(write_shard)
        self.indices = _free_indices(committed)
        self.in_flight: dict = {}
        self.buffer: list[dict] = []
        self.buffer_bytes = 0

    def add(self, out: dict) -> bool:
        """Buffer one finished sample; True when the buffer is a full shard (call :meth:`flush`)."""
        self.buffer.append({"video": out["video"], "meta": out["meta"], "fingerprint": out["fingerprint"]})
        self.buffer_bytes += len(out["video"]) + 2048  # + headers and metadata
        return self.buffer_bytes >= self.cfg.shard_bytes or len(self.buffer) == self.cfg.max_samples_per_shard

    def flush(self) -> None:
        if self.buffer:
            self.lease.check()  # never commit into an output another job has taken over
            name = shard_name(self.cfg.split, next(self.indices))
            ref = self.writer.remote(self.cfg.out, self.cfg.split, name, self.buffer, self.heads,
                                     CODECS[self.cfg.codec][2])
            self.in_flight[ref] = len(self.buffer)
            self.buffer, self.buffer_bytes = [], 0

    def drain(self, max_pending: int) -> None:
        while len(self.in_flight) > max_pending:
            ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
            for ref in ready:
                samples = self.in_flight.pop(ref)
                name = self.ray.get(ref)  # a failed write is a bug or a full disk: let it raise
                self.result.shards.append(name)
                self.result.written += samples
                if self.on_commit is not None:
                    self.on_commit(name)

    def settle(self) -> None:
        """After an error: let shards already handed to writers finish committing (they are complete),
        so that a rerun in the same cluster sees every marker before it decides what is left to do."""
        if self.in_flight:
            self.ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=600)


def _process(cfg: PreprocessConfig, todo: list[dict], shards: _ShardCommitter, rejects: _RejectWriter,
             log) -> None:
    work = _Work(cfg.resolved_short_side, cfg.resolved_max_fps,
                 EncodeConfig(codec=cfg.codec, gop=cfg.gop, crf=cfg.crf, mjpeg_q=cfg.mjpeg_q), cfg.decode_device,
                 cfg.min_frames, shards.heads, cfg.decode_memory_mb << 20,
                 None if cfg.allow_outside_links else cfg.videos)
    t0 = last_log = time.time()
    processed = 0
    try:
        for out in _ordered_dataset(shards.ray, todo, cfg, work).iter_rows():
            processed += 1
            if out["reason"]:
                rejects.add(out)
            elif shards.add(out):
                shards.flush()
                rejects.flush()
                shards.drain(cfg.max_pending_writes)
            now = time.time()
            if now - last_log >= cfg.progress_every or processed == len(todo):
                rate = processed / max(now - t0, 1e-9)
                rej = shards.result.rejected + len(rejects.pending)
                log(f"[preprocess {cfg.split}] {processed}/{len(todo)} videos ({processed - rej} ok, "
                    f"{rej} rejected), {rate:.1f} videos/s, ETA {format_eta((len(todo) - processed) / rate)}, "
                    f"{len(shards.result.shards) + len(shards.in_flight)} shard(s)")
                last_log = now
        shards.flush()
        rejects.flush()
        shards.drain(0)
    except BaseException:
        shards.settle()
        raise


def _write_job_record(cfg: PreprocessConfig, fs, base: str) -> None:
    """What made this output: the config of each run, per split (overwritten by a rerun)."""
    record = {"config": asdict(cfg), "short_side": cfg.resolved_short_side, "max_fps": cfg.resolved_max_fps,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(fs, join(base, f"job-{cfg.split}.json"), json.dumps(record, indent=1).encode())
