"""The shard schema, written down once: what a sample is in a tar, in the manifest and in rejects.

A sample in ``<split>-NNNNNN.tar`` is five (EK100: six) adjacent members sharing a ``__key__`` (no dots):

  ``<key>.<video_ext>``  the re-encoded clip (``webm`` = VP9, ``avi`` = MJPEG, ``mp4`` = H.264)
  ``<key>.nf``           number of frames, little-endian int32 (read by DALI without JSON parsing)
  ``<key>.lbl``          labels, little-endian int64, one per head in ``heads`` order (read by DALI)
  ``<key>.cls``          the class id as ASCII text (WebDataset's convention); EK100 has
                         ``<key>.verb.cls`` and ``<key>.noun.cls`` instead
  ``<key>.json``         metadata: labels, source id, frames, fps, size, segment

``.nf`` and ``.lbl`` duplicate the JSON on purpose: DALI's webdataset reader hands them over as typed
tensors, so frame indices and labels are computed inside the pipeline without a Python JSON step.
``.cls`` is for every other WebDataset reader: ``webdataset``'s default ``.decode()`` and
``ray.data.read_webdataset`` decode by the last extension and read ``.cls`` with ``int()``.

Shards written before ``.lbl`` existed hold binary int64 in ``.cls``; :func:`labels_ext` tells the
formats apart so this project's loader reads both (other readers need the shards re-written).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

# Shard member extensions (besides the video).
NUM_FRAMES_EXT = "nf"
LABELS_EXT = "lbl"  # binary labels for DALI
CLASS_EXT = "cls"  # ASCII class id (the WebDataset convention)
LEGACY_LABELS_EXT = "cls"  # binary int64 labels of shards written before LABELS_EXT existed
META_EXT = "json"

# Shard video codec -> (PyAV encoder, container format, member extension, DALI CPU can decode it).
CODECS: dict[str, tuple[str, str, str, bool]] = {
    "vp9": ("libvpx-vp9", "webm", "webm", True),
    "mjpeg": ("mjpeg", "avi", "avi", True),
    "h264": ("libx264", "mp4", "mp4", False),
}

# Reasons an input did not make it to the shards (rejects.parquet ``reason`` column).
REJECT_REASONS: tuple[str, ...] = (
    "missing",  # listed in the annotations, no file on disk
    "not_a_file",  # the path is a directory, fifo, socket or device, not a regular file
    "unreadable",  # symlink loop, dangling symlink, no permission, unusable path
    "bad_metadata",  # the container claims an absurd duration, frame rate or frame size
    "bad_index",  # a shard whose .idx is missing or unreadable, or a sample it lists without its JSON
    "empty",  # zero-byte file, or a container without video frames
    "truncated",  # decoding stopped early / fewer frames than the container promises
    "undecodable",  # not a video the decoders understand
    "segment_out_of_range",  # EK100 segment starts past the end of its video
    "too_short",  # fewer decodable frames than the minimum kept; a still image (one frame)
    "too_large",  # decoding it needs more memory than the per-video budget (frame size, or the watchdog)
    "outside_root",  # a symlink that leads out of the dataset's folder (allowed only by a flag)
    "encode_failed",  # re-encoding for the shards failed
    "duplicate",  # the same source id listed again with the same labels (the first one is kept)
    "conflicting_labels",  # the same source id listed again with other labels (the first one is kept)
    "unexpected_error",  # an error no check above foresaw (type and message in ``detail``): a bug to report
)

def count_rejects(counts: dict[str, int], rejects: list[dict]) -> None:
    """Add each reject's ``reason`` to ``counts`` (a job result's ``reject_reasons``), in place."""
    for r in rejects:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1


def label_column(head: str) -> str:
    """Manifest column of a label head: ``label`` stays ``label``; EK100 heads become ``verb_class``."""
    return head if head == "label" else f"{head}_class"


@dataclass(frozen=True)
class VideoRow:
    """One input to preprocess, the same for every dataset.

    ``segment`` is ``(start_frame, stop_frame)`` inclusive in units of ``segment_fps`` frames
    (EK100's released-frame numbering); ``None`` means the whole video.
    """

    source_id: str
    path: str
    labels: dict[str, int]
    segment: tuple[int, int] | None = None
    segment_fps: float | None = None

    def to_record(self) -> dict:
        """A flat, Arrow-friendly dict (Ray Data rows)."""
        return {
            "source_id": self.source_id,
            "path": self.path,
            "labels": dict(self.labels),
            "seg_start": -1 if self.segment is None else int(self.segment[0]),
            "seg_stop": -1 if self.segment is None else int(self.segment[1]),
            "seg_fps": float("nan") if self.segment_fps is None else float(self.segment_fps),
        }

    @staticmethod
    def from_record(rec: dict) -> "VideoRow":
        seg = None if int(rec["seg_start"]) < 0 else (int(rec["seg_start"]), int(rec["seg_stop"]))
        fps = rec["seg_fps"]
        fps = None if fps is None or fps != fps else float(fps)  # NaN -> None
        return VideoRow(str(rec["source_id"]), str(rec["path"]), {k: int(v) for k, v in rec["labels"].items()},
                        seg, fps)


def class_ext(head: str) -> str:
    """The ASCII class-id member of a head: ``cls`` for the single head, ``verb.cls`` / ``noun.cls``."""
    return CLASS_EXT if head == "label" else f"{head}.{CLASS_EXT}"


def label_members(heads: tuple[str, ...], labels: dict[str, int]) -> list[tuple[str, bytes]]:
    """``(extension, data)`` of a sample's label members: DALI's binary ``lbl``, then one ASCII ``cls``
    per head."""
    binary = np.array([labels[h] for h in heads], dtype="<i8").tobytes()
    return [(LABELS_EXT, binary)] + [(class_ext(h), str(int(labels[h])).encode("ascii")) for h in heads]


def labels_ext(sample_exts: set[str] | dict) -> str:
    """The member holding a sample's binary labels: ``lbl``, or ``cls`` in shards of the old format."""
    if LABELS_EXT in sample_exts:
        return LABELS_EXT
    if LEGACY_LABELS_EXT in sample_exts:
        return LEGACY_LABELS_EXT
    raise ValueError(f"a shard sample has no label member ({LABELS_EXT!r} or {LEGACY_LABELS_EXT!r}); "
                     f"members: {sorted(sample_exts)}")


_KEY_OK = re.compile(r"[^A-Za-z0-9_-]")
# A tar member is "<key>.<ext>" in a ustar header of at most 99 bytes; the longest extension is 4.
MAX_KEY_LEN = 80


def sample_key(source_id: str) -> str:
    """A WebDataset ``__key__`` for a source id: no dots, no slashes, at most ``MAX_KEY_LEN`` ASCII
    characters, stable, unique per source id.

    Ids that are already safe and short are kept as they are (readable shards); others are sanitised,
    cut to fit and get a hash of the whole id, so two ids that sanitise or cut alike ("a.b", "a/b", two
    long ids sharing a prefix) cannot collide.
    """
    safe = _KEY_OK.sub("_", source_id)
    if safe == source_id and 0 < len(safe) <= MAX_KEY_LEN:
        return safe
    digest = hashlib.sha1(source_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe[:MAX_KEY_LEN - len(digest) - 1]}-{digest}"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"
