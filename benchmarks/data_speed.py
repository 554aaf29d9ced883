"""Data pipeline speed, in one run on the same clips: the DALI shard loader against a baseline that
decodes the source video per sample with PyAV (what the paper's code does with decord), and the
preprocessing job's videos/s.

    python -m benchmarks.data_speed            # ~3 minutes on a 2-core VM
    python -m benchmarks.data_speed --videos 96 --batches 12

Per-core figures are clips per CPU-second of the measuring process (all its threads), so a loader
using two decoding threads is not credited for the second core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import psutil
import torch
import torch.nn.functional as F

from pipelines.decode import probe
from pipelines.loader import MEAN, STD, LoaderConfig, train_loader
from pipelines.manifest import read_manifest
from pipelines.preprocess_job import PreprocessConfig, run_preprocess
from pipelines.sampling import uniform_indices
from pipelines.synthetic import SynthConfig, write_dataset


class Meter:
    """Wall time and CPU time (all threads of this process) of a block."""

    def __enter__(self):
        self.proc = psutil.Process()
        c = self.proc.cpu_times()
        self.cpu0, self.t0 = c.user + c.system, time.perf_counter()
        return self

    def __exit__(self, *exc):
        c = self.proc.cpu_times()
        self.wall = time.perf_counter() - self.t0
        self.cpu = c.user + c.system - self.cpu0


def paper_rand_augment():
    """timm's RandAugment (m9, n2, mstd 0.5) on PIL frames, ops drawn once per clip and applied to every
    frame, as the VideoMAE-style code of the paper does before its random resized crop."""
    from timm.data.auto_augment import rand_augment_transform

    return rand_augment_transform("rand-m9-n2-mstd0.5", {"translate_const": 100, "img_mean": (124, 116, 104)})


def baseline_clip(path: str, rng: np.random.Generator, t: int, size: int, rand_augment=None) -> torch.Tensor:
    """Per-sample decoding as in the paper's code: open the source, decode up to the last sampled
    frame, pick 16 uniform segments, [RandAugment,] random-resized-crop + resize, normalise."""
    info = probe(path)  # decord knows the frame count from its index; WebM headers give the duration
    n = int(round(info.duration_s * info.fps))
    with av.open(path) as c:
        s = c.streams.video[0]
        idx = uniform_indices(n, t, rng.uniform(size=t))
        wanted, frames = set(idx.tolist()), {}
        for i, frame in enumerate(c.decode(s)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= idx[-1]:
                break
    last = frames[max(frames)]
    clip = [frames.get(i, last) for i in idx]
    if rand_augment is not None:
        from PIL import Image

        ops = [rand_augment.ops[i] for i in rng.choice(len(rand_augment.ops), rand_augment.num_layers)]
        pil = [Image.fromarray(f) for f in clip]
        for op in ops:
            pil = [op(im) for im in pil]
        clip = [np.asarray(im) for im in pil]
    clip = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float()
    h, w = clip.shape[-2:]
    area = h * w * rng.uniform(0.08, 1.0)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch, cw = min(h, int(round((area / ratio) ** 0.5))), min(w, int(round((area * ratio) ** 0.5)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    clip = F.interpolate(clip[:, :, y:y + ch, x:x + cw], size=(size, size), mode="bilinear", antialias=True)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((clip - mean) / std).permute(1, 0, 2, 3)  # (3, T, S, S)


def bench_baseline(paths: list[str], clips: int, t: int, size: int, rand_augment: bool) -> dict:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ra = paper_rand_augment() if rand_augment else None
    baseline_clip(paths[0], rng, t, size, ra)  # warm-up
    with Meter() as m:
        for i in range(clips):
            baseline_clip(paths[i % len(paths)], rng, t, size, ra)
    return {"clips": clips, "clips_per_s": clips / m.wall, "clips_per_cpu_s": clips / m.cpu}


def bench_loader(out: str, batches: int, t: int, size: int, threads: int, rand_augment: bool,
                 ra_interp: str = "linear") -> dict:
    cfg = LoaderConfig(num_frames=t, img_size=size, batch_size=8, num_threads=threads, shuffle_buffer=64,
                       rand_augment=rand_augment, ra_interp=ra_interp)
    loader = train_loader(out, "train", cfg=cfg)
    done, epoch = 0, 0
    it = None
    with Meter() as m:
        while done < batches + 1:
            loader.set_epoch(epoch)
            it = iter(loader)
            for batch in it:
                done += 1
                if done == 1:  # pipeline build and first batch are start-up, not throughput
                    m.__exit__()
                    start_wall, start_cpu = m.wall, m.cpu
                if done == batches + 1:
                    break
            epoch += 1
    assert batch["video"].shape == (8, 3, t, size, size)
    clips = batches * cfg.batch_size
    return {"clips": clips, "clips_per_s": clips / (m.wall - start_wall), "clips_per_cpu_s": clips / (m.cpu - start_cpu),
            "startup_s": start_wall}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=48, help="source videos (SSV2-like, 240p VP9)")
    p.add_argument("--frames", type=int, default=48, help="frames per source video (SSV2: ~30-60 at 12 fps)")
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--batches", type=int, default=6, help="loader batches of 8 clips per measurement")
    p.add_argument("--baseline-clips", type=int, default=32)
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed at the end")
    a = p.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="data_speed_"))
    t, size = 16, 224
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, CUDA {torch.cuda.is_available()}")
    src = write_dataset(SynthConfig(dataset="ssv2", num_classes=8, videos_per_class=max(1, a.videos // 8),
                                    size=a.height, frames=a.frames, fps=12.0), work / "src")
    paths = sorted(str(x) for x in Path(src["videos"]).glob("*.webm"))
    print(f"source: {len(paths)} train+val VP9 videos {a.height}p x {a.frames} frames, "
          f"{sum(os.path.getsize(x) for x in paths) / len(paths) / 1e3:.0f} kB each")

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results: dict = {"preprocess": {}, "loader": {}}
    try:
        for codec in ("vp9", "mjpeg"):
            out = work / f"shards_{codec}"
            cfg = PreprocessConfig(dataset="ssv2", videos=src["videos"], annotations=src["annotations"],
                                   split="train", out=str(out), codec=codec, max_samples_per_shard=8,
                                   progress_every_s=1e9)
            t0 = time.perf_counter()
            r = run_preprocess(cfg, log=lambda msg: None)
            wall = time.perf_counter() - t0
            m = read_manifest(str(out), "train").to_pandas()
            results["preprocess"][codec] = {"videos": r.written, "videos_per_s": r.written / wall,
                                            "kB_per_clip": float(m["bytes"].mean() / 1e3)}
    finally:
        ray.shutdown()

    train_paths = [x for x in paths if Path(x).stem in set(read_manifest(str(work / "shards_vp9"), "train")["source_id"].to_pylist())]
    results["baseline"] = {ra: bench_baseline(train_paths, a.baseline_clips, t, size, ra) for ra in (False, True)}
    # (codec, decoding threads, RandAugment: off / linear warps (the recipe) / nearest-neighbour warps)
    for codec, threads, ra in (("mjpeg", 1, "off"), ("mjpeg", 2, "off"), ("vp9", 1, "off"), ("mjpeg", 1, "linear"),
                               ("mjpeg", 2, "linear"), ("vp9", 1, "linear"), ("mjpeg", 1, "nn")):
        results["loader"][(codec, threads, ra)] = bench_loader(
            str(work / f"shards_{codec}"), a.batches, t, size, threads, ra != "off", "nn" if ra == "nn" else "linear")

    print(f"\nclips of {t}x{size}x{size}, batch 8, uniform sampling, random resized crop, normalised")
    print(f"{'':52s} {'clips/s':>8s} {'clips/CPU-s':>12s} {'x baseline/core':>16s}")
    for ra in (False, True):
        base = results["baseline"][ra]
        print(f"{'RandAugment ' + ('on' if ra else 'off') + ':':52s}")
        print(f"{'  baseline: PyAV decode per sample, 1 thread':52s} {base['clips_per_s']:8.2f} "
              f"{base['clips_per_cpu_s']:12.2f} {1.0:16.2f}")
        for (codec, threads, r_a), r in results["loader"].items():
            if (r_a != "off") == ra:
                name = f"  DALI shard loader, {codec}, {threads} thread(s)" + (", nn warps" if r_a == "nn" else "")
                print(f"{name:52s} {r['clips_per_s']:8.2f} "
                      f"{r['clips_per_cpu_s']:12.2f} {r['clips_per_cpu_s'] / base['clips_per_cpu_s']:16.2f}")
    print(f"\npreprocessing job (Ray Data, {os.cpu_count()} CPUs, decode+re-encode at the source size):")
    for codec, r in results["preprocess"].items():
        print(f"  shard codec {codec:6s} {r['videos_per_s']:6.2f} videos/s, {r['kB_per_clip']:7.1f} kB per clip")
    results["loader"] = {f"{c} threads={th} randaug={ra}": r for (c, th, ra), r in results["loader"].items()}
    results["baseline"] = {f"randaug={ra}": r for ra, r in results["baseline"].items()}
    print(json.dumps(results))
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
