"""Streaming decode: a video's frames one at a time, as displayed, resized, never padded.

:func:`plan_decode` probes a video (``pipelines.probe``: the frame table from the demuxed packets, the
display matrix) and fixes what will be decoded: the frames of a window (an EK100 segment, in seconds
from the first frame), the output size and the backend. :func:`stream_frames` then yields
``(index, frame)`` pairs in order, each frame resized and turned as displayed, so a caller encodes or
samples it at once and a task's memory never depends on the video's length. :func:`decode_video`
collects them (tests, short clips); :func:`decode_sampled` decodes only the frames a picker chooses.

Frames are RGB, or, on the shards' way to their encoder (:func:`yuv_route`), 4:2:0 planes in the
encoder's own format: swscale resizes the source's planes straight into them, as ffmpeg's
``-vf scale`` does, instead of a YUV -> RGB -> YUV round trip per frame.

Backends: PyAV (ffmpeg's decoders, every codec; the default on CPU and the reference: its frames equal
ffmpeg's own decode) and DALI (``pipelines.dali_decode``: ``mixed`` on a GPU, every codec NVDEC knows;
``cpu`` for VP8/VP9/MJPEG). DALI numbers frames by packets, so a stream whose packets are not its frames
(edit-list pre-roll, negative timestamps) is decoded by PyAV even on a GPU: the never-pad rule is
checked outside the decoder, from the timestamps.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterator

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from pipelines.memory import MemoryWatch, check_budget
from pipelines.probe import MIN_VIDEO_FRAMES, Probe, VideoDecodeError, check_source, open_container, probe_container
from pipelines.probe import probe as probe_source
from pipelines.rotation import Orientation, RotationError
from pipelines.sampling import short_side_size

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
BACKENDS = ("auto", "dali", "pyav")
# The 4:2:0 formats stream_frames can hand an encoder (``EncodeConfig.pix_fmt``), with their range.
YUV_FORMATS = {"yuv420p": ColorRange.MPEG, "yuvj420p": ColorRange.JPEG}
# swscale's filter for every resize and conversion here (PyAV's default, named so it cannot drift): the
# RGB and the YUV route resize alike.
SCALE_FILTER = Interpolation.BILINEAR
# swscale threads: one. A decode task holds one core (Ray: num_cpus=1); at these output sizes swscale's
# slice threads cost more CPU than they save (1080p -> 256 px: 1.17 vs 1.09 ms a frame; 480p: 0.29 vs 0.22).
SCALE_THREADS = 1


@dataclass
class DecodedVideo:
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB, as displayed
    fps: float
    codec: str  # codec of the source stream
    backend: str  # "dali-cpu", "dali-gpu" or "pyav"
    source_frames: int  # frames in the decoded range before any sampling
    clamped: bool = False  # the requested segment ran past the end and was cut at the end


@dataclass(frozen=True)
class VideoPlan:
    """What :func:`stream_frames` decodes: frames ``start .. stop-1`` of ``info``'s frame table."""

    source: object  # a path or a BytesIO (``probe.check_source``)
    info: Probe
    start: int
    stop: int
    size: tuple[int, int] | None  # (height, width) to resize the coded frames to; None: as coded
    backend: str  # "pyav", "dali-cpu" or "dali-gpu"
    clamped: bool = False
    like_loader: bool = False  # resized as the evaluation loader resizes (plan_decode)

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    @property
    def orientation(self) -> Orientation:
        return self.info.orientation

    @property
    def out_size(self) -> tuple[int, int]:
        """(height, width) of the frames :func:`stream_frames` yields (displayed, resized)."""
        h, w = self.size or (self.info.height, self.info.width)
        return (w, h) if self.orientation.transpose else (h, w)


def segment_seconds(segment: tuple[int, int], segment_fps: float | None, video_fps: float) -> tuple[float, float]:
    """EK100 segments count released RGB frames (``segment_fps``: 50 or 60 from the video info file);
    map them to seconds from the video's first frame, then the decoder takes every frame with a time
    inside. Without ``segment_fps`` the video's own rate is used. ``stop_frame`` is inclusive."""
    fps = segment_fps or video_fps
    return segment[0] / fps, (segment[1] + 1) / fps


