"""One reader per native layout; every reader returns the same :class:`Listing` of :class:`VideoRow`.

Readers only parse annotations and build paths; they never open videos (a missing video becomes a
``missing`` reject in the job, counted and reported, not an error here). A malformed annotation file is
a wrong config and fails before any work starts.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from cast_model.vocab import DATASETS, EK100_HEADS, SINGLE_HEAD
from pipelines.schema import VideoRow

# Input layouts :func:`read_dataset` reads: each dataset's native one, plus a plain CSV list.
LAYOUTS: tuple[str, ...] = (*DATASETS, "csv")


@dataclass(frozen=True)
class Listing:
    rows: list[VideoRow]
    label_map: dict[str, dict[str, str]]  # {head: {class_id_str: class_name}}
    heads: tuple[str, ...]


class AnnotationError(ValueError):
    """The annotations cannot be read as the layout they claim to be. The message names the file, the
    row (1-based line for CSVs, entry index for JSON) and the field."""


def _where(path, row, field: str) -> str:
    return f"{path}: {row}, field {field!r}"


def _int(value, path, row, field: str, minimum: int | None = 0) -> int:
    """An integer field (``"12"``, ``12``, ``"12.0"`` not accepted: a class id or frame is exact)."""
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise AnnotationError(f"{_where(path, row, field)}: expected an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise AnnotationError(f"{_where(path, row, field)}: must be >= {minimum}, got {number}")
    return number


def _seconds(value, path, row, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise AnnotationError(f"{_where(path, row, field)}: expected a finite time >= 0, got {value!r}")
    return number


def _name(value, path, row, field: str) -> str:
    """A non-empty id that becomes part of a path: no separators, no '..'."""
    if isinstance(value, (dict, list, bool)) or value is None or str(value).strip() == "":
        raise AnnotationError(f"{_where(path, row, field)}: expected a non-empty id, got {value!r}")
    text = str(value)
    if "/" in text or "\\" in text or text in (".", "..") or "\0" in text:
        raise AnnotationError(f"{_where(path, row, field)}: {text!r} is not a plain file name")
    return text


def _check_classes(path, row, field: str, value: int, classes: dict[str, str]) -> int:
    if str(value) not in classes:
        raise AnnotationError(f"{_where(path, row, field)}: class {value} is not in the class list "
                              f"({len(classes)} classes)")
    return value


def _all_or_none(path, labelled: list[bool], rows: list, field: str) -> None:
    """A file labels every row (train/validation) or none (test): one unlabelled row among labelled
    ones is a mistake, not a test sample, and would go into the shards with label -1."""
    if any(labelled) and not all(labelled):
        row = rows[labelled.index(False)]
        raise AnnotationError(f"{_where(path, row, field)}: missing, while other rows are labelled")


def read_dataset(dataset: str, videos: str, annotations: str, split: str,
                 label_map: dict[str, dict[str, str]] | None = None) -> Listing:
    """Dispatch to the reader of ``dataset``. ``label_map`` (from an existing ``classes.json``) pins the
    class ids of layouts whose ids are derived from names (K400), so every split agrees."""
    if dataset == "ssv2":
        return read_ssv2(videos, annotations, split)
    if dataset == "k400":
        return read_k400(videos, annotations, label_map)
    if dataset == "ek100":
        return read_ek100(videos, annotations)
    if dataset == "csv":
        return read_csv_list(videos, annotations)
    raise AnnotationError(f"unknown dataset {dataset!r}; expected one of {LAYOUTS}")


def read_label_file(dataset: str, path: str) -> dict[str, dict[str, str]]:
    """The class names of ``dataset`` from its own label file, numbered as its readers (and the paper's
    code) number them: SSV2 ``labels.json`` (or its folder) by its ids; K400 an annotation CSV
    (``label,youtube_id,...``) by sorted class name; EK100 ``EPIC_100_<split>.csv`` by the ``id`` of
    ``EPIC_100_{verb,noun}_classes.csv`` beside it (else the annotations' ``verb_class``/``noun_class``)."""
    if dataset == "ssv2":
        p = Path(path)
        return ssv2_label_map(p / "labels.json" if p.is_dir() else p)
    if dataset == "k400":
        return _k400_label_map(_read_csv(path, ("label",)))
    if dataset == "ek100":
        table = _read_csv(path, ())
        return {h: _ek100_names(path, h, table) for h in EK100_HEADS}
    raise AnnotationError(f"no label file for dataset {dataset!r}; expected one of {DATASETS}")


def _load_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AnnotationError(f"cannot read {path}: {e}") from e


def _ssv2_names(path: Path) -> dict[str, int]:
    names = _load_json(path)
    if not isinstance(names, dict) or not names:
        raise AnnotationError(f"{path}: expected a non-empty object template -> class id")
    ids: dict[int, str] = {}
    for template, v in names.items():
        i = _int(v, path, f"template {template!r}", "id")
        if i in ids:
            raise AnnotationError(f"{path}: templates {ids[i]!r} and {template!r} share class id {i}")
        ids[i] = template
    return {t: int(v) for t, v in names.items()}


def ssv2_label_map(labels_json: Path) -> dict[str, dict[str, str]]:
    """SSV2's classes: class id ``i`` is the template ``labels.json`` maps to ``i``."""
    names = _ssv2_names(labels_json)
    return {"label": {str(v): k for k, v in sorted(names.items(), key=lambda kv: kv[1])}}


# SSV2 ships WebM; re-downloads and conversions come as MP4 or MKV. The first that exists is read.
SSV2_SUFFIXES = (".webm", ".mp4", ".mkv")


def ssv2_path(videos: str, vid: str) -> str:
    """``<videos>/<id>.webm``, else ``<id>.mp4`` or ``<id>.mkv`` when that exists (a missing video keeps
    the ``.webm`` name; its reject says which names were tried)."""
    for suffix in SSV2_SUFFIXES:
        path = Path(videos) / f"{vid}{suffix}"
        if os.path.lexists(path):
            return str(path)
    return str(Path(videos) / f"{vid}{SSV2_SUFFIXES[0]}")


def read_ssv2(videos: str, labels_dir: str, split: str) -> Listing:
    """Something-Something-V2: ``labels.json`` maps the template *without* brackets to a class id
    string; ``<split>.json`` entries carry the template *with* ``[something]`` brackets. Entries carry a
    template all (train/validation) or none (test)."""
    labels_dir_p = Path(labels_dir)
    label_map = ssv2_label_map(labels_dir_p / "labels.json")
    names = {template: int(i) for i, template in label_map["label"].items()}
    split_path = labels_dir_p / f"{split}.json"
    entries = _load_json(split_path)
    if not isinstance(entries, list):
        raise AnnotationError(f"{split_path}: expected a list of entries, got {type(entries).__name__}")
    rows, labelled, where = [], [], []
    for i, e in enumerate(entries):
        row = f"entry {i}"
        if not isinstance(e, dict):
            raise AnnotationError(f"{split_path}: {row}: expected an object, got {type(e).__name__}")
        vid = _name(e.get("id"), split_path, row, "id")
        label = -1  # test split: ids only
        if "template" in e:
            if not isinstance(e["template"], str):
                raise AnnotationError(f"{_where(split_path, row, 'template')}: expected text, got {e['template']!r}")
            template = e["template"].replace("[", "").replace("]", "")
            if template not in names:
                raise AnnotationError(f"{_where(split_path, row, 'template')}: {template!r} (id {vid}) "
                                      "is not in labels.json")
            label = names[template]
        labelled.append(label >= 0)
        where.append(row)
        rows.append(VideoRow(vid, ssv2_path(videos, vid), {"label": label}))
    _all_or_none(split_path, labelled, where, "template")
    return Listing(rows, label_map, SINGLE_HEAD)


def k400_filename(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}.mp4"


def _read_csv(path: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise AnnotationError(f"{path}: missing columns {missing}; found {reader.fieldnames}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AnnotationError(f"cannot read {path}: {e}") from e


def _k400_label_map(table: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Kinetics' classes: class id ``i`` is the ``i``-th class name in sorted order (the numbering of the
    Kinetics lists the paper's code and VideoMAE train on)."""
    names = sorted({r["label"] for r in table if r["label"]})
    return {"label": {str(i): n for i, n in enumerate(names)}}


def read_k400(videos: str, csv_path: str, label_map: dict[str, dict[str, str]] | None = None) -> Listing:
    """Kinetics-400 CSV ``label,youtube_id,time_start,time_end,split``. Class ids are the sorted class
    names unless ``label_map`` pins them (then an unknown name is an error). Videos live in the split's
    folder, flat or in per-class sub-folders."""
    table = _read_csv(csv_path, ("label", "youtube_id", "time_start", "time_end"))
    if label_map is None:
        label_map = _k400_label_map(table)
    ids = {n: int(i) for i, n in label_map["label"].items()}
    rows, labelled, where = [], [], []
    for n, r in enumerate(table):
        row = f"line {n + 2}"
        name = r["label"] or ""
        if name and name not in ids:
            raise AnnotationError(f"{_where(csv_path, row, 'label')}: class {name!r} not in the existing classes.json")
        start = _seconds(r["time_start"], csv_path, row, "time_start")
        end = _seconds(r["time_end"], csv_path, row, "time_end")
        if end <= start:
            raise AnnotationError(f"{_where(csv_path, row, 'time_end')}: {r['time_end']!r} is not after "
                                  f"time_start {r['time_start']!r}")
        fname = k400_filename(_name(r["youtube_id"], csv_path, row, "youtube_id"), int(start), int(end))
        path = Path(videos) / fname
        if not path.exists() and name and (Path(videos) / name / fname).exists():
            path = Path(videos) / name / fname
        labelled.append(bool(name))
        where.append(row)
        rows.append(VideoRow(fname[:-4], str(path), {"label": ids[name] if name else -1}))
    _all_or_none(csv_path, labelled, where, "label")
    return Listing(rows, label_map, SINGLE_HEAD)


def _ek100_fps(csv_path: str) -> dict[str, float]:
    """Released-frame rate per video from ``EPIC_100_video_info.csv`` beside the annotations, if any."""
    info = Path(csv_path).parent / "EPIC_100_video_info.csv"
    if not info.exists():
        return {}
    out = {}
    for n, r in enumerate(_read_csv(str(info), ("video_id", "fps"))):
        fps = _seconds(r["fps"], info, f"line {n + 2}", "fps")
        if fps <= 0:
            raise AnnotationError(f"{_where(info, f'line {n + 2}', 'fps')}: must be > 0, got {r['fps']!r}")
        out[r["video_id"]] = fps
    return out


def _ek100_names(csv_path: str, head: str, table: list[dict[str, str]]) -> dict[str, str]:
    """Class names: ``EPIC_100_<head>_classes.csv`` (id,key) beside the annotations, else the
    annotations' own ``verb``/``noun`` text."""
    classes = Path(csv_path).parent / f"EPIC_100_{head}_classes.csv"
    if classes.exists():
        names: dict[str, str] = {}
        for n, r in enumerate(_read_csv(str(classes), ("id", "key"))):
            i = str(_int(r["id"], classes, f"line {n + 2}", "id"))
            if i in names:
                raise AnnotationError(f"{_where(classes, f'line {n + 2}', 'id')}: class id {i} listed twice")
            names[i] = r["key"]
        return names
    names = {}
    for n, r in enumerate(table):
        if r.get(f"{head}_class", "") != "":
            i = str(_int(r[f"{head}_class"], csv_path, f"line {n + 2}", f"{head}_class"))
            names.setdefault(i, r.get(head) or i)
    return dict(sorted(names.items(), key=lambda kv: int(kv[0])))


def read_ek100(videos: str, csv_path: str) -> Listing:
    """EPIC-KITCHENS-100 ``EPIC_100_<split>.csv``: each row is a segment ``[start_frame, stop_frame]`` of
    ``<participant>/videos/<video_id>.MP4``, counted in released RGB frames (see ``decode.segment_seconds``).

    Segment rule: ``0 <= start_frame <= stop_frame`` or the file is refused (row and field named); a
    segment that ends past its video is cut at the end (``clamped`` in the manifest); one that starts
    past the end is a ``segment_out_of_range`` reject. Never the whole video."""
    table = _read_csv(csv_path, ("narration_id", "participant_id", "video_id", "start_frame", "stop_frame"))
    fps = _ek100_fps(csv_path)
    label_map = {h: _ek100_names(csv_path, h, table) for h in EK100_HEADS}
    rows, labelled, where = [], [], []
    for n, r in enumerate(table):
        row = f"line {n + 2}"
        labels = {}
        for h in EK100_HEADS:
            value = r.get(f"{h}_class", "") or ""
            labels[h] = -1 if value == "" else _check_classes(
                csv_path, row, f"{h}_class", _int(value, csv_path, row, f"{h}_class"), label_map[h])
        start = _int(r["start_frame"], csv_path, row, "start_frame")
        stop = _int(r["stop_frame"], csv_path, row, "stop_frame")
        if stop < start:
            raise AnnotationError(f"{_where(csv_path, row, 'stop_frame')}: {stop} is before start_frame {start}")
        participant = _name(r["participant_id"], csv_path, row, "participant_id")
        video_id = _name(r["video_id"], csv_path, row, "video_id")
        path = Path(videos) / participant / "videos" / f"{video_id}.MP4"
        if not path.exists() and path.with_suffix(".mp4").exists():
            path = path.with_suffix(".mp4")
        labelled.append(all(v >= 0 for v in labels.values()))
        where.append(row)
        rows.append(VideoRow(_name(r["narration_id"], csv_path, row, "narration_id"), str(path), labels,
                             (start, stop), fps.get(video_id)))
    _all_or_none(csv_path, labelled, where, "verb_class/noun_class")
    return Listing(rows, label_map, EK100_HEADS)


def read_csv_list(videos: str, list_path: str) -> Listing:
    """The paper code's plain lists: ``path label`` (space separated) or ``video,verb,noun`` (comma
    separated, EK100 heads). Paths are relative to ``videos``; a header line is skipped."""
    try:
        lines = [ln.strip() for ln in Path(list_path).read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"cannot read {list_path}: {e}") from e
    if not lines:
        raise AnnotationError(f"{list_path}: empty list")
    comma = "," in lines[0]
    heads = EK100_HEADS if comma else SINGLE_HEAD
    rows, seen = [], {h: set() for h in heads}
    for n, line in enumerate(lines):
        parts = line.split(",") if comma else line.rsplit(maxsplit=1)
        if len(parts) != len(heads) + 1:
            raise AnnotationError(f"{list_path}:{n + 1}: expected {len(heads) + 1} fields, got {line!r}")
        try:
            labels = {h: int(v) for h, v in zip(heads, parts[1:])}
        except ValueError:
            if n == 0:
                continue  # header
            raise AnnotationError(f"{list_path}:{n + 1}: labels must be integers: {line!r}") from None
        for h, v in labels.items():
            if v < 0:
                raise AnnotationError(f"{list_path}:{n + 1}: label {h!r} must be >= 0, got {v}")
            seen[h].add(v)
        path = parts[0].strip()
        full = path if os.path.isabs(path) else str(Path(videos) / path)
        rows.append(VideoRow(path.rsplit(".", 1)[0] if "." in Path(path).name else path, full, labels))
    label_map = {h: {str(i): str(i) for i in sorted(seen[h])} for h in heads}
    return Listing(rows, label_map, heads)
