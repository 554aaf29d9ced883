"""Decoding behind one function, :func:`decode_video`, used by preprocessing and batch inference.

Backends: DALI ``mixed`` (GPU, every codec NVDEC knows), DALI ``cpu`` (VP8/VP9/MJPEG only: DALI's
bundled FFmpeg has no software H.264/HEVC), and PyAV for what DALI's CPU backend cannot decode.
Every failure is a :class:`VideoDecodeError` with a ``reason`` from ``schema.REJECT_REASONS`` that
callers record in rejects; nothing else escapes for a bad file.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np

from pipelines.sampling import short_side_size

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
BACKENDS = ("auto", "dali", "pyav")


class VideoDecodeError(Exception):
    """A video that cannot become a sample. ``reason`` is one of ``schema.REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedVideo:
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    fps: float
    codec: str  # codec of the source stream
    backend: str  # "dali-cpu", "dali-gpu" or "pyav"
    source_frames: int  # frames in the decoded range before any resizing
    clamped: bool = False  # the requested segment ran past the end and was cut at the end


@dataclass(frozen=True)
class Probe:
    codec: str
    fps: float
    duration_s: float | None
    height: int
    width: int


def _source(src: str | bytes):
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


# Bounds of sane container metadata. A header can claim anything (a duration of 1e12 ms, 1e9 fps,
# 100000 x 100000 pixels); beyond these it is rejected before any decoder sizes a buffer by it.
MAX_DURATION_S = 24 * 3600.0
MAX_FPS = 1000.0
MAX_SIDE = 16384


# Magic bytes of the containers we expect: a file that starts like one but cannot be opened was cut
# short (an MP4 whose 'moov' index never got written, a WebM without its clusters); anything else is
# not a video at all.
_MAGIC = ((0, b"\x1aE\xdf\xa3"), (4, b"ftyp"), (0, b"RIFF"), (4, b"moov"), (4, b"mdat"))


def _looks_like_video(head: bytes) -> bool:
    return any(head[o:o + len(m)] == m for o, m in _MAGIC)


def _open(src):
    try:
        return av.open(src)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        if isinstance(src, str):
            with open(src, "rb") as f:
                head = f.read(16)
        else:
            src.seek(0)
            head = src.read(16)
            src.seek(0)
        reason = "truncated" if _looks_like_video(head) else "undecodable"
        raise VideoDecodeError(reason, str(e)) from e


def probe(src: str | bytes) -> Probe:
    """Codec, fps, duration and size of the first video stream (PyAV; reads headers only)."""
    with _open(_source(src)) as c:
        return _probe_container(c)


def _probe_container(c) -> Probe:
    if not c.streams.video:
        raise VideoDecodeError("empty", "no video stream")
    s = c.streams.video[0]
    try:
        fps = float(s.average_rate or s.guessed_rate or 0) or 0.0
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
    except (OverflowError, ZeroDivisionError, ValueError) as e:
        raise VideoDecodeError("bad_metadata", f"unreadable rate/duration: {e}") from e
    if fps <= 0:
        raise VideoDecodeError("undecodable", "no frame rate")
    h, w = s.codec_context.height, s.codec_context.width
    problems = []
    if not math.isfinite(fps) or fps > MAX_FPS:
        problems.append(f"frame rate {fps:g} fps (max {MAX_FPS:g})")
    if duration is not None and (not math.isfinite(duration) or not 0 <= duration <= MAX_DURATION_S):
        problems.append(f"duration {duration:g}s (max {MAX_DURATION_S:g}s)")
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        problems.append(f"frame size {w}x{h} (max side {MAX_SIDE})")
    if problems:
        raise VideoDecodeError("bad_metadata", "container claims " + ", ".join(problems))
    return Probe(s.codec_context.name, fps, duration, h, w)


def segment_seconds(segment: tuple[int, int], segment_fps: float | None, video_fps: float) -> tuple[float, float]:
    """EK100 segments count released RGB frames (``segment_fps``: 50 or 60 from the video info file);
    map them to seconds, then the decoder takes every frame of the MP4 with a timestamp inside. Without
    ``segment_fps`` the video's own rate is used (the released MP4s are at the released-frame rate).
    ``stop_frame`` is inclusive."""
    fps = segment_fps or video_fps
    return segment[0] / fps, (segment[1] + 1) / fps