def segment_window(info: Probe, segment: tuple[int, int] | None, segment_fps: float | None) -> tuple[int, int, bool]:
    """(start, stop, clamped) frame-table indices of ``segment`` (all frames without one)."""
    if segment is None:
        return 0, info.num_frames, False
    if segment[0] < 0 or segment[1] < segment[0]:
        # The readers refuse these; a caller that builds segments itself gets a reject, never the
        # whole video under the segment's label.
        raise VideoDecodeError("segment_out_of_range", f"invalid segment {tuple(segment)}")
    start_s, end_s = segment_seconds(segment, segment_fps, info.fps)
    times = info.times()  # seconds from the first frame: the stream's start offset subtracted
    length = float(times[-1]) + 1.0 / info.fps if times.size else 0.0
    if start_s >= length:
        raise VideoDecodeError("segment_out_of_range", f"segment starts at {start_s:.2f}s, video is {length:.2f}s")
    slack = 0.5 / info.fps  # frame timestamps are rounded to the time base
    start = int(np.searchsorted(times, start_s - slack, side="left"))
    stop = int(np.searchsorted(times, end_s - slack, side="left"))
    if stop <= start:
        raise VideoDecodeError("segment_out_of_range", f"no frame between {start_s:.3f}s and {end_s:.3f}s")
    return start, stop, end_s > length + 1.0 / info.fps


