"""One reader per native layout; every reader returns the same :class:`Listing` of :class:`VideoRow`.

Readers only parse annotations and build paths; they never open videos (a missing video becomes a
``missing`` reject in the job, counted and reported, not an error here). A malformed annotation file is
a wrong config and fails before any work starts.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.schema import EK100_HEADS, SINGLE_HEAD, VideoRow

DATASETS: tuple[str, ...] = ("ssv2", "k400", "ek100", "csv")


@dataclass(frozen=True)
class Listing:
    rows: list[VideoRow]
    label_map: dict[str, dict[str, str]]  # {head: {class_id_str: class_name}}
    heads: tuple[str, ...]


class AnnotationError(ValueError):
    """The annotations cannot be read as the layout they claim to be."""


def heads_for(dataset: str) -> tuple[str, ...]:
    return EK100_HEADS if dataset == "ek100" else SINGLE_HEAD


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
    raise AnnotationError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def _load_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise AnnotationError(f"cannot read {path}: {e}") from e


def read_ssv2(videos: str, labels_dir: str, split: str) -> Listing:
    """Something-Something-V2: ``labels.json`` maps the template *without* brackets to a class id
    string; ``<split>.json`` entries carry the template *with* ``[something]`` brackets."""
    labels_dir_p = Path(labels_dir)
    names = _load_json(labels_dir_p / "labels.json")
    if not isinstance(names, dict):
        raise AnnotationError(f"{labels_dir_p / 'labels.json'}: expected an object template -> id")
    label_map = {"label": {str(v): k for k, v in sorted(names.items(), key=lambda kv: int(kv[1]))}}
    entries = _load_json(labels_dir_p / f"{split}.json")
    rows = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e:
            raise AnnotationError(f"{split}.json entry {i}: expected an object with an 'id'")
        if "template" in e:
            template = e["template"].replace("[", "").replace("]", "")
            if template not in names:
                raise AnnotationError(f"{split}.json entry {e['id']}: template {template!r} not in labels.json")
            label = int(names[template])
        else:
            label = -1  # test split: ids only
        rows.append(VideoRow(str(e["id"]), str(Path(videos) / f"{e['id']}.webm"), {"label": label}))
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
    except OSError as e:
        raise AnnotationError(f"cannot read {path}: {e}") from e


def read_k400(videos: str, csv_path: str, label_map: dict[str, dict[str, str]] | None = None) -> Listing:
    """Kinetics-400 CSV ``label,youtube_id,time_start,time_end,split``. Class ids are the sorted class
    names unless ``label_map`` pins them (then an unknown name is an error). Videos live in the split's
    folder, flat or in per-class sub-folders."""
    table = _read_csv(csv_path, ("label", "youtube_id", "time_start", "time_end"))
    if label_map is None:
        names = sorted({r["label"] for r in table if r["label"]})
        label_map = {"label": {str(i): n for i, n in enumerate(names)}}
    ids = {n: int(i) for i, n in label_map["label"].items()}
    rows = []
    for r in table:
        name = r["label"]
        if name and name not in ids:
            raise AnnotationError(f"{csv_path}: class {name!r} not in the existing classes.json")
        fname = k400_filename(r["youtube_id"], int(float(r["time_start"])), int(float(r["time_end"])))
        path = Path(videos) / fname
        if not path.exists() and name and (Path(videos) / name / fname).exists():
            path = Path(videos) / name / fname
        rows.append(VideoRow(fname[:-4], str(path), {"label": ids[name] if name else -1}))
    return Listing(rows, label_map, SINGLE_HEAD)


def _ek100_fps(csv_path: str) -> dict[str, float]:
    """Released-frame rate per video from ``EPIC_100_video_info.csv`` beside the annotations, if any."""
    info = Path(csv_path).parent / "EPIC_100_video_info.csv"
    if not info.exists():
        return {}
    return {r["video_id"]: float(r["fps"]) for r in _read_csv(str(info), ("video_id", "fps"))}


def _ek100_names(csv_path: str, head: str, table: list[dict[str, str]]) -> dict[str, str]:
    """Class names: ``EPIC_100_<head>_classes.csv`` (id,key) beside the annotations, else the
    annotations' own ``verb``/``noun`` text."""
    classes = Path(csv_path).parent / f"EPIC_100_{head}_classes.csv"
    if classes.exists():
        return {str(int(r["id"])): r["key"] for r in _read_csv(str(classes), ("id", "key"))}
    names: dict[str, str] = {}
    for r in table:
        if r.get(f"{head}_class", "") != "":
            names.setdefault(str(int(r[f"{head}_class"])), r.get(head) or str(int(r[f"{head}_class"])))
    return dict(sorted(names.items(), key=lambda kv: int(kv[0])))


def read_ek100(videos: str, csv_path: str) -> Listing:
    """EPIC-KITCHENS-100 ``EPIC_100_<split>.csv``: each row is a segment ``[start_frame, stop_frame]`` of
    ``<participant>/videos/<video_id>.MP4``, counted in released RGB frames (see ``decode.segment_seconds``)."""
    table = _read_csv(csv_path, ("narration_id", "participant_id", "video_id", "start_frame", "stop_frame"))
    fps = _ek100_fps(csv_path)
    label_map = {h: _ek100_names(csv_path, h, table) for h in EK100_HEADS}
    rows = []
    for r in table:
        labels = {h: int(r[f"{h}_class"]) if r.get(f"{h}_class", "") != "" else -1 for h in EK100_HEADS}
        path = Path(videos) / r["participant_id"] / "videos" / f"{r['video_id']}.MP4"
        if not path.exists() and path.with_suffix(".mp4").exists():
            path = path.with_suffix(".mp4")
        rows.append(VideoRow(r["narration_id"], str(path), labels,
                             (int(r["start_frame"]), int(r["stop_frame"])), fps.get(r["video_id"])))
    return Listing(rows, label_map, EK100_HEADS)


def read_csv_list(videos: str, list_path: str) -> Listing:
    """The paper code's plain lists: ``path label`` (space separated) or ``video,verb,noun`` (comma
    separated, EK100 heads). Paths are relative to ``videos``; a header line is skipped."""
    try:
        lines = [ln.strip() for ln in Path(list_path).read_text().splitlines() if ln.strip()]
    except OSError as e:
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
            seen[h].add(v)
        path = parts[0].strip()
        full = path if os.path.isabs(path) else str(Path(videos) / path)
        rows.append(VideoRow(path.rsplit(".", 1)[0] if "." in Path(path).name else path, full, labels))
    label_map = {h: {str(i): str(i) for i in sorted(seen[h])} for h in heads}
    return Listing(rows, label_map, heads)
