"""``--input`` -> one flat record per video, whatever the input is.

  * a shard folder written by ``workflows/preprocess.py`` (``<split>-NNNNNN.tar`` + ``.idx`` +
    ``classes.json`` + ``manifest.parquet``): a record points at the video member inside its tar;
  * a dataset in its native layout (``--dataset ssv2|k400|ek100|csv --annotations ...``): the rows of
    ``pipelines.datasets.read_dataset``, labels and EK100 segments included;
  * a folder of videos (searched recursively) or a text file listing one video path per line.

Records are plain dicts (Ray Data rows): ``source_id``, ``key``, ``path``, ``offset``/``size`` of the
video member (-1 for whole files), the segment (``seg_start``/``seg_stop``/``seg_fps``, -1/NaN for the
whole video) and ``label_<head>`` (-1: unknown). Nothing here opens a video.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from cast_model.vocab import DATASETS, label_key
from pipelines.datasets import read_dataset
from pipelines.manifest import CLASSES_FILE, LabelMapError, read_label_map, shard_parts
from pipelines.sampling import DEFAULT_MAX_FPS
from pipelines.schema import CODECS, META_EXT, sample_key
from pipelines.shards import join, read_index, resolve_out

from .config import InferConfig, InferConfigError

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"})
_SHARD_VIDEO_EXTS = {ext for _, _, ext, _ in CODECS.values()}


@dataclass
class InputListing:
    kind: str  # "shards", "native", "folder" or "list"
    records: list[dict]
    heads: tuple[str, ...] | None  # label heads of the input (None: unlabelled input)
    label_map: dict[str, dict[str, str]] | None
    dataset: str | None  # ssv2 / k400 / ek100 when known (evaluation names its figures with it)
    max_fps: float | None = None  # raw EK100 videos are brought to the shards' frame rate
    duplicates: list[dict] = field(default_factory=list)  # records listed again (rejected as "duplicate")
    # Inputs that could not even be listed (a shard with a garbage .idx): reject rows, written as such.
    rejects: list[dict] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.heads is not None and any(r[label_key(h)] >= 0 for r in self.records for h in self.heads)


# One row of the inputs table: the parameters are its columns (keyword-only past the first three).
def record(source_id: str, path: str, labels: dict[str, int] | None = None, *, key: str | None = None,
           offset: int = -1, size: int = -1, segment: tuple[int, int] | None = None,
           segment_fps: float | None = None) -> dict:
    return {"source_id": source_id, "key": key or sample_key(source_id), "path": path, "offset": int(offset),
            "size": int(size), "seg_start": -1 if segment is None else int(segment[0]),
            "seg_stop": -1 if segment is None else int(segment[1]),
            "seg_fps": math.nan if segment_fps is None else float(segment_fps),
            **{label_key(h): int(v) for h, v in (labels or {}).items()}}


def is_shard_folder(path: Path) -> bool:
    return path.is_dir() and (path / CLASSES_FILE).is_file() and any(path.glob("*.tar"))


def list_inputs(cfg: InferConfig) -> InputListing:
    """Everything that can be wrong with the input fails here (``InferConfigError``), before Ray."""
    src = Path(cfg.input)
    if "://" in cfg.input:
        listing = _shards(cfg.input, cfg.split)
    elif cfg.dataset is not None:
        listing = _native(cfg)
    elif is_shard_folder(src):
        listing = _shards(str(src.resolve()), cfg.split)
    elif src.is_dir():
        listing = _files(_video_paths(src), "folder")
    elif src.is_file():
        listing = _files(_read_list(src), "list")
    else:
        raise InferConfigError(f"--input {src} is neither a folder nor a file list")
    if listing.kind in ("native", "folder") and not cfg.allow_outside_links:
        _refuse_outside(listing, cfg.input)
    return _dedupe(listing)


def _refuse_outside(listing: InputListing, root: str) -> None:
    """Records whose file is a link out of the ``--input`` folder become ``outside_root`` rejects."""
    from pipelines.probe import VideoDecodeError, check_inside

    kept = []
    for r in listing.records:
        try:
            if os.path.lexists(r["path"]):
                check_inside(r["path"], root)
            kept.append(r)
        except VideoDecodeError as e:
            listing.rejects.append(_bad(r["source_id"], r["path"], e.reason, e.detail))
    listing.records = kept


_SAYS = ("seg_start", "seg_stop")  # besides the labels, what a listing says about a video


def _dedupe(listing: InputListing) -> InputListing:
    """Keep each source id's first record; a repeat is a ``duplicate`` reject when it says the same,
    ``conflicting_labels`` when its labels or segment differ (both named in the detail)."""
    first: dict[str, dict] = {}
    kept = []
    for r in listing.records:
        says = {k: v for k, v in r.items() if k.startswith("label_") or k in _SAYS}
        if r["source_id"] not in first:
            first[r["source_id"]] = says
            kept.append(r)
        elif says == first[r["source_id"]]:
            listing.duplicates.append(dict(r, reason="duplicate", detail="listed more than once"))
        else:
            listing.duplicates.append(dict(r, reason="conflicting_labels", detail=(
                f"listed again with {says}; kept the first: {first[r['source_id']]}")))
    listing.records = kept
    return listing


def _video_paths(folder: Path) -> list[Path]:
    """Every entry named like a video, whatever it is: a directory ``x.webm/``, a fifo or a symlink loop
    becomes a reject with its reason when decoded, not a silent gap. Symlinked folders are not followed
    (``os.walk``'s default), so a link loop cannot make the walk endless."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=None):
        for name in files + dirs:
            if Path(name).suffix.lower() in VIDEO_SUFFIXES:
                found.append(Path(root) / name)
        dirs[:] = [d for d in dirs if Path(d).suffix.lower() not in VIDEO_SUFFIXES]
    return sorted(found)


def _read_list(path: Path) -> list[Path]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    files = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and not ln.startswith("#")]
    if not files:
        raise InferConfigError(f"--input {path}: the file list names no videos")
    return files