def _pick_backend(info: Probe, backend: str, device: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    dali = backend == "dali" or (backend == "auto" and device == "gpu")
    if dali and device == "cpu" and info.codec not in DALI_CPU_CODECS:
        raise ValueError(f"DALI's CPU backend cannot decode {info.codec}; use backend='pyav' or a GPU")
    # DALI numbers frames by packet: only a stream whose packets are its frames goes there.
    return f"dali-{device}" if dali and info.plain else "pyav"


# Seven parameters: the source, then keyword-only options with defaults, one per knob a caller sets.
def plan_decode(src: str | bytes, *, segment: tuple[int, int] | None = None, segment_fps: float | None = None,
                short_side: int | None = None, like_loader: bool = False, backend: str = "auto",
                device: str = "cpu") -> VideoPlan:
    """Probe ``src`` and fix the frames, size and backend of its decode (see the module). A file with
    fewer than ``probe.MIN_VIDEO_FRAMES`` frames (a still image) is ``too_short``. ``like_loader``: frames
    sized and resized as the DALI evaluation loader resizes shard frames, for inference views, which are
    never encoded (odd sizes as DALI rounds them, an antialiased bilinear resize of RGB frames); else even
    sizes an encoder takes, resized in YUV as ffmpeg's scale filter does (shards). Raises
    :class:`VideoDecodeError` for a bad video, ``ValueError`` for bad arguments."""
    source = check_source(src)
    try:
        info = probe_source(source if isinstance(source, str) else source.getvalue())
    except RotationError as e:
        raise VideoDecodeError("bad_metadata", str(e)) from e
    if info.num_frames == 0:
        raise VideoDecodeError("empty", "no video frames")
    if info.num_frames < MIN_VIDEO_FRAMES:
        raise VideoDecodeError("too_short", f"{info.num_frames} frame: a still picture, not a video "
                                            f"(at least {MIN_VIDEO_FRAMES} frames)")
    used = _pick_backend(info, backend, device)
    start, stop, clamped = segment_window(info, segment, segment_fps)
    size = None
    if short_side is not None and short_side < min(info.height, info.width):
        size = short_side_size(info.height, info.width, short_side, even=not like_loader)
    return VideoPlan(source, info, start, stop, size, used, clamped, like_loader)


def yuv_route(plan: VideoPlan) -> bool:
    """Whether :func:`stream_frames` can hand ``plan``'s frames over as 4:2:0 planes (``pix_fmt`` a key of
    :data:`YUV_FORMATS`) instead of RGB: for a PyAV decode (DALI hands over RGB) of an 8-bit 4:2:0 source
    to an even size, never for the evaluation loader's resize (``like_loader``). The rest keep the RGB
    route: odd sizes (4:2:0 planes cannot be cropped to the encoder's even size without resampling their
    chroma; the encoder crops RGB), and 10-bit, 4:2:2 and 4:4:4 sources (the route is checked against RGB
    on 8-bit 4:2:0 sources only: tests/pipelines/test_yuv_route.py)."""
    h, w = plan.out_size
    # The 8-bit 4:2:0 sources are the same two formats the encoders take, limited and full range
    # (10-bit 4:2:0 is yuv420p10le: not among them).
    return (plan.backend == "pyav" and not plan.like_loader and plan.info.pix_fmt in YUV_FORMATS
            and h % 2 == 0 and w % 2 == 0)


def stream_frames(plan: VideoPlan, wanted: np.ndarray | None = None, budget: int | None = None,
                  seek: bool = True, pix_fmt: str = "rgb24") -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` for the frames of ``plan`` (indices from the window's start; ``wanted``: only
    those, sorted and unique), in order, each as displayed: (H, W, 3) uint8 RGB; or, with ``pix_fmt`` a
    key of :data:`YUV_FORMATS` where :func:`yuv_route` holds, (3H/2, W) uint8 4:2:0 planes in that format
    (PyAV's ``yuv420p`` array layout; BT.601, as the shards' decoders read an untagged stream). Frames the
    decoder does not output are missing from the stream, never filled in. ``budget`` bytes: see
    ``pipelines.memory``. ``seek=False``: PyAV decodes forward from the start (containers whose seeks land
    off their index).
    """
    if pix_fmt != "rgb24" and (pix_fmt not in YUV_FORMATS or not yuv_route(plan)):
        raise ValueError(f"pix_fmt {pix_fmt!r} is not available for this plan (yuv_route: {yuv_route(plan)}); "
                         f"rgb24 always is")
    if wanted is None:
        wanted = np.arange(plan.num_frames)
    wanted = np.asarray(wanted, dtype=np.int64)
    if wanted.size and (wanted[0] < 0 or wanted[-1] >= plan.num_frames or np.any(np.diff(wanted) <= 0)):
        raise ValueError(f"wanted frames must be sorted, unique and in [0, {plan.num_frames})")
    if plan.backend.startswith("dali"):
        from pipelines.dali_decode import dali_frames

        check_budget(plan.info, budget, chunk_frames=DALI_CHUNK)
        frames = dali_frames(plan, wanted, DALI_CHUNK)
    else:
        check_budget(plan.info, budget)
        frames = _pyav_frames(plan, wanted, seek, _Converter(plan, pix_fmt))
    turn = plan.orientation.apply if pix_fmt == "rgb24" else plan.orientation.apply_yuv420
    with MemoryWatch(budget) as watch:
        for i, frame in frames:
            watch.check()
            yield i, np.ascontiguousarray(turn(frame))


# Frames a DALI run hands over at once (full size, before its resize): bounds its memory.
DALI_CHUNK = 32


def resize_like_loader(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w, 3) for ``size`` = (h, w), as the evaluation loader resizes (DALI,
    antialiased linear, on RGB): PIL's bilinear reduce, within the decoders' own difference of DALI's
    (benchmarks/skew.py)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))


class _Converter:
    """A decoded PyAV frame -> the array :func:`stream_frames` yields (coded orientation). One swscale
    context per step, kept for the whole decode: ``VideoFrame.reformat`` builds a new one for every frame
    (~0.7 ms at 1080p, as much as the resize itself)."""

    def __init__(self, plan: VideoPlan, pix_fmt: str) -> None:
        self.size, self.like_loader, self.pix_fmt = plan.size, plan.like_loader, pix_fmt
        self.resize, self.to_rgb = VideoReformatter(), VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        h, w = self.size or (frame.height, frame.width)
        if self.pix_fmt in YUV_FORMATS:
            # One swscale pass from the source's planes to the encoder's, resized: the source's colour
            # matrix and range (as tagged; BT.601 untagged) become BT.601 in the encoder's range, as the
            # RGB route's conversions do (the shards are untagged: their decoders read BT.601).
            return self.resize.reformat(frame, width=w, height=h, format=self.pix_fmt, interpolation=SCALE_FILTER,
                                        threads=SCALE_THREADS, dst_colorspace=Colorspace.ITU601,
                                        dst_color_range=YUV_FORMATS[self.pix_fmt]).to_ndarray()
        if self.size is None:
            return self._rgb(frame)
        if self.like_loader:
            # RGB first, then the loader's resize: the YUV-first resize below differs from it at colour
            # edges (99th percentile ~20 levels at 64 -> 32 px).
            return resize_like_loader(self._rgb(frame), self.size)
        # Resize in YUV first (as ffmpeg's -vf scale does), then convert the small frame: ~7% less CPU per
        # 1080p frame than converting and resizing in one swscale pass.
        return self._rgb(self.resize.reformat(frame, width=w, height=h, interpolation=SCALE_FILTER,
                                             threads=SCALE_THREADS))

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return self.to_rgb.reformat(frame, format="rgb24", interpolation=SCALE_FILTER,
                                   threads=SCALE_THREADS).to_ndarray()


def _pyav_frames(plan: VideoPlan, wanted: np.ndarray, seek: bool,
                 convert: _Converter) -> Iterator[tuple[int, np.ndarray]]:
    """PyAV: seek to the keyframe before the next wanted frame whenever a whole GOP lies between it and
    the last decoded one, else keep decoding forward; frames are matched to the table by timestamp."""
    info = plan.info
    pts = info.pts[plan.start:plan.stop]
    index = {int(t): i for i, t in enumerate(pts)}
    tolerance = 0.5 / info.fps / info.time_base  # half a frame, in time-base units
    keys = info.keyframes.tolist()
    source = plan.source
    if not isinstance(source, str):
        source.seek(0)
    n_out, pos, last = 0, 0, None
    try:
        with open_container(source) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            frames = None
            while pos < wanted.size:
                target = int(pts[wanted[pos]])
                k = bisect.bisect_right(keys, target) - 1  # the keyframe at or before the target
                # seek only over a gap: a keyframe past the frame that follows the last decoded one
                after = pts[min(int(np.searchsorted(pts, last, side="right")), len(pts) - 1)] if last is not None \
                    else keys[0] if keys else 0
                if seek and k >= 0 and keys[k] > after:
                    c.seek(keys[k], stream=stream, backward=True, any_frame=False)
                    frames = c.decode(stream)
                elif frames is None:
                    frames = c.decode(stream)  # from the start: the first keyframe comes first
                got = False
                for frame in frames:
                    t = frame.pts if frame.pts is not None else frame.dts
                    last = t
                    i = _match(index, pts, t, tolerance)
                    if i is None or i < wanted[pos]:
                        continue
                    while pos < wanted.size and wanted[pos] < i:
                        pos += 1  # the decoder skipped a wanted frame: believe it
                    if pos < wanted.size and wanted[pos] == i:
                        yield i, convert(frame)
                        n_out += 1
                        pos += 1
                    got = True
                    break
                if not got:
                    return  # the decoder has no more frames
    except av.error.FFmpegError as e:
        if not n_out:
            raise VideoDecodeError("undecodable", str(e)) from e
        raise VideoDecodeError("truncated", f"decoding stopped after {n_out} frames: {e}") from e


def _match(index: dict[int, int], pts: np.ndarray, t: int | None, tolerance: float) -> int | None:
    """The window index of a decoded frame's timestamp: exact, else the nearest table entry within half a
    frame (containers such as MPEG-PS give some packets no timestamp: the table has their dts)."""
    if t is None:
        return None
    if t in index:
        return index[t]
    k = int(np.searchsorted(pts, t))
    near = [j for j in (k - 1, k) if 0 <= j < len(pts) and abs(int(pts[j]) - t) <= tolerance]
    return min(near, key=lambda j: abs(int(pts[j]) - t)) if near else None


# Eight parameters: plan_decode's keyword-only options and the minimum frame count.
def decode_video(src: str | bytes, *, segment: tuple[int, int] | None = None, segment_fps: float | None = None,
                 short_side: int | None = None, like_loader: bool = False, backend: str = "auto",
                 device: str = "cpu", min_frames: int = MIN_VIDEO_FRAMES) -> DecodedVideo:
    """Every frame of ``src`` (or of ``segment``) in one array: :func:`stream_frames` collected. For
    short clips and tests; jobs stream. Fewer than ``min_frames`` decoded is ``too_short``."""
    plan = plan_decode(src, segment=segment, segment_fps=segment_fps, short_side=short_side,
                       like_loader=like_loader, backend=backend, device=device)
    frames = [f for _, f in stream_frames(plan)]
    check_count(len(frames), plan.num_frames, min_frames)
    return DecodedVideo(np.stack(frames), plan.info.fps, plan.info.codec, plan.backend, len(frames), plan.clamped)


def check_count(decoded: int, expected: int, min_frames: int = MIN_VIDEO_FRAMES) -> None:
    """The decoded frame count against the ``expected`` (demuxed) one: none is ``empty``, far fewer is
    ``truncated``, fewer than ``min_frames`` (never below ``probe.MIN_VIDEO_FRAMES``) is ``too_short``."""
    if decoded == 0:
        raise VideoDecodeError("empty", "no frames decoded")
    if decoded < 0.9 * expected - 1:
        raise VideoDecodeError("truncated", f"decoded {decoded} of the {expected} frames demuxed")
    need = max(min_frames, MIN_VIDEO_FRAMES)
    if decoded < need:
        raise VideoDecodeError("too_short", f"{decoded} frames < {need}")


# ``pick(num_frames, fps) -> indices`` chooses frames once the count is known; only those are decoded.
FramePicker = Callable[[int, float], np.ndarray]


# Eight parameters: plan_decode's keyword-only options, the frame picker and the memory budget.
def decode_sampled(src: str | bytes, pick: FramePicker, *, segment: tuple[int, int] | None = None,
                   segment_fps: float | None = None, short_side: int | None = None, like_loader: bool = False,
                   backend: str = "auto", device: str = "cpu", budget: int | None = None) -> DecodedVideo:
    """The frames ``pick(n, fps)`` chooses out of the ``n`` frames of ``src`` (or of ``segment``), in
    ``pick``'s order, repeats allowed: the same pixels as ``decode_video(...).frames[pick(n, fps)]``
    without decoding the rest (PyAV decodes only the GOPs that hold picked frames; DALI only the picked
    frames). A picked frame the decoder does not output is ``truncated``, never another frame."""
    plan = plan_decode(src, segment=segment, segment_fps=segment_fps, short_side=short_side,
                       like_loader=like_loader, backend=backend, device=device)
    idx = np.asarray(pick(plan.num_frames, plan.info.fps), dtype=np.int64)
    unique = np.unique(idx)
    got = dict(stream_frames(plan, unique, budget))
    if len(got) < unique.size and plan.backend == "pyav":
        # A seek that landed past its keyframe (MPEG-PS indexes loosely): decode forward instead.
        got = dict(stream_frames(plan, unique, budget, seek=False))
    missing = [int(i) for i in unique if int(i) not in got]
    if missing:
        raise VideoDecodeError("truncated", f"frames {missing[:5]} of {plan.num_frames} did not decode "
                                            "(the stream ends or skips them)")
    return DecodedVideo(np.stack([got[int(i)] for i in idx]), plan.info.fps, plan.info.codec, plan.backend,
                        plan.num_frames, plan.clamped)


__all__ = ["BACKENDS", "DALI_CPU_CODECS", "DecodedVideo", "FramePicker", "VideoDecodeError", "VideoPlan",
           "check_count", "decode_sampled", "decode_video", "plan_decode", "probe_container", "resize_like_loader",
           "segment_seconds", "stream_frames", "yuv_route"]
