"""One decode pass of a video -> the encoded clips of all its samples (the whole video, or its segments).

An EK100 video is a recording of minutes to an hour with dozens of segments: each segment decoded on its
own would read and decode the video again and again. Here the video is probed and decoded once, forward,
and each decoded frame is handed to the encoders of the segments that keep it (resampled to ``max_fps``);
a segment's clip is finished as soon as its last frame has passed. Memory: the decoder's frames in flight
plus one open encoder per segment that overlaps the current frame — never the video. Frames travel as
4:2:0 planes in the encoder's own format where ``decode.yuv_route`` allows (PyAV, 8-bit 4:2:0 sources,
even sizes), else as RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.decode import VideoPlan, check_count, plan_decode, segment_window, stream_frames, yuv_route
from pipelines.encode import EncodeConfig, StreamEncoder
from pipelines.probe import VideoDecodeError
from pipelines.sampling import resample_indices


@dataclass(frozen=True)
class ClipRequest:
    segment: tuple[int, int] | None = None  # EK100 frame numbers (see decode.segment_seconds); None: all
    segment_fps: float | None = None


@dataclass(frozen=True)
class ClipSettings:
    short_side: int | None
    max_fps: float | None
    encode: EncodeConfig
    device: str = "cpu"
    min_frames: int = 2
    budget: int | None = None  # per-video decode memory (pipelines.memory)


@dataclass
class Clip:
    video: bytes
    frames: int
    fps: float
    height: int
    width: int
    clamped: bool
    source_codec: str


@dataclass
class _Open:
    keep: np.ndarray  # (K,) frame-table indices this clip keeps, sorted
    fps: float
    clamped: bool
    encoder: StreamEncoder | None = None


def encode_clips(path: str, requests: list[ClipRequest], cfg: ClipSettings) -> list[Clip | VideoDecodeError]:
    """One result per request, in order: its clip, or the :class:`VideoDecodeError` that rejects it.
    Raises :class:`VideoDecodeError` only when the video itself is bad (then every request is)."""
    plan = plan_decode(path, short_side=cfg.short_side, device=cfg.device)
    results: list[Clip | VideoDecodeError | None] = [None] * len(requests)
    clips: dict[int, _Open] = {}
    for r, req in enumerate(requests):
        try:
            clips[r] = _open(plan, req, cfg.max_fps)
        except VideoDecodeError as e:
            results[r] = e
    users: dict[int, list[int]] = {}
    for r, c in clips.items():
        for i in c.keep.tolist():
            users.setdefault(i, []).append(r)
    pix_fmt = cfg.encode.pix_fmt if yuv_route(plan) else "rgb24"
    try:
        for i, frame in stream_frames(plan, np.array(sorted(users), dtype=np.int64), budget=cfg.budget,
                                      pix_fmt=pix_fmt):
            for r in users[i]:
                c = clips[r]
                if c.encoder is None:
                    c.encoder = _encoder(c.fps, plan, cfg.encode)
                c.encoder.add(frame)
                if i == c.keep[-1]:
                    results[r] = _finish(c, plan, cfg)
    except VideoDecodeError as e:
        for r, c in clips.items():
            if results[r] is None:
                _drop(c)
                results[r] = e
    for r, c in clips.items():
        if results[r] is None:  # the decoder stopped before this clip's last frame: believed, then checked
            results[r] = _finish(c, plan, cfg)
    return results  # type: ignore[return-value]


def _open(plan: VideoPlan, req: ClipRequest, max_fps: float | None) -> _Open:
    start, stop, clamped = (0, plan.num_frames, False) if req.segment is None else \
        segment_window(plan.info, req.segment, req.segment_fps)
    keep = start + resample_indices(stop - start, plan.info.fps, max_fps)
    return _Open(np.asarray(keep, dtype=np.int64), plan.info.fps * len(keep) / (stop - start), clamped)


def _encoder(fps: float, plan: VideoPlan, cfg: EncodeConfig) -> StreamEncoder:
    h, w = plan.out_size
    try:
        return StreamEncoder(fps, h, w, cfg)
    except (ValueError, OSError) as e:  # av's errors derive from OSError/ValueError
        raise VideoDecodeError("encode_failed", str(e)) from e


def _drop(c: _Open) -> None:
    if c.encoder is not None:
        c.encoder.close()


def _finish(c: _Open, plan: VideoPlan, cfg: ClipSettings) -> Clip | VideoDecodeError:
    frames = c.encoder.frames if c.encoder is not None else 0
    try:
        check_count(frames, len(c.keep), cfg.min_frames)
        video = c.encoder.finish()
    except VideoDecodeError as e:
        _drop(c)
        return e
    except (ValueError, OSError) as e:
        _drop(c)
        return VideoDecodeError("encode_failed", str(e))
    enc = c.encoder
    return Clip(video, frames, c.fps, enc.height, enc.width, c.clamped, plan.info.codec)
