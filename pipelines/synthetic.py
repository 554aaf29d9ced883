"""A small dataset in each native layout, with real codecs, for tests and the demo.

A class is an appearance (colour + shape) times a direction of motion, and the object's position in
any single frame is distributed the same way for every direction (it wraps around the frame from a
uniform random start), so one frame is not enough: a model must compare frames. Objects are big and high-contrast and cross about half the frame per clip, so
motion stays visible between sparsely sampled frames.

    cast-synthetic --dataset ssv2 --out data/synth_ssv2 --num-classes 8 --bad 3   (workflows/synthetic.py)
"""

from __future__ import annotations

import csv
import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cast_model.vocab import DATASETS
from pipelines.encode import EncodeConfig, encode_video

APPEARANCES: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("red", (230, 40, 40), "square"),
    ("green", (40, 220, 60), "disc"),
    ("blue", (50, 80, 240), "triangle"),
    ("yellow", (235, 225, 40), "disc"),
    ("magenta", (220, 50, 220), "triangle"),
    ("cyan", (40, 220, 230), "square"),
)
# (name, unit vector (dy, dx)) -- image coordinates, y down
DIRECTIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("from left to right", (0, 1)),
    ("from right to left", (0, -1)),
    ("downwards", (1, 0)),
    ("upwards", (-1, 0)),
)
MAX_CLASSES = len(APPEARANCES) * len(DIRECTIONS)


@dataclass(frozen=True)
class SynthConfig:
    dataset: str = "ssv2"
    num_classes: int = 8
    videos_per_class: int = 6  # training videos per class; validation gets a quarter (at least 1)
    size: int = 64  # frame height; width is 4/3 of it
    frames: int = 24
    fps: float = 12.0
    seed: int = 0
    bad: int = 0  # broken files (truncated, empty, garbage bytes), cycled, plus as many missing entries

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}], got {self.num_classes}")
        if self.size < 32 or self.size % 2 or self.frames < 4 or self.videos_per_class < 1:
            raise ValueError("size must be even and >= 32, frames >= 4, videos_per_class >= 1")


def class_parts(c: int) -> tuple[int, int]:
    """Class id -> (appearance index, direction index)."""
    return c // len(DIRECTIONS), c % len(DIRECTIONS)


def class_name(c: int) -> str:
    a, d = class_parts(c)
    colour, _, shape = APPEARANCES[a]
    return f"Moving {colour} {shape} {DIRECTIONS[d][0]}"


