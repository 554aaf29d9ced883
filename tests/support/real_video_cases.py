"""The kinds of real video the fidelity suite makes with ffmpeg, and what the pipeline does with each.

One list for the tests (``tests/pipelines/test_real_video.py`` makes each file and checks the outcome) and for the docs:
``docs/real-video.md``'s table must list exactly these rows (checked by the suite).

Every made video carries its frame number in the picture (:func:`frames`: 8 blocks of 8x8 pixels, white
= 1, along the top), so a decoded frame says which source frame it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPS = 12
N = 24  # frames of every source clip
H, W = 48, 72


@dataclass(frozen=True)
class Case:
    name: str
    container: str  # file extension
    codec: str  # as the docs name it
    kind: str  # what is special about it
    outcome: str  # "accepted" or the reject reason
    encode: tuple[str, ...] = ()  # ffmpeg output options for the source frames
    bound: float = 0.5  # mean absolute difference (0-255 levels) allowed against ffmpeg's decode
    size: tuple[int, int] = (H, W)


# Exactness: 8-bit 4:2:0 decodes to the same RGB as Debian's ffmpeg (bound 0.5: identical in practice).
# 10-bit: PyAV's bundled FFmpeg converts 10-bit YUV to 8-bit RGB with another swscale than ffmpeg 5.1
# (measured ~11 levels mean on this colour-edge content), so its bound is stated separately.
CASES: tuple[Case, ...] = (
    Case("h264", "mp4", "H.264 8-bit", "constant rate", "accepted", ("-c:v", "libx264", "-pix_fmt", "yuv420p")),
    Case("h264_10bit", "mp4", "H.264 10-bit", "constant rate", "accepted",
         ("-c:v", "libx264", "-pix_fmt", "yuv420p10le"), bound=14.0),
    Case("hevc", "mp4", "HEVC", "constant rate", "accepted",
         ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error")),
    Case("vp8", "webm", "VP8", "constant rate", "accepted", ("-c:v", "libvpx", "-b:v", "1M")),
    Case("vp9", "webm", "VP9", "constant rate", "accepted",
         ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8")),
    Case("av1", "mkv", "AV1 (libaom)", "constant rate", "accepted",
         ("-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p")),
    Case("mpeg4", "avi", "MPEG-4 part 2", "constant rate", "accepted", ("-c:v", "mpeg4", "-q:v", "3")),
    Case("mpeg2", "mpg", "MPEG-2", "constant rate", "accepted", ("-c:v", "mpeg2video", "-q:v", "3")),
    Case("mjpeg", "avi", "MJPEG", "constant rate, full range", "accepted", ("-c:v", "mjpeg", "-q:v", "3")),
    Case("vfr", "mkv", "H.264 8-bit", "variable frame rate", "accepted",
         ("-vf", "setpts='if(lt(N,12),N/12,1+(N-12)/30)/TB'", "-fps_mode", "vfr", "-c:v", "libx264")),
    Case("edit_list", "mp4", "H.264 8-bit", "edit list (-ss cut, -c copy)", "accepted"),
    Case("edit_list_vp9", "mp4", "VP9", "edit list (-ss cut, -c copy)", "accepted"),
    Case("start_offset", "mkv", "H.264 8-bit", "stream starts at 0.5 s", "accepted"),
    Case("audio_longer", "mkv", "H.264 8-bit", "audio 1 s longer than video", "accepted"),
    Case("odd_size", "webm", "VP9", "odd frame size 71x47", "accepted",
         ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"), size=(47, 71)),
    Case("rotate_90", "mp4", "H.264 8-bit", "display matrix 90", "accepted"),
    Case("rotate_180", "mp4", "H.264 8-bit", "display matrix 180", "accepted"),
    Case("rotate_270", "mp4", "H.264 8-bit", "display matrix 270", "accepted"),
    Case("mirror", "mp4", "H.264 8-bit", "mirrored display matrix", "accepted"),
    Case("still_jpeg", "jpg", "JPEG", "a still picture", "too_short"),
    Case("still_png", "png", "PNG", "a still picture", "too_short"),
    Case("one_frame", "mp4", "H.264 8-bit", "a single frame", "too_short"),
    Case("cut_short", "webm", "VP9", "file cut at a third", "truncated"),
    Case("garbage", "mp4", "-", "random bytes", "undecodable"),
    Case("zero_bytes", "mp4", "-", "empty file", "empty"),
)


def frames(n: int = N, h: int = H, w: int = W) -> np.ndarray:
    """(n, h, w, 3) uint8: saturated moving stripes (colour edges everywhere) and the frame number."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        out[t, ..., 0] = np.where(((x + 3 * t) // 6) % 2, 230, 20)
        out[t, ..., 1] = np.where(((y + 2 * t) // 5) % 2, 200, 40)
        out[t, ..., 2] = (x * 4 + y * 2 + t * 9) % 256
        for b in range(8):
            out[t, 0:8, b * 8:(b + 1) * 8] = 255 if (t >> b) & 1 else 0
    return out


def frame_number(frame: np.ndarray) -> int:
    """The number :func:`frames` wrote into ``frame`` (read from the centres of its blocks)."""
    return sum(1 << b for b in range(8) if frame[2:6, b * 8 + 2:b * 8 + 6].mean() > 127)


def docs_rows(markdown: str) -> list[tuple[str, ...]]:
    """The rows of the table between ``<!-- cases -->`` markers: (case, container, codec, kind, outcome)."""
    body = markdown.split("<!-- cases -->")[1]
    rows = [ln.strip().strip("|").split("|") for ln in body.splitlines() if ln.startswith("|")]
    return [tuple(c.strip().strip("`") for c in r) for r in rows[2:]]


def docs_table() -> str:
    """The table, as ``docs/real-video.md`` holds it."""
    lines = ["| case | container | codec | kind | outcome |", "|---|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.container} | {c.codec} | {c.kind} | `{c.outcome}` |" for c in CASES]
    return "\n".join(lines)
