"""What a video file is, before any frame is decoded: source checks, container metadata and the frame table.

The frame table is every frame the decoder will output, read from the demuxed packets (nothing decoded):
the presentation timestamps of the video packets that ffmpeg keeps. Pre-roll packets an MP4 edit list
hides (a ``-ss … -c copy`` cut) carry ffmpeg's discard flag and are left out, as ffmpeg's decoder drops
them; frame numbers count from the first kept frame, so a stream that starts at t > 0 starts at frame 0.
Frame counts come from this table, never from a container duration times a guessed rate (Matroska's
duration is the longest stream's, audio included; VFR video has no single rate).

Every failure is a :class:`VideoDecodeError` with a ``reason`` from ``schema.REJECT_REASONS``.
"""

from __future__ import annotations

import io
import math
import os
import stat
from dataclasses import dataclass, replace

import av
import numpy as np

from pipelines.rotation import Orientation, orientation_of

# The one minimum-frames rule of preprocessing and inference: a file with fewer frames than this is no
# video (a still JPEG/PNG opens as a one-frame stream), whatever path reads it.
MIN_VIDEO_FRAMES = 2

# Bounds of sane container metadata. A header can claim anything (a duration of 1e12 ms, 1e9 fps,
# 100000 x 100000 pixels); beyond these it is rejected before any decoder sizes a buffer by it.
MAX_DURATION_S = 24 * 3600.0
MAX_FPS = 1000.0
MAX_SIDE = 16384

# Magic bytes of the containers we expect: a file that starts like one but cannot be opened was cut
# short (an MP4 whose 'moov' index never got written, a WebM without its clusters); anything else is
# not a video at all.
_MAGIC = ((0, b"\x1aE\xdf\xa3"), (4, b"ftyp"), (0, b"RIFF"), (4, b"moov"), (4, b"mdat"))
# Demuxers of still images: a JPEG or PNG opens in ffmpeg as a video stream of one frame.
_IMAGE_FORMATS = ("image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe")


class VideoDecodeError(Exception):
    """A video that cannot become a sample. ``reason`` is one of ``schema.REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    codec: str
    fps: float  # the stream's average rate (ffmpeg's avg_frame_rate), else frames / timestamp span
    duration_s: float | None  # the container's, as it claims it (all streams)
    height: int  # coded size, before the display matrix
    width: int
    pts: np.ndarray  # (N,) int64 presentation timestamps of the frames the decoder outputs, sorted
    keyframes: np.ndarray  # (K,) int64 those of keyframes (the seek points)
    time_base: float
    orientation: Orientation  # how the display matrix turns coded frames into displayed ones
    plain: bool  # frame k of the stream is packet k: no discarded pre-roll, no negative timestamps
    bit_depth: int = 8
    pix_fmt: str | None = None  # the decoder's pixel format (``yuv420p``, ``yuvj444p`` ...); None: not known

    @property
    def num_frames(self) -> int:
        return int(self.pts.shape[0])

    def times(self) -> np.ndarray:
        """(N,) seconds of each frame from the first one (the stream's start offset subtracted)."""
        return (self.pts - self.pts[0]) * self.time_base if self.num_frames else np.zeros(0)

    @property
    def display_size(self) -> tuple[int, int]:
        """(height, width) of the frames as displayed (a 90 degree display matrix swaps them)."""
        return (self.width, self.height) if self.orientation.transpose else (self.height, self.width)


def check_source(src: str | bytes):
    """A path that is a readable regular file, or bytes: what the decoders can open (a path or a
    ``BytesIO``). Anything else is a :class:`VideoDecodeError` naming what the path is."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise VideoDecodeError("empty", "zero bytes")
        return io.BytesIO(bytes(src))
    try:
        st = os.stat(src)  # follows symlinks: a loop or a dangling link fails here, not in a decoder
    except FileNotFoundError:
        if os.path.lexists(src):
            raise VideoDecodeError("unreadable", f"{src}: dangling symlink") from None
        raise VideoDecodeError("missing", src) from None
    except (OSError, ValueError) as e:  # ELOOP, EACCES, ENAMETOOLONG, an embedded NUL byte
        raise VideoDecodeError("unreadable", f"{src}: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        # Opening a fifo would block the task forever; a directory named like a video is no video.
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise VideoDecodeError("not_a_file", f"{src} is {kind}")
    if st.st_size == 0:
        raise VideoDecodeError("empty", f"{src} has zero bytes")
    if not os.access(src, os.R_OK):
        raise VideoDecodeError("unreadable", f"{src}: permission denied")
    return src


def check_inside(path: str, root: str) -> None:
    """Refuse a path that leads out of ``root`` (a symlink to elsewhere): ``outside_root``. A dataset's
    folder is what the job was told to read; a link out of it reads whatever it points at."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise VideoDecodeError("outside_root", f"{path} leads to {real}, outside {root} "
                                               "(--allow-outside-links follows such links)")


def _looks_like_video(head: bytes) -> bool:
    return any(head[o:o + len(m)] == m for o, m in _MAGIC)


def open_container(source):
    """``av.open`` of a :func:`check_source` result; a file it cannot open is ``truncated`` when it starts
    like a video container, else ``undecodable``."""
    if not isinstance(source, str):
        source.seek(0)
    try:
        return av.open(source)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(16)
        else:
            source.seek(0)
            head = source.read(16)
            source.seek(0)
        reason = "truncated" if _looks_like_video(head) else "undecodable"
        raise VideoDecodeError(reason, str(e)) from e


