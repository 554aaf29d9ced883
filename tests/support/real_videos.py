"""Makes the fidelity suite's videos with Debian's ffmpeg, each kind of :data:`real_video_cases.CASES`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.real_video_cases import CASES, FPS, Case, frames

HINT = "ffmpeg not found: the fidelity suite needs Debian's ffmpeg; run `make test-deps` (infra/local/install_ffmpeg.sh)"


def require_ffmpeg() -> None:
    """Fail (never skip) without ffmpeg, with a one-line hint."""
    if shutil.which("ffmpeg") is None:
        pytest.fail(HINT, pytrace=False)


def ffmpeg(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-nostdin" if stdin is None else "-y", "-y", *args],
                          input=stdin, capture_output=True, check=True).stdout


def encode(pixels: np.ndarray, out: Path, options: tuple[str, ...], fps: int = FPS) -> Path:
    n, h, w, _ = pixels.shape
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", *options, str(out),
           stdin=pixels.tobytes())
    return out


def reference(path: Path) -> np.ndarray:
    """ffmpeg's own decode, pinned: RGB24 through swscale's bilinear filter, the colour matrix and range
    the stream is tagged with (BT.601 when untagged), display matrix applied (ffmpeg's autorotate)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-sws_flags", "bilinear",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                       "stream=width,height:stream_side_data=rotation", "-of", "json", str(path)],
                                      capture_output=True, text=True, check=True).stdout)["streams"][0]
    w, h = probe["width"], probe["height"]
    if any(int(sd.get("rotation", 0)) % 180 for sd in probe.get("side_data_list", [])):
        h, w = w, h
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "8", "-bf", "2")


def _mirror(src: Path, out: Path) -> Path:
    """An MP4 whose track header's display matrix mirrors left-right (ffmpeg 5.1 cannot write one)."""
    data = src.read_bytes()
    identity = bytes.fromhex("00010000" "00000000" "00000000" "00000000" "00010000" "00000000")
    i = data.find(identity, data.find(b"tkhd"))
    assert i > 0, "no identity matrix in the track header"
    out.write_bytes(data[:i] + bytes.fromhex("ffff0000") + data[i + 4:])
    return out


def make(case: Case, root: Path, base: dict[str, Path]) -> Path:
    """The video of ``case`` under ``root`` (``base``: shared sources, made on first use)."""
    out = root / f"{case.name}.{case.container}"
    pixels = frames(h=case.size[0], w=case.size[1])
    if case.encode:
        return encode(pixels, out, case.encode)
    if "h264" not in base:
        base["h264"] = encode(pixels, root / "base_h264.mp4", H264)
        base["vp9"] = encode(pixels, root / "base_vp9.mp4", ("-c:v", "libvpx-vp9", "-deadline", "realtime",
                                                             "-cpu-used", "8", "-g", "8"))
    src = base["h264"]
    special = {
        "edit_list": lambda: ffmpeg("-ss", "0.55", "-i", str(src), "-c", "copy", str(out)),
        "edit_list_vp9": lambda: ffmpeg("-ss", "0.55", "-i", str(base["vp9"]), "-c", "copy", str(out)),
        "start_offset": lambda: ffmpeg("-i", str(src), "-c", "copy", "-output_ts_offset", "0.5", str(out)),
        "audio_longer": lambda: ffmpeg("-i", str(src), "-f", "lavfi", "-i", "sine=duration=3", "-c:v", "copy",
                                       "-c:a", "pcm_s16le", str(out)),
        "mirror": lambda: _mirror(src, out),
        "still_jpeg": lambda: encode(pixels[:1], out, ("-frames:v", "1")),
        "still_png": lambda: encode(pixels[:1], out, ("-frames:v", "1")),
        "one_frame": lambda: encode(pixels[:1], out, H264),
        "cut_short": lambda: out.write_bytes((lambda d: d[: len(d) // 3])(
            encode(pixels, root / "whole.webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime")).read_bytes())),
        "garbage": lambda: out.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()),
        "zero_bytes": lambda: out.write_bytes(b""),
    }
    if case.name.startswith("rotate_"):
        ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v", f"rotate={case.name.split('_')[1]}", str(out))
    else:
        special[case.name]()
    return out


def make_all(root: Path) -> dict[str, Path]:
    require_ffmpeg()
    base: dict[str, Path] = {}
    made = {c.name: make(c, root, base) for c in CASES}
    return made | {f"base_{k}": v for k, v in base.items()}
