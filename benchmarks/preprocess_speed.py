"""Preprocessing throughput per core beside ffmpeg's own decode + scale + encode of the same files, and
beside the previous commit's code, interleaved in one run on one machine.

For each size (240p VP9 WebM as SSV2 ships it, 480p and 1080p H.264 MP4), each round runs, file by file:
this tree's ``process_row`` (decode, resize to short side 256, encode MJPEG q5: the job's per-video
work) in a worker process; the same with ``--previous TREE``'s code; and
``ffmpeg -threads 1 -i F -vf scale=-2:256 -c:v mjpeg -q:v 5``. Figures are CPU seconds (all threads of
the worker / of ffmpeg), so videos/s and frames/s are per core. With ``--previous``, the first round's
shards of both trees are decoded and compared, with each other and with the source frames at the shard's
size (PyAV's decode, swscale's bilinear resize: what the RGB route encodes), as mean absolute differences
in 0-255 RGB levels, so a speed-up that changes the pixels says by how much.

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
    """Reads ``video<TAB>shard`` paths on stdin, preprocesses each video, writes its encoded sample to the
    shard path and prints its CPU seconds and frames (one JSON per line)."""
    from pipelines.encode import EncodeConfig
    from pipelines.preprocess_job import _Work, process_row
    from pipelines.schema import VideoRow

    work = _Work(256, None, EncodeConfig(codec="mjpeg", mjpeg_q=5), "cpu", 2, ("label",))
    for line in sys.stdin:
        video, shard = line.rstrip("\n").split("\t")
        c0, t0 = time.process_time(), time.time()
        out = process_row(VideoRow("v", video, {"label": 0}).to_record(), work)
        frames = json.loads(out["meta"])["num_frames"] if out["meta"] else 0
        Path(shard).write_bytes(out["video"])  # after the clock: not the job's work
        print(json.dumps({"cpu_s": time.process_time() - c0, "wall_s": time.time() - t0, "frames": frames,
                          "reason": out["reason"]}), flush=True)


class Worker:
    def __init__(self, tree: Path) -> None:
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], env=dict(os.environ, PYTHONPATH=str(tree)),
                                  cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, path: Path, shard: Path) -> dict:
        self.p.stdin.write(f"{path}\t{shard}\n")
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


def rgb_frames(path: Path, size: tuple[int, int] | None = None):
    """(F, H, W, 3) int16 RGB frames of ``path`` decoded by PyAV, resized to ``size`` = (h, w) if given."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        frames = (f.reformat(width=size[1], height=size[0]) if size else f for f in c.decode(video=0))
        return np.stack([f.to_ndarray(format="rgb24") for f in frames]).astype(np.int16)


def shard_differences(source: Path, this: Path, previous: Path) -> dict[str, float]:
    """Mean absolute differences (0-255) between the two trees' shards and against the source."""
    a, b = rgb_frames(this), rgb_frames(previous)
    if a.shape != b.shape:
        raise SystemExit(f"{this.name} and {previous.name} hold different frames: {a.shape} vs {b.shape}")
    src = rgb_frames(source, a.shape[1:3])
    return {"this vs previous": float(abs(a - b).mean()), "this vs source": float(abs(a - src).mean()),
            "previous vs source": float(abs(b - src).mean())}


def machine() -> str:
    """UTC time and load average (1/5/15 min): with every figure, as the machine may be shared."""
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {load}"


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
    print(f"# {cpu}, {os.cpu_count()} cores; start {machine()}")
    codes = {"this": Worker(HERE)} | ({"previous": Worker(a.previous)} if a.previous else {})
    totals: dict[tuple[str, str], dict[str, float]] = {}
    diffs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {s: make(Path(tmp), s, a.videos, a.seconds) for s in SIZES}
        for round_ in range(a.rounds):
            for size, paths in files.items():
                for path in paths:
                    shards = {name: path.with_suffix(f".{name}.avi") for name in codes}
                    runs = {name: w.run(path, shards[name]) for name, w in codes.items()}
                    runs |= {"ffmpeg -threads 1": ffmpeg_run(path)}
                    if round_ == 0 and "previous" in shards:
                        diffs.setdefault(size, []).append(shard_differences(path, shards["this"], shards["previous"]))
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
    for size, d in diffs.items():
        means = ", ".join(f"{k} {sum(x[k] for x in d) / len(d):.2f}" for k in d[0])
        print(f"# {size} pixels, mean |diff| in levels over {len(d)} videos: {means}")
    print(json.dumps({f"{s}/{n}": t for (s, n), t in totals.items()}))
    print(f"# end {machine()}")


if __name__ == "__main__":
    main()
