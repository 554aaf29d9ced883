"""A small dataset in each native layout, with real codecs, for tests, the demo and the ablation.

Two tasks (defined in :mod:`pipelines.synthetic_tasks`): ``motion``, where a class is one object's
appearance (one of six hues at equal brightness) times its direction of motion, and ``binding``, where a
warm-hued and a cool-hued object move in opposite senses along one axis; its noun is the hue of the one
moving forward, its verb the direction of the warm one. An object's position in any single frame is
distributed the same way for every direction (it wraps around the frame from a uniform random start), so one frame is
not enough: a model must compare frames. Objects are big and high-contrast and cross about half the
frame per clip, so motion stays visible between sparsely sampled frames. ``synthetic.json`` records the
config and :func:`~pipelines.synthetic_tasks.task_id` (the objects and the task's definition), so a cache
of videos made with other objects or another definition is recognised.

With ``heldout_per_class`` a labelled ``heldout`` split is written too, rendered from another seed
than train and validation (a test set no tuning has seen).

    cast-synthetic --dataset ssv2 --out data/synth_ssv2 --num-classes 8 --bad 3   (workflows/synthetic.py)
"""

from __future__ import annotations

import csv
import json
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cast_model.vocab import DATASETS
from pipelines.encode import EncodeConfig, encode_video
from pipelines.synthetic_tasks import (APPEARANCES, DIRECTIONS, TASKS, Scene, class_name, class_parts,
                                       max_classes, object_name, scene_for, task_id)

MAX_CLASSES = max_classes("motion")
HELDOUT_SEED_OFFSET = 7919  # the held-out split's generator: seed + this, a stream train/validation never use


@dataclass(frozen=True)
class SynthConfig:
    # Each field's ``metadata`` is its command-line help (``workflows/synthetic.py``, the cast-synthetic
    # command, builds its flags from them with ``workflows.cli.flags``).
    dataset: str = field(default="ssv2", metadata={"help": "the native layout to write", "choices": DATASETS})
    num_classes: int = field(default=8, metadata={"help": f"classes, 2..{MAX_CLASSES}"})
    videos_per_class: int = field(default=6, metadata={  # validation gets a quarter (at least 1)
        "help": "training videos per class; validation gets a quarter (at least 1)"})
    size: int = field(default=64, metadata={"help": "frame height in pixels (even, >= 32); width is 4/3 of it"})
    frames: int = field(default=24, metadata={"help": "frames per video (>= 4)"})
    fps: float = field(default=12.0, metadata={"help": "frame rate written into the files"})
    seed: int = field(default=0, metadata={"help": "random seed (the same seed writes the same files)"})
    bad: int = field(default=0, metadata={  # broken files (truncated, empty, garbage bytes), cycled
        "help": "broken files (truncated, empty, garbage bytes) and as many missing entries"})
    task: str = field(default="motion", metadata={
        "help": "motion: one object, appearance x direction; binding: a warm and a cool object moving "
                "apart, noun = the forward one's hue, verb = the warm one's direction", "choices": TASKS})
    heldout_per_class: int = field(default=0, metadata={
        "help": "labelled held-out videos per class, rendered from another seed"})

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not 2 <= self.num_classes <= max_classes(self.task):
            raise ValueError(f"num_classes must be in [2, {max_classes(self.task)}] for task {self.task!r}, "
                             f"got {self.num_classes}")
        if self.size < 32 or self.size % 2 or self.frames < 4 or self.videos_per_class < 1:
            raise ValueError("size must be even and >= 32, frames >= 4, videos_per_class >= 1")
        if self.heldout_per_class < 0:
            raise ValueError(f"heldout_per_class must be >= 0, got {self.heldout_per_class}")

    def splits(self) -> tuple[str, ...]:
        """The labelled splits written: train, validation, and heldout when asked for."""
        return ("train", "validation") + (("heldout",) if self.heldout_per_class else ())