def _mask(shape: str, r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    if shape == "square":
        return np.ones_like(yy, dtype=bool)
    if shape == "disc":
        return yy**2 + xx**2 <= r * r
    return (yy + r) >= 2 * np.abs(xx)  # triangle pointing up


def _paint(img: np.ndarray, mask: np.ndarray, cy: int, cx: int, colour) -> None:
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
    """(F, H, W, 3) uint8: one object of ``appearance`` moving in ``direction`` over a noisy background.

    The object wraps around the frame (leaves on one side, comes back on the other) from a uniform
    random start, so in *every* frame its position is uniform whatever the direction: no single frame
    tells the directions apart, only the change between frames does.
    """
    _, colour, shape = APPEARANCES[appearance]
    r = max(height // 6, 4)
    dy, dx = DIRECTIONS[direction][1]
    along = width if dx else height
    travel = 0.5 * along  # pixels over the whole clip
    start = rng.uniform(0, along)
    across = rng.uniform(r + 1, (height if dx else width) - r - 2)
    bg = rng.integers(20, 60, size=3)
    out = np.empty((frames, height, width, 3), np.uint8)
    m = _mask(shape, r)
    for t in range(frames):
        img = np.clip(bg + rng.normal(0, 6, size=(height, width, 1)), 0, 255).astype(np.uint8)
        pos = (start + (dx + dy) * travel * t / (frames - 1)) % along
        for p in (pos - along, pos, pos + along):  # the parts of a wrapping object on either side
            cy, cx = (int(round(p)), int(round(across))) if dy else (int(round(across)), int(round(p)))
            _paint(img, m, cy, cx, colour)
        out[t] = img
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
        a, d = class_parts(c)
        return render_clip(self.rng, a, d, frames or self.cfg.frames, self.height, self.width)

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
    names = {class_name(c): str(c) for c in range(cfg.num_classes)}
    (labels_dir / "labels.json").write_text(json.dumps(names, indent=1))
    next_id = 1000
    for split in ("train", "validation"):
        entries = []
        for c in w.plan(split):
            vid = str(next_id)
            next_id += 1
            a, d = class_parts(c)
            template = f"Moving [{APPEARANCES[a][0]} {APPEARANCES[a][2]}] {DIRECTIONS[d][0]}"
            entries.append({"id": vid, "label": class_name(c).lower(), "template": template,
                            "placeholders": ["object"]})
            w.write_listed(videos / f"{vid}.webm", c, vid, len(entries), split)
        (labels_dir / f"{split}.json").write_text(json.dumps(entries, indent=1))
    test = []
    for _ in range(2):
        vid = str(next_id)
        next_id += 1
        w.write(videos / f"{vid}.webm", w.clip(int(w.rng.integers(cfg.num_classes))), vid)
        test.append({"id": vid})
    (labels_dir / "test.json").write_text(json.dumps(test, indent=1))
    return {"videos": str(videos), "annotations": str(labels_dir), "broken": w.broken}


def write_k400(cfg: SynthConfig, out: Path) -> dict:
    w = _Writer(cfg)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    n = 0
    for split, folder, csv_name in (("train", "train", "train.csv"), ("val", "val", "validate.csv")):
        rows = []
        for c in w.plan("train" if split == "train" else "validation"):
            yid = _youtube_id(w.rng, n)
            n += 1
            start = int(w.rng.integers(0, 300))
            end = start + 10
            rows.append({"label": class_name(c), "youtube_id": yid, "time_start": start, "time_end": end,
                         "split": split})
            sid = f"{yid}_{start:06d}_{end:06d}"
            w.write_listed(out / folder / f"{sid}.mp4", c, sid, len(rows), split)
        _write_csv(out / "annotations" / csv_name, ["label", "youtube_id", "time_start", "time_end", "split"], rows)
    return {"videos": str(out / "train"), "val_videos": str(out / "val"),
            "annotations": str(out / "annotations" / "train.csv"),
            "val_annotations": str(out / "annotations" / "validate.csv"), "broken": w.broken}


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
    direction of motion, noun = object. Annotation frames count at 50 fps while the MP4s run at
    ``cfg.fps``, as with the real released frames; one segment per training video runs past the end
    (clamped) and, with ``bad``, one starts past the end (``segment_out_of_range``)."""
    w = _Writer(cfg)
    ann = out / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    gap = 4
    n_verbs = len(DIRECTIONS)
    info = []
    for split, csv_name in (("train", "EPIC_100_train.csv"), ("validation", "EPIC_100_validation.csv")):
        rows = []
        labels = w.plan(split)
        per_video = 6
        for v, chunk_start in enumerate(range(0, len(labels), per_video)):
            part = f"P{(v % 2) + 1:02d}"
            video_id = f"{part}_{(1 if split == 'train' else 101) + v:02d}"
            clips, t = [], 0
            for j, c in enumerate(labels[chunk_start:chunk_start + per_video]):
                a, d = class_parts(c)
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
    return {"videos": str(out), "annotations": str(ann / "EPIC_100_train.csv"),
            "val_annotations": str(ann / "EPIC_100_validation.csv"), "broken": w.broken}


def write_dataset(cfg: SynthConfig, out: str | Path) -> dict:
    """Write the dataset; returns its paths and ``broken``: {source_id: expected reject reason}."""
    out = Path(out)
    writer = {"ssv2": write_ssv2, "k400": write_k400, "ek100": write_ek100}[cfg.dataset]
    result = writer(cfg, out)
    (out / "synthetic.json").write_text(json.dumps({"config": cfg.__dict__, **result}, indent=1))
    return result