def _files(paths: list[Path], kind: str) -> InputListing:
    # The source id of a raw file is its absolute path: stable across runs of a scheduled job. Not
    # resolve(): a symlink loop would raise here instead of becoming a reject.
    records = [record(os.path.abspath(p), os.path.abspath(p)) for p in paths]
    return InputListing(kind, records, None, None, None)


def _native(cfg: InferConfig) -> InputListing:
    from pipelines.datasets import AnnotationError

    try:
        found = read_dataset(cfg.dataset, cfg.input, cfg.annotations, cfg.split or "")
    except AnnotationError as e:
        raise InferConfigError(str(e)) from e
    records = [record(r.source_id, r.path, r.labels, segment=r.segment, segment_fps=r.segment_fps)
               for r in found.rows]
    dataset = cfg.dataset if cfg.dataset != "csv" else None
    return InputListing("native", records, found.heads, found.label_map, dataset,
                   max_fps=DEFAULT_MAX_FPS.get(cfg.dataset))


def _shards(folder: str, split: str | None) -> InputListing:
    """Records of the committed samples of a shard folder (a local path or an object-store URI): the
    tars the commit markers list, located through their DALI indices; key, source id and labels come
    from each sample's JSON member. A record's path is the tar's path, or its full URI. Broken shards
    and indices become rejects, not errors (:func:`_shard_records`)."""
    fs, base = resolve_out(folder)
    prefix = folder.split("://", 1)[0] + "://" if "://" in folder and not folder.startswith("file://") else ""
    try:
        label_map = read_label_map(folder)
    except LabelMapError as err:
        raise InferConfigError(f"--input {err}") from err
    heads = tuple(label_map)
    parts = shard_parts(fs, base)
    splits = sorted(parts)
    if split is not None:
        if split not in splits:
            raise InferConfigError(f"{folder}: no committed shards of split {split!r} (found {splits})")
        splits = [split]
    if not splits:
        raise InferConfigError(f"{folder}: no committed shards (not a finished preprocessing output?)")
    records, rejects = [], []
    for s in splits:
        for i in parts[s]:
            tar = join(base, f"{s}-{i:06d}.tar")
            found, bad = _shard_records(fs, tar, prefix + tar, heads)
            records.extend(found)
            rejects.extend(bad)
    return InputListing("shards", records, heads, label_map, _shards_dataset(fs, base, splits), rejects=rejects)


