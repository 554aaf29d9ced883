"""Preprocessing throughput per core beside ffmpeg's own decode + scale + encode of the same files, and
beside the previous commit's code, interleaved in one run on one machine.

For each size (240p VP9 WebM as SSV2 ships it, 480p and 1080p H.264 MP4), each round runs, file by file:
this tree's ``process_row`` (decode, resize to short side 256, encode MJPEG q5: the job's per-video
work) in a worker process; the same with ``--previous TREE``'s code; and
``ffmpeg -threads 1 -i F -vf scale=-2:256 -c:v mjpeg -q:v 5``. Figures are CPU seconds (all threads of
the worker / of ffmpeg), so videos/s and frames/s are per core.

    python benchmarks/preprocess_speed.py --previous /tmp/prev      # ~5 minutes on a 2-core VM

The videos are ffmpeg's ``testsrc2`` with film grain (``noise``) so that they do not compress to nothing;
no real footage can be downloaded here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SIZES = {"240p": (427, 240, "webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"), 12),
         "480p": (854, 480, "mp4", ("-c:v", "libx264", "-preset", "fast"), 30),
         "1080p": (1920, 1080, "mp4", ("-c:v", "libx264", "-preset", "fast"), 30)}


def worker() -> None:
    """Reads paths on stdin, preprocesses each, prints its CPU seconds and frames (one JSON per line)."""
    from pipelines.encode import EncodeConfig
    from pipelines.preprocess_job import _Work, process_row
    from pipelines.schema import VideoRow

    work = _Work(256, None, EncodeConfig(codec="mjpeg", mjpeg_q=5), "cpu", 2, ("label",))
    for line in sys.stdin:
        c0, t0 = time.process_time(), time.time()
        out = process_row(VideoRow("v", line.strip(), {"label": 0}).to_record(), work)
        frames = json.loads(out["meta"])["num_frames"] if out["meta"] else 0
        print(json.dumps({"cpu_s": time.process_time() - c0, "wall_s": time.time() - t0, "frames": frames,
                          "reason": out["reason"]}), flush=True)


class Worker:
    def __init__(self, tree: Path) -> None:
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], env=dict(os.environ, PYTHONPATH=str(tree)),
                                  cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, path: Path) -> dict:
        self.p.stdin.write(f"{path}\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


def ffmpeg_run(path: Path) -> dict:
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-vf", "scale=-2:256", "-threads", "1",
                    "-c:v", "mjpeg", "-q:v", "5", "-f", "avi", "-y", os.devnull], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, "wall_s": time.time() - t0}


def make(root: Path, size: str, n: int, seconds: int) -> list[Path]:
    w, h, ext, codec, fps = SIZES[size]
    out = []
    for i in range(n):
        path = root / f"{size}-{i}.{ext}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds},noise=alls={8 + i}:allf=t", *codec,
                        "-pix_fmt", "yuv420p", str(path)], check=True)
        out.append(path)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true")
    p.add_argument("--previous", type=Path, help="a worktree of the previous commit")
    p.add_argument("--videos", type=int, default=3, help="videos per size")
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    if a.worker:
        worker()
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"# {cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    codes = {"this": Worker(HERE)} | ({"previous": Worker(a.previous)} if a.previous else {})
    totals: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {s: make(Path(tmp), s, a.videos, a.seconds) for s in SIZES}
        for _ in range(a.rounds):
            for size, paths in files.items():
                for path in paths:
                    runs = {name: w.run(path) for name, w in codes.items()} | {"ffmpeg -threads 1": ffmpeg_run(path)}
                    frames = runs["this"]["frames"]
                    for name, r in runs.items():
                        t = totals.setdefault((size, name), {"videos": 0, "frames": 0, "cpu_s": 0.0, "wall_s": 0.0})
                        t["videos"] += 1
                        t["frames"] += frames
                        t["cpu_s"] += r["cpu_s"]
                        t["wall_s"] += r["wall_s"]
    for w in codes.values():
        w.close()
    print("| size | code | videos/s per core | frames/s per core | CPU s | wall s |")
    print("|---|---|---|---|---|---|")
    for (size, name), t in totals.items():
        print(f"| {size} | {name} | {t['videos'] / t['cpu_s']:.2f} | {t['frames'] / t['cpu_s']:.0f} | "
              f"{t['cpu_s']:.1f} | {t['wall_s']:.1f} |")
    print(json.dumps({f"{s}/{n}": t for (s, n), t in totals.items()}))
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
