"""A decode task's resident memory does not grow with the video's length (1080p H.264, 100 vs 400
frames, each preprocessed in a fresh Ray worker under a memory request). Sizes are test-sized: the
10 s vs 10 min figures come from ``benchmarks/decode_memory.py`` (docs/real-video.md)."""

from __future__ import annotations

import json

import pytest

from pipelines.encode import EncodeConfig
from pipelines.memory import MemoryWatch
from pipelines.preprocess_job import _Work, process_row
from pipelines.schema import VideoRow
from tests.support.real_videos import ffmpeg, require_ffmpeg

pytestmark = pytest.mark.ray


def peak_growth(path: str) -> dict:
    """Preprocess ``path`` in this process: its resident memory's peak growth above the start (sampled
    every 10 ms) and the size of the encoded sample it returns."""
    with MemoryWatch(None, interval_s=0.01, track=True) as watch:
        out = process_row(VideoRow("v", path, {"label": 0}).to_record(),
                          _Work(256, None, EncodeConfig(), "cpu", 2, ("label",)))
    return {"reason": out["reason"], "grown": watch.grown, "encoded": len(out["video"]),
            "frames": json.loads(out["meta"])["num_frames"] if out["meta"] else 0}


@pytest.fixture(scope="module")
def hd_videos(tmp_path_factory) -> dict[int, str]:
    require_ffmpeg()
    root = tmp_path_factory.mktemp("hd")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25", "-frames:v", "25", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "25", str(root / "hd25.mp4"))
    out = {}
    for n in (100, 400):  # looped by stream copy: made in a second, whatever the length
        ffmpeg("-stream_loop", str(n // 25 - 1), "-i", str(root / "hd25.mp4"), "-c", "copy", str(root / f"hd{n}.mp4"))
        out[n] = str(root / f"hd{n}.mp4")
    return out


def test_decode_memory_does_not_grow_with_length(local_ray, hd_videos):
    import ray

    task = ray.remote(num_cpus=1, memory=1 << 30, max_calls=1)(peak_growth)  # a fresh worker per video
    short, long = ray.get([task.remote(hd_videos[100]), task.remote(hd_videos[400])])
    assert short["reason"] == long["reason"] == "" and (short["frames"], long["frames"]) == (100, 400)
    # 4x the frames: the growth may differ by the encoded sample (kept until returned) and noise, not by
    # decoded frames (one 1080p RGB frame is 6 MiB; 300 more would be 1.8 GiB)
    extra = long["grown"] - short["grown"] - (long["encoded"] - short["encoded"])
    assert extra < 48 << 20, (short, long)
    assert long["grown"] < 400 << 20, long