def shape_mask(shape: str, r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    if shape == "square":
        return np.ones_like(yy, dtype=bool)
    if shape == "disc":
        return yy**2 + xx**2 <= r * r
    return (yy + r) >= 2 * np.abs(xx)  # triangle pointing up


def paint(img: np.ndarray, mask: np.ndarray, cy: int, cx: int, colour) -> None:
    """Paint ``mask`` centred at (cy, cx), clipped at the borders."""
    r = mask.shape[0] // 2
    h, w = img.shape[:2]
    y0, x0 = cy - r, cx - r
    ys, xs = slice(max(y0, 0), min(y0 + 2 * r + 1, h)), slice(max(x0, 0), min(x0 + 2 * r + 1, w))
    if ys.start < ys.stop and xs.start < xs.stop:
        sub = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        img[ys, xs][sub] = colour


def render_clip(rng: np.random.Generator, appearance: int, direction: int, frames: int, height: int,
                width: int) -> np.ndarray:
    """(F, H, W, 3) uint8: one object of ``appearance`` moving in ``direction`` over a noisy background."""
    return render_scene(rng, Scene(((appearance, direction),)), frames, height, width)


def render_scene(rng: np.random.Generator, scene: Scene, frames: int, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8: the scene's objects, each moving in its direction, over a noisy background
    (later objects are painted over earlier ones where they cross).

    Each object wraps around the frame (leaves on one side, comes back on the other) from a uniform
    random start, so in *every* frame its position is uniform whatever the direction: no single frame
    tells the directions apart, only the change between frames does.
    """
    r = max(height // 6, 4)
    paths = []
    for appearance, direction in scene.objects:
        _, colour, shape = APPEARANCES[appearance]
        dy, dx = DIRECTIONS[direction][1]
        along = width if dx else height
        start = rng.uniform(0, along)
        across = rng.uniform(r + 1, (height if dx else width) - r - 2)
        paths.append([shape_mask(shape, r), colour, dy, dx, along, start, across])
    # Objects moving along one axis keep to lanes of their own, so neither hides the other when they pass:
    # their cross positions are drawn again, together, until they are a disc apart (one object: never).
    same_axis = [i for i, p in enumerate(paths) if sum(bool(q[3]) == bool(p[3]) for q in paths) > 1]
    if same_axis and min(height, width) - 3 * r - 4 < 1:  # the cross range (size - 2r - 3) must exceed 2r + 1
        raise ValueError(f"a {height}x{width} frame has no room for two lanes of objects of radius {r}")
    while any(abs(paths[i][6] - paths[j][6]) < 2 * r + 1 for i in same_axis for j in same_axis
              if i < j and bool(paths[i][3]) == bool(paths[j][3])):
        for i in same_axis:
            paths[i][6] = rng.uniform(r + 1, (height if paths[i][3] else width) - r - 2)
    bg = rng.integers(20, 60, size=3)
    out = np.clip(bg + rng.normal(0, 6, size=(frames, height, width, 1)), 0, 255).astype(np.uint8)
    for t, img in enumerate(out):  # painted in place
        for m, colour, dy, dx, along, start, across in paths:
            travel = 0.5 * along  # pixels over the whole clip
            pos = (start + (dx + dy) * travel * t / (frames - 1)) % along
            for p in (pos - along, pos, pos + along):  # the parts of a wrapping object on either side
                cy, cx = (int(round(p)), int(round(across))) if dy else (int(round(across)), int(round(p)))
                paint(img, m, cy, cx, colour)
    return out


def _broken(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: max(len(good) // 3, 64)]
    if kind == "empty":
        return b""
    return np.random.default_rng(len(good)).integers(0, 256, size=4096, dtype=np.uint8).tobytes()


BROKEN_KINDS = ("truncated", "empty", "garbage")


class _Writer:
    """Shared by the three layouts: renders, encodes and breaks clips the same way."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.codec = "vp9" if cfg.dataset == "ssv2" else "h264"
        self.enc = EncodeConfig(codec=self.codec, gop=12, crf=30)
        self.height, self.width = cfg.size, (cfg.size * 4 // 3) // 2 * 2
        self.broken: dict[str, str] = {}  # source id -> expected reject reason
        self._missing_left = self._bad_left = cfg.bad  # listed samples still to leave out / to break

    def clip(self, c: int, frames: int | None = None) -> np.ndarray:
        scene = scene_for(c, self.cfg.task, lambda n: int(self.rng.integers(n)))
        return render_scene(self.rng, scene, frames or self.cfg.frames, self.height, self.width)

    def name(self, c: int) -> str:
        return class_name(c, self.cfg.task)

    def write(self, path: Path, frames: np.ndarray, source_id: str, bad_index: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_video(frames, self.cfg.fps, self.enc)
        if bad_index is not None:
            kind = BROKEN_KINDS[bad_index % len(BROKEN_KINDS)]
            data = _broken(kind, data)
            self.broken[source_id] = {"garbage": "undecodable"}.get(kind, kind)
        path.write_bytes(data)

    def write_listed(self, path: Path, c: int, source_id: str, position: int, split: str) -> None:
        """The video of the ``position``-th (from 1) listed sample of ``split``, of class ``c``. Until
        ``cfg.bad`` of each: every 5th training sample's file is left out (``missing``), every 4th
        other one is written broken."""
        if self._missing_left and split == "train" and position % 5 == 0:
            self._missing_left -= 1
            self.broken[source_id] = "missing"
            return
        bad = None
        if self._bad_left and position % 4 == 0:
            bad, self._bad_left = self.cfg.bad - self._bad_left, self._bad_left - 1
        self.write(path, self.clip(c), source_id, bad)

    def plan(self, split: str) -> list[int]:
        """The shuffled class of each sample of ``split``. Entering ``heldout`` switches to the held-out
        generator for good (it is the last split written), so its videos come from another seed."""
        if split == "heldout":
            self.rng = np.random.default_rng(self.cfg.seed + HELDOUT_SEED_OFFSET)
            per = self.cfg.heldout_per_class
        else:
            per = self.cfg.videos_per_class if split == "train" else max(1, self.cfg.videos_per_class // 4)
        labels = [c for c in range(self.cfg.num_classes) for _ in range(per)]
        self.rng.shuffle(labels)
        return labels


def _youtube_id(rng: np.random.Generator, i: int) -> str:
    # Real ids have 11 characters from [A-Za-z0-9_-] and may start with '-'.
    chars = string.ascii_letters + string.digits + "_-"
    body = "".join(rng.choice(list(chars), size=9))
    return ("-" if i % 3 == 0 else "a") + body + "_"


def write_ssv2(cfg: SynthConfig, out: Path) -> dict:
    w = _Writer(cfg)
    labels_dir, videos = out / "labels", out / "videos"
    labels_dir.mkdir(parents=True, exist_ok=True)
    names = {w.name(c): str(c) for c in range(cfg.num_classes)}
    (labels_dir / "labels.json").write_text(json.dumps(names, indent=1))
    next_id = 1000

    def labelled(split: str) -> None:
        nonlocal next_id
        entries = []
        for c in w.plan(split):
            vid = str(next_id)
            next_id += 1
            obj = object_name(class_parts(c, cfg.task)[0])
            entries.append({"id": vid, "label": w.name(c).lower(), "template": w.name(c).replace(obj, f"[{obj}]", 1),
                            "placeholders": ["object"]})
            w.write_listed(videos / f"{vid}.webm", c, vid, len(entries), split)
        (labels_dir / f"{split}.json").write_text(json.dumps(entries, indent=1))

    labelled("train")
    labelled("validation")
    test = []  # SSV2's test split lists ids only
    for _ in range(2):
        vid = str(next_id)
        next_id += 1
        w.write(videos / f"{vid}.webm", w.clip(int(w.rng.integers(cfg.num_classes))), vid)
        test.append({"id": vid})
    (labels_dir / "test.json").write_text(json.dumps(test, indent=1))
    if cfg.heldout_per_class:
        labelled("heldout")
    return {"videos": str(videos), "annotations": str(labels_dir), "broken": w.broken}


def write_k400(cfg: SynthConfig, out: Path) -> dict:
    w = _Writer(cfg)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    n = 0
    splits = [("train", "train", "train.csv"), ("val", "val", "validate.csv")]
    if cfg.heldout_per_class:
        splits.append(("heldout", "heldout", "heldout.csv"))
    for split, folder, csv_name in splits:
        rows = []
        for c in w.plan({"val": "validation"}.get(split, split)):
            yid = _youtube_id(w.rng, n)
            n += 1
            start = int(w.rng.integers(0, 300))
            end = start + 10
            rows.append({"label": w.name(c), "youtube_id": yid, "time_start": start, "time_end": end,
                         "split": split})
            sid = f"{yid}_{start:06d}_{end:06d}"
            w.write_listed(out / folder / f"{sid}.mp4", c, sid, len(rows), split)
        _write_csv(out / "annotations" / csv_name, ["label", "youtube_id", "time_start", "time_end", "split"], rows)
    heldout = {"heldout_videos": str(out / "heldout"), "heldout_annotations": str(out / "annotations" / "heldout.csv")}
    return {"videos": str(out / "train"), "val_videos": str(out / "val"),
            "annotations": str(out / "annotations" / "train.csv"),
            "val_annotations": str(out / "annotations" / "validate.csv"), "broken": w.broken,
            **(heldout if cfg.heldout_per_class else {})}


EK_COLUMNS = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
              "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
              "noun_class", "all_nouns", "all_noun_classes"]
EK_RELEASED_FPS = 50.0  # annotation frame numbering (the released RGB frames), unlike the MP4s' own rate


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _ts(seconds: float) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:06.3f}"


def write_ek100(cfg: SynthConfig, out: Path) -> dict:
    """Long videos per participant, each a sequence of actions separated by still background; verb =
    direction of motion, noun = object (binding: the verb is the warm object's direction, the noun the hue of
    the object moving forward). Annotation frames count at 50 fps while the MP4s run at
    ``cfg.fps``, as with the real released frames; one segment per training video runs past the end
    (clamped) and, with ``bad``, one starts past the end (``segment_out_of_range``)."""
    w = _Writer(cfg)
    ann = out / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    gap = 4
    info = []
    splits = [("train", "EPIC_100_train.csv", 1), ("validation", "EPIC_100_validation.csv", 101)]
    if cfg.heldout_per_class:
        splits.append(("heldout", "EPIC_100_heldout.csv", 201))
    for split, csv_name, first_video in splits:
        rows = []
        labels = w.plan(split)
        per_video = 6
        for v, chunk_start in enumerate(range(0, len(labels), per_video)):
            part = f"P{(v % 2) + 1:02d}"
            video_id = f"{part}_{first_video + v:02d}"
            clips, t = [], 0
            for j, c in enumerate(labels[chunk_start:chunk_start + per_video]):
                a, d = class_parts(c, cfg.task)
                still = np.full((gap, w.height, w.width, 3), 30, np.uint8)  # nothing happens
                clips.append(still)
                t += gap
                clip = w.clip(c)
                start, stop = t, t + cfg.frames - 1
                clips.append(clip)
                t += cfg.frames
                s_rel, e_rel = start * EK_RELEASED_FPS / cfg.fps, (stop + 1) * EK_RELEASED_FPS / cfg.fps - 1
                rows.append({"narration_id": f"{video_id}_{j}", "participant_id": part, "video_id": video_id,
                             "narration_timestamp": _ts(start / cfg.fps), "start_timestamp": _ts(start / cfg.fps),
                             "stop_timestamp": _ts((stop + 1) / cfg.fps), "start_frame": int(round(s_rel)),
                             "stop_frame": int(round(e_rel)), "narration": f"move {APPEARANCES[a][0]} {APPEARANCES[a][2]}",
                             "verb": f"move-{d}", "verb_class": d, "noun": f"{APPEARANCES[a][0]}-{APPEARANCES[a][2]}",
                             "noun_class": a, "all_nouns": f"['{APPEARANCES[a][0]}']", "all_noun_classes": f"[{a}]"})
            total = t
            if split == "train" and v == 0:
                # the last action is cut by the end of the recording: its segment runs past the end
                rows[-1]["stop_frame"] = int(round((total + 2 * cfg.fps) * EK_RELEASED_FPS / cfg.fps))
                if cfg.bad:
                    r = dict(rows[-1], narration_id=f"{video_id}_{per_video + 1}",
                             start_frame=int(round((total + cfg.fps) * EK_RELEASED_FPS / cfg.fps)))
                    r["stop_frame"] = r["start_frame"] + 20
                    rows.append(r)
                    w.broken[r["narration_id"]] = "segment_out_of_range"
            w.write(out / part / "videos" / f"{video_id}.MP4", np.concatenate(clips), video_id)
            info.append({"video_id": video_id, "duration": total / cfg.fps, "fps": EK_RELEASED_FPS,
                         "resolution": f"{w.width}x{w.height}"})
        if split == "train" and cfg.bad:
            # a listed video that was never downloaded, and broken files
            rows.append(dict(rows[0], narration_id="P09_01_0", participant_id="P09", video_id="P09_01"))
            w.broken["P09_01_0"] = "missing"
            for b in range(cfg.bad):
                vid = f"P03_{b + 1:02d}"
                w.write(out / "P03" / "videos" / f"{vid}.MP4", w.clip(0), vid, bad_index=b)
                reason = w.broken.pop(vid)
                rows.append(dict(rows[0], narration_id=f"{vid}_0", participant_id="P03", video_id=vid,
                                 start_frame=0, stop_frame=int(cfg.frames * EK_RELEASED_FPS / cfg.fps) - 1))
                w.broken[f"{vid}_0"] = reason
        _write_csv(ann / csv_name, EK_COLUMNS, rows)
    _write_csv(ann / "EPIC_100_video_info.csv", ["video_id", "duration", "fps", "resolution"], info)
    heldout = {"heldout_annotations": str(ann / "EPIC_100_heldout.csv")} if cfg.heldout_per_class else {}
    return {"videos": str(out), "annotations": str(ann / "EPIC_100_train.csv"),
            "val_annotations": str(ann / "EPIC_100_validation.csv"), "broken": w.broken, **heldout}


def made_dataset(cfg: SynthConfig, out: str | Path) -> dict | None:
    """The paths :func:`write_dataset` returned if ``out`` holds the dataset of ``cfg`` painted with today's
    objects (its ``synthetic.json`` says so), else None: a folder of other settings or other objects must be
    written again."""
    marker = Path(out) / "synthetic.json"
    if not marker.is_file():
        return None
    made = json.loads(marker.read_text())
    if made.get("config") != cfg.__dict__ or made.get("task_id") != task_id(cfg.task):
        return None
    return {k: v for k, v in made.items() if k not in ("config", "task_id")}


def ensure_dataset(cfg: SynthConfig, out: str | Path, derived: tuple[Path, ...] = (),
                   log: Callable[[str], None] = print) -> dict:
    """:func:`made_dataset`'s paths when ``out`` holds ``cfg``'s dataset, else the dataset written anew. A
    folder of other settings or objects is removed first, and so is each ``derived`` folder made from it
    (shards: preprocessing resumes from whatever is there, so stale shards would be kept)."""
    out = Path(out)
    made = made_dataset(cfg, out)
    if made is not None:
        log(f"synthetic videos already in {out}")
        return made
    stale = [p for p in (out, *derived) if p.exists()]
    if stale:
        log(f"removing {', '.join(map(str, stale))}: made from videos of other objects or settings")
        for path in stale:
            shutil.rmtree(path)
    log(f"writing {cfg.num_classes} classes x {cfg.videos_per_class} synthetic {cfg.dataset} videos to {out}")
    return write_dataset(cfg, out)


def write_dataset(cfg: SynthConfig, out: str | Path) -> dict:
    """Write the dataset; returns its paths and ``broken``: {source_id: expected reject reason}."""
    out = Path(out)
    writer = {"ssv2": write_ssv2, "k400": write_k400, "ek100": write_ek100}[cfg.dataset]
    result = writer(cfg, out)
    # "task_id": which objects and task definition made these videos (a reader remakes them when it changed)
    (out / "synthetic.json").write_text(json.dumps({"config": cfg.__dict__, "task_id": task_id(cfg.task), **result},
                                                   indent=1))
    return result