# Seven parameters: the source, then keyword-only decoder options with defaults, one per knob a caller
# sets (preprocessing: short_side, min_frames; inference: segment, device); a bundle would only move them.
def decode_video(src: str | bytes, *, segment: tuple[int, int] | None = None, segment_fps: float | None = None,
                 short_side: int | None = None, backend: str = "auto", device: str = "cpu",
                 min_frames: int = 1) -> DecodedVideo:
    """Decode ``src`` (path or bytes) into RGB frames, optionally only ``segment`` (EK100 frame
    numbers, see :func:`segment_seconds`) and resized down to ``short_side`` (never up: a source
    already smaller keeps its size).

    ``backend="auto"`` picks DALI ``mixed`` on ``device="gpu"``, DALI CPU for VP8/VP9/MJPEG and PyAV
    otherwise. A segment that starts past the end is ``segment_out_of_range``; one that ends past the
    end is cut at the end (``clamped=True``). Raises :class:`VideoDecodeError` only.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    source = _source(src)
    info = probe(source if isinstance(source, str) else source.getvalue())
    window = None
    clamped = False
    if segment is not None:
        if segment[0] < 0 or segment[1] < segment[0]:
            # The readers refuse these; a caller that builds segments itself gets a reject, never the
            # whole video under the segment's label.
            raise VideoDecodeError("segment_out_of_range", f"invalid segment {tuple(segment)}")
        start_s, end_s = segment_seconds(segment, segment_fps, info.fps)
        if info.duration_s is not None:
            if start_s >= info.duration_s:
                raise VideoDecodeError("segment_out_of_range",
                                       f"segment starts at {start_s:.2f}s, video is {info.duration_s:.2f}s")
            if end_s > info.duration_s + 1.0 / info.fps:
                clamped = True
                end_s = info.duration_s
        window = (start_s, end_s)
    if short_side is not None and short_side >= min(info.height, info.width):
        short_side = None
    use_dali = backend == "dali" or (backend == "auto" and (device == "gpu" or info.codec in DALI_CPU_CODECS))
    if use_dali:
        if device == "cpu" and info.codec not in DALI_CPU_CODECS:
            raise ValueError(f"DALI's CPU backend cannot decode {info.codec}; use backend='pyav' or a GPU")
        frames, n_src = _decode_dali(source, info, window, short_side, device)
        used = f"dali-{device}"
    else:
        frames, n_src = _decode_pyav(source, info, window, short_side)
        used = "pyav"
    if frames.shape[0] == 0:
        raise VideoDecodeError("empty", "no frames decoded")
    expected = _expected_frames(info, window)
    # Containers know their duration; far fewer frames than that means the data stops early.
    if expected is not None and n_src < 0.9 * expected - 1:
        raise VideoDecodeError("truncated", f"decoded {n_src} of ~{expected} frames")
    if frames.shape[0] < min_frames:
        raise VideoDecodeError("too_short", f"{frames.shape[0]} frames < {min_frames}")
    return DecodedVideo(frames, info.fps, info.codec, used, n_src, clamped)


def _expected_frames(info: Probe, window: tuple[float, float] | None) -> int | None:
    if window is not None:
        return int(round((window[1] - window[0]) * info.fps))
    if info.duration_s is None:
        return None
    return int(round(info.duration_s * info.fps))


def _decode_pyav(source, info: Probe, window, short_side: int | None) -> tuple[np.ndarray, int]:
    if not isinstance(source, str):
        source.seek(0)
    size = short_side_size(info.height, info.width, short_side) if short_side else None
    frames = []
    n_src = 0
    try:
        with av.open(source) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            if window is not None and window[0] > 0:
                c.seek(int(window[0] / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in c.decode(stream):
                t = frame.time if frame.time is not None else n_src / info.fps
                if window is not None:
                    # half a frame of slack: frame timestamps are rounded to the time base
                    if t < window[0] - 0.5 / info.fps:
                        continue
                    if t >= window[1] - 0.5 / info.fps:
                        break
                n_src += 1
                if size is None:
                    frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    frames.append(frame.to_ndarray(format="rgb24", width=size[1], height=size[0]))
    except av.error.FFmpegError as e:
        if not frames:
            raise VideoDecodeError("undecodable", str(e)) from e
        raise VideoDecodeError("truncated", f"decoding stopped after {len(frames)} frames: {e}") from e
    if not frames:
        return np.zeros((0, 1, 1, 3), np.uint8), 0
    return np.stack(frames), n_src


class _DaliDecoder:
    """A one-sample DALI pipeline fed by ``external_source``, built once per process and device.

    Built lazily where it runs (GPU decoders created in another thread can hit an invalid CUDA
    context) and rebuilt after an error, since a failed run can leave the pipeline unusable.
    """

    _local = threading.local()

    @classmethod
    def get(cls, device: str, short_side: int | None):
        cache = getattr(cls._local, "pipes", None)
        if cache is None:
            cache = cls._local.pipes = {}
        key = (device, short_side)
        if key not in cache:
            cache[key] = cls._build(device, short_side)
        return cache[key]

    @classmethod
    def drop(cls, device: str, short_side: int | None) -> None:
        getattr(cls._local, "pipes", {}).pop((device, short_side), None)

    @classmethod
    def _build(cls, device: str, short_side: int | None):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "gpu" else None,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe():
            data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
            frames = cls._decoder(fn, types, data, "mixed" if device == "gpu" else "cpu")
            if short_side:
                frames = fn.resize(frames, resize_shorter=short_side, antialias=True)
            return frames

        p = pipe()
        p.build()
        return p

    @staticmethod
    def _decoder(fn, types, data, device: str):
        """The video decoder operator of the pipeline: frames ``start`` .. ``end`` (fed per video)."""
        start = fn.external_source(name="start", dtype=types.INT32, ndim=0)
        end = fn.external_source(name="end", dtype=types.INT32, ndim=0)
        return fn.decoders.video(data, device=device, start_frame=start, end_frame=end, pad_mode="none")


def _decode_dali(source, info: Probe, window, short_side: int | None, device: str) -> tuple[np.ndarray, int]:
    if isinstance(source, str):
        with open(source, "rb") as f:
            data = np.frombuffer(f.read(), dtype=np.uint8)
    else:
        data = np.frombuffer(source.getvalue(), dtype=np.uint8)
    total = _expected_frames(info, None)
    start = 0 if window is None else int(round(window[0] * info.fps))
    end = (total if total is not None else 1 << 30) if window is None else int(round(window[1] * info.fps))
    if total is not None:
        end = min(end, total)
    size = short_side_size(info.height, info.width, short_side) if short_side else None
    pipe = _DaliDecoder.get(device, short_side)
    try:
        pipe.feed_input("data", [data])
        pipe.feed_input("start", [np.array(start, np.int32)])
        pipe.feed_input("end", [np.array(max(end, start + 1), np.int32)])
        (out,) = pipe.run()
    except RuntimeError as e:
        _DaliDecoder.drop(device, short_side)
        raise VideoDecodeError("undecodable", f"DALI: {str(e).splitlines()[0] if str(e) else e}") from e
    if device == "gpu":
        out = out.as_cpu()
    frames = np.array(out.at(0))
    n_src = frames.shape[0]
    if size is not None and frames.shape[1:3] != size:
        # DALI rounds the long side itself; match the PyAV path's even sizes exactly.
        frames = frames[:, : size[0], : size[1]]
    return frames, n_src


# -- decoding only the sampled frames --------------------------------------------------------------------
# ``pick(num_frames, fps) -> indices`` chooses frames once the count is known; only those are decoded.
FramePicker = Callable[[int, float], np.ndarray]


# decode_video's keyword-only options, plus the frame picker (see decode_video for why they stay apart).
def decode_sampled(src: str | bytes, pick: FramePicker, *, segment: tuple[int, int] | None = None,
                   segment_fps: float | None = None, short_side: int | None = None, backend: str = "auto",
                   device: str = "cpu") -> DecodedVideo:
    """The frames ``pick(n, fps)`` chooses out of the ``n`` frames of ``src`` (or of ``segment``), in
    ``pick``'s order, repeats allowed: the same pixels as ``decode_video(...).frames[pick(n, fps)]``
    without decoding the rest. Frames are counted by demuxing (PyAV, no decoding); then DALI decodes only
    the picked frames (``frames=``), or PyAV only the GOPs that hold picked frames, each up to its last
    picked frame. Same backends, resizing and errors as :func:`decode_video`."""
    if backend not in BACKENDS or device not in ("cpu", "gpu"):
        raise ValueError(f"backend must be one of {BACKENDS} and device 'cpu' or 'gpu', got {backend!r}, {device!r}")
    source = _source(src)
    info = probe(source if isinstance(source, str) else source.getvalue())
    window = None if segment is None else segment_seconds(segment, segment_fps, info.fps)
    if window is not None and info.duration_s is not None and window[0] >= info.duration_s:
        raise VideoDecodeError("segment_out_of_range",
                               f"segment starts at {window[0]:.2f}s, video is {info.duration_s:.2f}s")
    if short_side is not None and short_side >= min(info.height, info.width):
        short_side = None
    times = _frame_times(source, info, window)
    n = times.stop - times.start
    expected = _expected_frames(info, window)
    # As decode_video: far fewer frames than the container's duration says means the data stops early.
    if n == 0 or (expected is not None and window is None and n < 0.9 * expected - 1):
        raise VideoDecodeError("truncated" if n else "empty", f"{n} of ~{expected} frames in the container")
    idx = np.asarray(pick(n, info.fps), dtype=np.int64)
    if backend == "dali" or (backend == "auto" and (device == "gpu" or info.codec in DALI_CPU_CODECS)):
        if device == "cpu" and info.codec not in DALI_CPU_CODECS:
            raise ValueError(f"DALI's CPU backend cannot decode {info.codec}; use backend='pyav' or a GPU")
        frames = _sampled_dali(source, info, times.start + idx, short_side, device)
        used = f"dali-{device}"
    else:
        frames = _sampled_pyav(source, info, times, idx, short_side)
        used = "pyav"
    return DecodedVideo(frames, info.fps, info.codec, used, n, False)


@dataclass(frozen=True)
class _FrameTimes:
    pts: list[int]  # presentation timestamps of every frame, sorted (display order)
    keyframes: list[int]  # those of keyframes
    start: int  # frames [start, stop) lie in the window
    stop: int


def _frame_times(source, info: Probe, window) -> _FrameTimes:
    """Every frame's timestamp from the packets (demuxing only: nothing is decoded)."""
    if not isinstance(source, str):
        source.seek(0)
    try:
        with av.open(source) as c:
            stream = c.streams.video[0]
            packets = sorted((p.pts, p.is_keyframe) for p in c.demux(stream) if p.size and p.pts is not None)
            tb = float(stream.time_base)
    except av.error.FFmpegError as e:
        raise VideoDecodeError("undecodable", str(e)) from e
    pts = [t for t, _ in packets]
    start, stop = 0, len(pts)
    if window is not None:
        slack = 0.5 / info.fps  # the same window test as _decode_pyav
        inside = [i for i, t in enumerate(pts) if window[0] - slack <= t * tb < window[1] - slack]
        start, stop = (inside[0], inside[-1] + 1) if inside else (0, 0)
    return _FrameTimes(pts, [t for t, k in packets if k], start, stop)


