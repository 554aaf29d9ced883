"""Helpers of the reliability tests: the running Ray's address for child drivers, a video with an absurd
header and the other hostile entries of a video folder, whether a process is stopped."""

from __future__ import annotations

import os
import struct
from pathlib import Path


def ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def huge_duration(webm: bytes) -> bytes:
    """The same WebM with its Segment Info Duration set to 1e12 (ms): an absurd header, valid data."""
    i = webm.find(b"\x44\x89\x88")  # Duration element, 8-byte float
    assert i > 0
    return webm[:i + 3] + struct.pack(">d", 1e12) + webm[i + 11:]


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): its state in /proc is 'T'."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def add_hostile_videos(folder: Path, good: bytes) -> dict[str, str]:
    """Beside the good videos in ``folder``, one of each hostile entry (``good``: a real WebM to spoil).
    Returns each one's path -> the reject reason every inference path gives it."""
    (folder / "dir.webm").mkdir()
    os.mkfifo(folder / "fifo.webm")  # never opened: it would block
    os.symlink("loop.mp4", folder / "loop.mp4")
    (folder / "huge.webm").write_bytes(huge_duration(good))
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.webm").write_bytes(b"\x00\xffgarbage" * 50)
    (folder / "cut.webm").write_bytes(good[: len(good) // 2])
    return {str(folder / "dir.webm"): "not_a_file", str(folder / "fifo.webm"): "not_a_file",
            str(folder / "loop.mp4"): "unreadable", str(folder / "huge.webm"): "bad_metadata",
            str(folder / "empty.mp4"): "empty", str(folder / "garbage.webm"): "undecodable",
            str(folder / "cut.webm"): "truncated"}