def _read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _bad(source_id: str, path: str, reason: str, detail: str) -> dict:
    return {"source_id": source_id, "path": path, "reason": reason, "detail": detail[:500]}


def _shard_records(fs, tar: str, path: str, heads: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """(records, rejects) of one shard (``tar`` on ``fs``; ``path`` is what records name). A missing or
    garbage ``.idx`` rejects the whole shard (its samples cannot be located); a sample whose JSON is cut
    off or garbage is rejected alone."""
    import pyarrow.fs as pafs

    idx = tar[:-len(".tar")] + ".idx"
    try:
        samples = read_index(_read(fs, idx).decode())
        info = fs.get_file_info(tar)
    except FileNotFoundError as e:
        return [], [_bad(path, path, "bad_index", f"cannot locate the videos: {e}")]
    except (OSError, ValueError, IndexError) as e:  # UnicodeDecodeError is a ValueError
        return [], [_bad(path, path, "bad_index", f"{posixpath.basename(idx)}: {type(e).__name__}: {e}")]
    if info.type != pafs.FileType.File:
        return [], [_bad(path, path, "not_a_file", f"{path} is not a regular file")]
    tar_size = info.size
    out, bad = [], []
    with fs.open_input_file(tar) as f:
        for n, sample in enumerate(samples):
            where = f"{path}#{n}"
            video = [pos for ext, pos in sample.items() if ext in _SHARD_VIDEO_EXTS]
            if len(video) != 1 or META_EXT not in sample:
                bad.append(_bad(where, path, "bad_index", f"sample {n}: members {sorted(sample)}"))
                continue
            offset, size = sample[META_EXT]
            try:
                meta = json.loads(f.read_at(max(0, min(size, tar_size - offset)), offset))
                labels = {h: int(meta["labels"][h]) for h in heads}
                source_id, key = str(meta["source_id"]), str(meta["key"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                reason = "truncated" if offset + size > tar_size else "bad_index"
                bad.append(_bad(where, path, reason, f"sample {n} metadata: {type(e).__name__}: {e}"))
                continue
            if video[0][0] + video[0][1] > tar_size:
                bad.append(_bad(source_id, path, "truncated", f"video member ends past the tar's {tar_size} bytes"))
                continue
            out.append(record(source_id, path, labels, key=key, offset=video[0][0], size=video[0][1]))
    return out, bad


def _shards_dataset(fs, base: str, splits: list[str]) -> str | None:
    """The dataset the shards were made from, as the preprocessing job recorded it."""
    for s in splits:
        try:
            job = json.loads(_read(fs, join(base, f"job-{s}.json")))
        except (FileNotFoundError, ValueError):
            continue
        dataset = job.get("config", {}).get("dataset") if isinstance(job, dict) else None
        if dataset in DATASETS:
            return dataset
    return None


def check_labels(listing: InputListing, model_labels: dict[str, dict[str, str]]) -> None:
    """Labels of the input must mean what the model's classes mean, or evaluation would be nonsense:
    the same heads, ids the model knows, and the same names where the input names its classes."""
    if not listing.labelled:
        return
    if set(listing.heads) != set(model_labels):
        raise InferConfigError(f"the input's label heads {list(listing.heads)} are not the model's "
                               f"{list(model_labels)}; pass --no-eval to predict without evaluating")
    for h in listing.heads:
        n = len(model_labels[h])
        bad = sorted({r[label_key(h)] for r in listing.records if r[label_key(h)] >= n})
        if bad:
            raise InferConfigError(f"label ids {bad[:10]} of head {h!r} are outside the model's {n} classes")
        names = (listing.label_map or {}).get(h, {})
        differ = [i for i, name in names.items() if name != i and model_labels[h].get(i) not in (None, name)]
        if differ:
            i = differ[0]
            raise InferConfigError(f"class {i} of head {h!r} is {names[i]!r} in the input but "
                                   f"{model_labels[h][i]!r} in the model ({len(differ)} classes differ); "
                                   "pass --no-eval to predict without evaluating")
