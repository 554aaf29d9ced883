"""DALI decoding for ``pipelines.decode.stream_frames``: ``mixed`` (GPU) or ``cpu`` (VP8/VP9/MJPEG).

Two ways, both bounded in memory by the chunk size, not the video's length:

* a whole video from its first frame streams through ``fn.experimental.inputs.video`` (a pipeline of
  its own per video, so nothing of a previous video can be left in it), ``chunk`` frames per run;
* a window or sampled frames go through ``fn.decoders.video(frames=...)``, ``chunk`` indices per run.

Only streams whose packets are their frames reach DALI (``Probe.plain``, checked by the caller from the
timestamps): DALI numbers frames by packet, so an edit list's hidden pre-roll would shift its numbering
and a decoder that yields fewer frames than its index promises pads from a stale buffer. The frame
count of every run is checked against the request; a short run is ``truncated``, never padded.
"""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np

from pipelines.probe import VideoDecodeError


def _read(source) -> np.ndarray:
    if isinstance(source, str):
        return np.fromfile(source, dtype=np.uint8)  # the input buffer: the task's memory besides frames
    return np.frombuffer(source.getvalue(), dtype=np.uint8)


def _fit(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is not None and frames.shape[1:3] != size:
        frames = frames[:, : size[0], : size[1]]  # DALI rounds the long side itself; match even sizes
    return frames


def _error(e: Exception) -> VideoDecodeError:
    return VideoDecodeError("undecodable", f"DALI: {str(e).splitlines()[0] if str(e) else e}")


def dali_frames(plan, wanted: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` of ``wanted`` (window indices, sorted) in the plan's coded orientation."""
    device = plan.backend.split("-", 1)[1]
    short = min(plan.size) if plan.size else None
    data = _read(plan.source)
    whole = plan.start == 0 and wanted.size == plan.num_frames == plan.info.num_frames
    runs = _stream_whole(data, device, short, chunk, plan.num_frames) if whole else \
        _sampled(data, device, short, plan.start + wanted, chunk)
    done = 0
    for frames in runs:
        for f in _fit(frames, plan.size):
            yield int(wanted[done]), f
            done += 1


def _stream_whole(data: np.ndarray, device: str, short: int | None, chunk: int, n: int) -> Iterator[np.ndarray]:
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "gpu" else None,
                  prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
    def pipe():
        frames = fn.experimental.inputs.video(name="data", sequence_length=chunk, device="mixed" if device == "gpu"
                                              else "cpu", last_sequence_policy="partial")
        return fn.resize(frames, resize_shorter=short, antialias=True) if short else frames

    p = pipe()
    try:
        p.build()
        p.feed_input("data", [data])
    except RuntimeError as e:
        raise _error(e) from e
    done = 0
    while done < n:
        want = min(chunk, n - done)
        try:
            (out,) = p.run()
        except RuntimeError as e:
            if done:
                raise VideoDecodeError("truncated", f"DALI stopped after {done} of {n} frames") from e
            raise _error(e) from e
        frames = np.array((out.as_cpu() if device == "gpu" else out).at(0))
        if frames.shape[0] != want:
            raise VideoDecodeError("truncated", f"DALI gave {frames.shape[0]} frames where {want} were due "
                                                f"(after {done} of {n})")
        done += want
        yield frames


class _Sampler:
    """A one-sample ``fn.decoders.video(frames=...)`` pipeline per thread, device and size, built where it
    runs (GPU decoders created in another thread can hit an invalid CUDA context) and rebuilt after an
    error (a failed run can leave it unusable)."""

    _local = threading.local()

    @classmethod
    def get(cls, device: str, short: int | None):
        cache = cls._local.__dict__.setdefault("pipes", {})
        if (device, short) not in cache:
            cache[(device, short)] = cls._build(device, short)
        return cache[(device, short)]

    @classmethod
    def drop(cls, device: str, short: int | None) -> None:
        cls._local.__dict__.get("pipes", {}).pop((device, short), None)

    @staticmethod
    def _build(device: str, short: int | None):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "gpu" else None,
                      prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe():
            data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
            idx = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            frames = fn.decoders.video(data, device="mixed" if device == "gpu" else "cpu", frames=idx)
            return fn.resize(frames, resize_shorter=short, antialias=True) if short else frames

        p = pipe()
        p.build()
        return p


def _sampled(data: np.ndarray, device: str, short: int | None, frames: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    for lo in range(0, frames.size, chunk):
        idx = frames[lo:lo + chunk].astype(np.int32)
        pipe = _Sampler.get(device, short)
        try:
            pipe.feed_input("data", [data])
            pipe.feed_input("frames", [idx])
            (out,) = pipe.run()
        except RuntimeError as e:
            _Sampler.drop(device, short)
            raise _error(e) from e
        got = np.array((out.as_cpu() if device == "gpu" else out).at(0))
        if got.shape[0] != idx.size:
            raise VideoDecodeError("truncated", f"DALI gave {got.shape[0]} of the {idx.size} frames asked for")
        yield got
