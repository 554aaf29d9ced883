"""Decode-task memory against video length: 1080p H.264 of 10 s and 10 min (25 fps), each preprocessed
(decode, resize to 256, encode MJPEG) and sampled for inference (16 frames) in a fresh process that
reports its peak resident-memory growth, CPU seconds and wall time; the previous commit's code on the
10 s video beside it (``--previous TREE``: a ``git worktree`` of it; its 10 min run would hold every
frame, ~5 GiB, so it is not run).

    python benchmarks/decode_memory.py --previous /tmp/prev     # ~10 minutes on a 2-core VM

The long video is the short one looped by stream copy (``ffmpeg -stream_loop N -c copy``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def child(path: str, mode: str) -> dict:
    """Runs in a fresh process with the code under test first on ``sys.path`` (its own memory sampler:
    the previous commit has no ``pipelines.memory``)."""
    import numpy as np

    from pipelines.encode import EncodeConfig
    from pipelines.preprocess_job import _Work, process_row
    from pipelines.schema import VideoRow

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.02)

    base = rss()
    threading.Thread(target=sample, daemon=True).start()
    t0, c0 = time.time(), time.process_time()
    if mode == "preprocess":
        out = process_row(VideoRow("v", path, {"label": 0}).to_record(),
                          _Work(256, None, EncodeConfig(), "cpu", 2, ("label",)))
        result = {"reason": out["reason"], "frames": json.loads(out["meta"])["num_frames"] if out["meta"] else 0,
                  "encoded_mib": round(len(out["video"]) / 2**20, 1)}
    else:
        from pipelines.decode import decode_sampled

        got = decode_sampled(path, lambda n, fps: np.linspace(0, n - 1, 16).astype(int), short_side=224)
        result = {"reason": "", "frames": int(got.frames.shape[0])}
    done.set()
    return result | {"peak_growth_mib": round((peak[0] - base) / 2**20, 1), "cpu_s": round(time.process_time() - c0, 1),
                     "wall_s": round(time.time() - t0, 1)}


def run_child(tree: Path, path: Path, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--child", str(path), "--mode", mode], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def make_videos(root: Path, long_loops: int) -> dict[str, Path]:
    base = root / "10s.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25",
                    "-frames:v", "250", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-g", "50",
                    str(base)], check=True)
    long = root / "10min.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(long_loops - 1), "-i", str(base), "-c", "copy",
                    str(long)], check=True)
    return {"10 s": base, "10 min": long}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child")
    p.add_argument("--mode", default="preprocess")
    p.add_argument("--previous", type=Path, help="a worktree of the previous commit, run on the 10 s video")
    p.add_argument("--loops", type=int, default=60, help="the long video is the 10 s one looped this often")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.mode)))
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"# {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_videos(Path(tmp), a.loops)
        rows = []
        for name, path in videos.items():
            for mode in ("preprocess", "sample"):
                rows.append({"code": "this", "video": name, "mode": mode} | run_child(HERE, path, mode))
                print(json.dumps(rows[-1]), flush=True)
            if a.previous and name == "10 s":
                rows.append({"code": "previous", "video": name, "mode": "preprocess"}
                            | run_child(a.previous, path, "preprocess"))
                print(json.dumps(rows[-1]), flush=True)
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