def probe(src: str | bytes) -> Probe:
    """Codec, rate, size, orientation and frame table of the first video stream. Demuxes every packet
    (reads the file, decodes one frame for its display matrix); raises :class:`VideoDecodeError`."""
    source = check_source(src)
    with open_container(source) as c:
        info = probe_container(c)
    with open_container(source) as c:
        return replace(info, orientation=_orientation(c, c.streams.video[0]))


def probe_container(c) -> Probe:
    """:func:`probe` of an open container, the orientation left upright (it needs a decoded frame)."""
    if not c.streams.video:
        raise VideoDecodeError("empty", "no video stream")
    s = c.streams.video[0]
    if c.format.name in _IMAGE_FORMATS:
        raise VideoDecodeError("too_short", f"a still image ({c.format.name}, {s.codec_context.name}), not a video")
    fps, duration = _rate_and_duration(c, s)
    h, w = s.codec_context.height, s.codec_context.width
    problems = []
    if fps is not None and (not math.isfinite(fps) or fps > MAX_FPS):
        problems.append(f"frame rate {fps:g} fps (max {MAX_FPS:g})")
    if duration is not None and (not math.isfinite(duration) or not 0 <= duration <= MAX_DURATION_S):
        problems.append(f"duration {duration:g}s (max {MAX_DURATION_S:g}s)")
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        problems.append(f"frame size {w}x{h} (max side {MAX_SIDE})")
    if problems:
        raise VideoDecodeError("bad_metadata", "container claims " + ", ".join(problems))
    table = _frame_table(c, s, duration, fps)
    tb = float(s.time_base)
    pts = table["pts"]
    if not fps and len(pts) > 1:
        fps = (len(pts) - 1) / max(float(pts[-1] - pts[0]) * tb, 1e-9)
    if not fps:
        fps = 1.0 if len(pts) <= 1 else fps
    return Probe(s.codec_context.name, float(fps), duration, h, w, pts, table["keys"], tb, Orientation(),
                 table["plain"], _bit_depth(s), s.codec_context.format.name if s.codec_context.format else None)


def _rate_and_duration(c, s) -> tuple[float | None, float | None]:
    try:
        fps = float(s.average_rate or s.guessed_rate or 0) or None
        duration = None
        if c.duration is not None:
            duration = c.duration / av.time_base
        elif s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
    except (OverflowError, ZeroDivisionError, ValueError) as e:
        raise VideoDecodeError("bad_metadata", f"unreadable rate/duration: {e}") from e
    return fps, duration


def _frame_table(c, s, duration: float | None, fps: float | None) -> dict:
    """The frames the decoder outputs, from the packets of every stream (demuxing only). A file whose
    every stream stops well before the container's duration was cut short: ``truncated``."""
    pts, keys, plain = [], [], True
    ends: dict[int, float] = {}
    try:
        for p in c.demux():
            if p.pts is None and p.dts is None:
                continue  # the flush packet at the end of each stream
            t = p.pts if p.pts is not None else p.dts
            if p.time_base is not None:
                ends[p.stream_index] = max(ends.get(p.stream_index, -math.inf),
                                           float((t + (p.duration or 0)) * p.time_base))
            if p.stream_index != s.index or not p.size:
                continue
            if p.is_keyframe:
                keys.append(t)  # a seek point, even a discarded one
            if p.is_discard or t < 0:
                plain = False  # pre-roll of an edit list: demuxed, decoded as a reference, never shown
                if p.is_discard:
                    continue
            pts.append(t)
    except av.error.FFmpegError as e:
        if not pts:
            raise VideoDecodeError("undecodable", str(e)) from e
        raise VideoDecodeError("truncated", f"the data stops after {len(pts)} frames: {e}") from e
    end = max(ends.values(), default=0.0)  # absolute, as container durations are (Matroska counts from 0)
    if duration and pts and end < 0.9 * duration - 1.0 / (fps or 25.0):
        # The container's duration spans all streams; every stream's data ends far before it.
        raise VideoDecodeError("truncated", f"the streams end at {end:.2f}s of the {duration:.2f}s the "
                                            f"container claims ({len(pts)} frames)")
    order = np.asarray(pts, dtype=np.int64)
    if order.size and np.any(np.diff(np.sort(order)) == 0):
        raise VideoDecodeError("bad_metadata", "two frames share a timestamp")
    if order.size and np.any(np.diff(order) <= 0):
        # B-frames: decode order is not display order. Fine for ffmpeg; DALI numbers packets.
        plain = plain and _reorder_only(order)
    return {"pts": np.sort(order), "keys": np.asarray(sorted(keys), dtype=np.int64), "plain": plain}


def _reorder_only(pts: np.ndarray) -> bool:
    """Decode-order timestamps that are a reordering of a strictly increasing display order (B-frames)."""
    return bool(np.unique(pts).size == pts.size)


def _bit_depth(s) -> int:
    fmt = s.codec_context.format
    if fmt is None:
        return 8
    return max((c.bits for c in fmt.components), default=8)


def _orientation(c, s) -> Orientation:
    """The display matrix of the first frame (ffmpeg puts the stream's on every decoded frame)."""
    try:
        for frame in c.decode(s):
            return orientation_of(frame)
    except av.error.FFmpegError as e:
        raise VideoDecodeError("undecodable", f"the first frame does not decode: {e}") from e
    raise VideoDecodeError("empty", "no frame decodes")
