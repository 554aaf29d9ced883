"""A decode task's memory: the budget checked from the probe before decoding, and a watchdog during it.

Decoding streams (frames are resized and encoded or sampled as they come), so a task's memory depends on
the frame size, not the video's length. What is left to guard against is a frame size (or a decoder)
that needs more than a node can give: the estimate refuses such a video before decoding, and the
watchdog stops a decode whose resident memory grows past the budget anyway. Either way the video is a
``too_large`` reject, never a task that Ray's memory monitor kills and retries without end.
"""

from __future__ import annotations

import os
import threading
import time

from pipelines.probe import Probe, VideoDecodeError

# Per-video budget of a decode task by default: resident memory beyond what the task held before it.
DEFAULT_BUDGET_BYTES = 1 << 30  # a 4K frame needs ~0.6 GiB by the estimate below
# Decoders keep reference frames and per-thread frames in flight: at most this many coded frames.
_FRAMES_IN_FLIGHT = 24
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def frame_bytes(info: Probe) -> int:
    """Bytes of one decoded frame at the coded size and bit depth (YUV 4:2:0 is 1.5 bytes a pixel; RGB
    copies are 3)."""
    return info.height * info.width * 3 * (2 if info.bit_depth > 8 else 1)


def estimate_bytes(info: Probe, chunk_frames: int = 1) -> int:
    """What decoding ``info``'s video needs at most: the decoder's frames in flight, plus ``chunk_frames``
    full-size RGB frames a batch decoder (DALI) hands over at once. Independent of the video's length."""
    return frame_bytes(info) * (_FRAMES_IN_FLIGHT + chunk_frames)


def check_budget(info: Probe, budget: int | None, chunk_frames: int = 1) -> None:
    """Refuse a video whose decode would need more than ``budget`` bytes (None: no budget)."""
    if budget is None:
        return
    need = estimate_bytes(info, chunk_frames)
    if need > budget:
        raise VideoDecodeError("too_large", f"{info.width}x{info.height} frames need ~{need / 2**20:.0f} MiB "
                                            f"to decode, over the budget of {budget / 2**20:.0f} MiB")


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class MemoryWatch:
    """A thread sampling the process's resident memory; :meth:`check` raises ``too_large`` once it has
    grown more than ``budget`` bytes past what it was when the watch started. The decode loops call
    ``check`` per frame, so the reject comes before the node runs out."""

    def __init__(self, budget: int | None, interval_s: float = 0.05, track: bool = False) -> None:
        """``track``: sample even without a budget (measurements read :attr:`grown`)."""
        self.budget, self.interval_s, self.track = budget, interval_s, track
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "MemoryWatch":
        self.base = self.peak = resident_bytes()
        if self.budget is not None or self.track:
            self._thread = threading.Thread(target=self._run, daemon=True, name="decode-memory-watch")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval_s)

    @property
    def grown(self) -> int:
        return self.peak - self.base

    def check(self) -> None:
        if self.budget is not None and self.grown > self.budget:
            raise VideoDecodeError("too_large", f"decoding grew resident memory by {self.grown / 2**20:.0f} MiB, "
                                                f"over the budget of {self.budget / 2**20:.0f} MiB")