class _DaliSampler(_DaliDecoder):
    """:class:`_DaliDecoder` with explicit frame indices instead of a start/end range."""

    _local = threading.local()  # its own pipeline cache

    @staticmethod
    def _decoder(fn, types, data, device: str):
        """The video decoder operator of the pipeline: the frames at the indices ``frames`` (fed per video)."""
        idx = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
        return fn.decoders.video(data, device=device, frames=idx)


def _sampled_dali(source, info: Probe, idx: np.ndarray, short_side: int | None, device: str) -> np.ndarray:
    if isinstance(source, str):
        with open(source, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
    else:
        data = np.frombuffer(source.getvalue(), np.uint8)
    pipe = _DaliSampler.get(device, short_side)
    try:
        pipe.feed_input("data", [data])
        pipe.feed_input("frames", [idx.astype(np.int32)])
        (out,) = pipe.run()
    except RuntimeError as e:
        _DaliSampler.drop(device, short_side)
        raise VideoDecodeError("undecodable", f"DALI: {str(e).splitlines()[0] if str(e) else e}") from e
    frames = np.array((out.as_cpu() if device == "gpu" else out).at(0))
    size = short_side_size(info.height, info.width, short_side) if short_side else None
    if size is not None and frames.shape[1:3] != size:
        frames = frames[:, : size[0], : size[1]]  # as _decode_dali: the PyAV path's even sizes
    return frames


def _sampled_pyav(source, info: Probe, times: _FrameTimes, idx: np.ndarray, short_side: int | None) -> np.ndarray:
    if not isinstance(source, str):
        source.seek(0)
    size = short_side_size(info.height, info.width, short_side) if short_side else None
    wanted = [times.pts[times.start + i] for i in idx]
    try:
        with av.open(source) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            got = _decode_at(c, stream, sorted(set(wanted)), times.keyframes, size)
    except av.error.FFmpegError as e:
        raise VideoDecodeError("truncated", str(e)) from e
    return np.stack([got[t] for t in wanted])


def _decode_at(c, stream, targets: list[int], keyframes: list[int], size) -> dict[int, np.ndarray]:
    """Frames at presentation timestamps ``targets`` (sorted): seek to a target's keyframe only when a
    whole GOP lies between it and the last decoded frame, else keep decoding forward."""
    import bisect

    got: dict[int, np.ndarray] = {}
    frames, last = None, None
    want = set(targets)
    for t in targets:
        if t in got:
            continue
        key = keyframes[max(bisect.bisect_right(keyframes, t) - 1, 0)] if keyframes else t
        if frames is None or last is None or key > last:
            c.seek(key, stream=stream, backward=True, any_frame=False)
            frames = c.decode(stream)
        for frame in frames:
            last = frame.pts
            if frame.pts in want and frame.pts not in got:
                got[frame.pts] = (frame.to_ndarray(format="rgb24") if size is None else
                                  frame.to_ndarray(format="rgb24", width=size[1], height=size[0]))
            if frame.pts is not None and frame.pts >= t:
                break
        if t not in got:
            raise VideoDecodeError("truncated", f"no frame at timestamp {t} (the stream ends or skips it)")
    return got
