"""Batch-inference throughput (videos/s): the Ray Data job (decode tasks + model actor pool) beside a
plain loop that decodes, samples and predicts one video at a time in one process, on the same videos,
the same checkpoint and the same views.

    python -m benchmarks.infer_speed                       # 96 synthetic videos, tiny CAST, CPU
    python -m benchmarks.infer_speed --videos 400 --preset base --size 256 --frames 64   # a GPU machine
    python -m benchmarks.infer_speed --decode-only --videos 24 --size 256 --frames 96  # views only

The loop is timed from its model load to its last prediction; the job from its start to its last
Parquet part (actor start-up included), and also after its first predictions came back (steady state).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from cast_model import CAST, CASTConfig, load_checkpoint, save_checkpoint
from pipelines.decode import decode_video
from pipelines.synthetic import SynthConfig, class_name, write_dataset
from workflows.inference.config import InferConfig
from workflows.inference.replica import video_probs
from workflows.inference.views import ViewSpec, sample_views, video_views
from workflows.inference.released import recipe_contract


def make_inputs(root: Path, videos: int, size: int, frames: int, preset: str) -> tuple[Path, Path]:
    classes = 8
    per_class = max(1, -(-videos // classes))
    data = write_dataset(SynthConfig("ssv2", classes, per_class, size, frames, 12.0, 0, 0), root / "data")
    labels = {"label": {str(i): class_name(i) for i in range(classes)}}
    ckpt = save_checkpoint(root / "model", CAST(CASTConfig.preset(preset, num_classes=classes)), labels,
                           extra=recipe_contract("ssv2", labels))
    files = sorted(Path(data["videos"]).glob("*.webm"))[:videos]
    inbox = root / "inbox"
    inbox.mkdir()
    for f in files:
        (inbox / f.name).symlink_to(f)
    return inbox, ckpt


def plain_loop(inbox: Path, ckpt: Path, spec: ViewSpec, device: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    t0 = time.time()
    model, _ = load_checkpoint(ckpt)
    model = model.to(device).eval()
    n = 0
    for path in sorted(inbox.iterdir()):
        frames = decode_video(str(path), short_side=spec.img_size, like_loader=True).frames
        views = torch.from_numpy(sample_views(frames, spec))[None].to(device)  # (1, V, T, S, S, 3)
        video_probs(model, views)["label"].topk(5)
        n += 1
    seconds = time.time() - t0
    return {"torch_threads": threads, "videos": n, "seconds": round(seconds, 2), "videos_per_s": round(n / seconds, 2)}


def decode_speed(inbox: Path, spec: ViewSpec, rounds: int = 2) -> dict:
    """Videos/s of the views alone (no model): decoding every frame then sampling, beside decoding only
    the sampled frames (``video_views``, what inference runs). Interleaved rounds: the machine is shared."""
    paths = sorted(inbox.iterdir())
    times = {"decode_all": 0.0, "decode_sampled": 0.0}
    for _ in range(rounds):
        t0 = time.time()
        for path in paths:
            sample_views(decode_video(str(path), short_side=spec.img_size, like_loader=True).frames, spec)
        times["decode_all"] += time.time() - t0
        t1 = time.time()
        for path in paths:
            video_views(str(path), spec)
        times["decode_sampled"] += time.time() - t1
    n = len(paths) * rounds
    out = {k: {"videos_per_s": round(n / v, 2), "seconds": round(v, 2)} for k, v in times.items()}
    out["speedup"] = round(times["decode_all"] / times["decode_sampled"], 2)
    return out


def ray_job(inbox: Path, ckpt: Path, out: Path, clips: int, crops: int, batch_size: int,
            replicas: int | None) -> dict:
    import ray

    from workflows.inference.job import plan_job, run_job

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        plan = plan_job(InferConfig(model=str(ckpt), input=str(inbox), out=str(out), test_clips=clips,
                                    test_crops=crops, batch_size=batch_size, num_replicas=replicas,
                                    progress_every=1e9))
        r = run_job(plan, log=lambda _: None)
    finally:
        ray.shutdown()
    first = plan.cfg.batch_size  # the first batch's videos came back at first_output_s
    steady = (r.predicted - first) / max(r.seconds - r.first_output_s, 1e-9)
    return {"videos": r.predicted, "seconds": round(r.seconds, 2), "videos_per_s": round(r.videos_per_s, 2),
            "first_output_s": round(r.first_output_s, 2), "steady_videos_per_s": round(steady, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=96)
    p.add_argument("--size", type=int, default=96, help="frame height of the synthetic videos")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--crops", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--replicas", type=int, default=None)
    p.add_argument("--decode-only", action="store_true", help="only the decode-all vs decode-sampled figures")
    p.add_argument("--loop-threads", default=f"1,{os.cpu_count()}",
                   help="torch threads of the plain loop, one run per value (CPU only)")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        inbox, ckpt = make_inputs(Path(tmp), a.videos, a.size, a.frames, a.preset)
        cfg = CASTConfig.preset(a.preset)
        spec = ViewSpec(cfg.num_frames, cfg.img_size, a.clips, a.crops)
        decode = decode_speed(inbox, spec)
        threads = [int(t) for t in a.loop_threads.split(",")] if device == "cpu" else [torch.get_num_threads()]
        loops = [] if a.decode_only else [plain_loop(inbox, ckpt, spec, device, t) for t in dict.fromkeys(threads)]
        job = None if a.decode_only else ray_job(inbox, ckpt, Path(tmp) / "out", a.clips, a.crops, a.batch_size,
                                                 a.replicas)
    machine = {"cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
               "load_avg_1m": round(os.getloadavg()[0], 1), "python": platform.python_version(),
               "torch": torch.__version__}
    print(json.dumps({"setup": vars(a) | {"views": a.clips * a.crops, "img_size": cfg.img_size,
                                          "num_frames": cfg.num_frames},
                      "decode": decode, "baseline_loop": loops, "ray_data_job": job, "machine": machine}, indent=1))
    print(f"views only: decode all then sample {decode['decode_all']['videos_per_s']} videos/s, decode only the "
          f"sampled frames {decode['decode_sampled']['videos_per_s']} videos/s (x{decode['speedup']})")
    if job is None:
        return
    for loop in loops:
        print(f"plain loop ({loop['torch_threads']} torch thread(s)): {loop['videos_per_s']} videos/s")
    print(f"Ray Data job: {job['videos_per_s']} videos/s end to end, {job['steady_videos_per_s']} videos/s after "
          f"its first output at {job['first_output_s']}s")


if __name__ == "__main__":
    main()
