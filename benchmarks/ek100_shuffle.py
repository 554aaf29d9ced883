"""How well the training loader mixes EPIC-KITCHENS-100's recordings into batches.

EK100 preprocessing decodes each recording once for all its segments, so the shards hold a recording's
segments one after another (in annotation order), ~136 per recording on average. The training loader
permutes the tar order every epoch and then draws samples at random from a buffer of ``shuffle_buffer``
samples filled in reading order (``fn.readers.webdataset(random_shuffle=True, initial_fill=...)``): a
buffer shorter than a recording's run gives batches from one or two recordings.

    python -m benchmarks.ek100_shuffle             # EK100's train split at 1/5 scale, DALI's own reader

Shards of empty samples (each carries only its recording id) in the EK100 layout, read for one epoch by
DALI's webdataset reader with the loader's shuffle arguments (tars permuted per epoch as the loader does);
per batch: distinct recordings and the share of sample pairs from the same recording, beside a uniform
shuffle of the same samples (the ideal).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.shards import Member, write_tar

EK100_TRAIN = (495, 67_217)  # recordings, segments of the train split


def layout(recordings: int, segments: int, seed: int) -> np.ndarray:
    """(segments,) recording id per sample in preprocessing order: recording by recording, runs of
    lognormal lengths (EK100's recordings last 1 to 60+ minutes) scaled to ``segments`` in all."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.8, recordings)
    counts = np.maximum(1, np.round(weights / weights.sum() * segments)).astype(int)
    return np.repeat(np.arange(recordings), counts)


def write_shards(root: Path, recs: np.ndarray, per_shard: int) -> list[str]:
    tars = []
    for n, start in enumerate(range(0, len(recs), per_shard)):
        samples = [[Member(f"{start + i:07d}.rec", str(r).encode())] for i, r in enumerate(recs[start:start + per_shard])]
        path = root / f"p{per_shard}-{n:05d}.tar"
        with open(path, "wb") as f:
            index = write_tar(f, samples)
        path.with_suffix(".idx").write_text(index)
        tars.append(str(path))
    return tars


def read_epoch(tars: list[str], buffer: int, batch: int, seed: int) -> list[np.ndarray]:
    """One epoch of batches of recording ids, as the training loader's reader gives them."""
    from nvidia.dali import fn, pipeline_def, types

    order = np.random.default_rng(seed).permutation(len(tars))  # the loader permutes tars per epoch
    paths = [tars[i] for i in order]

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=seed)
    def pipe():
        rec = fn.readers.webdataset(paths=paths, index_paths=[p[:-4] + ".idx" for p in paths], ext=["rec"],
                                       dtypes=[types.UINT8], random_shuffle=True, initial_fill=buffer, seed=seed,
                                       name="reader")
        return rec

    p = pipe()
    p.build()
    total = p.epoch_size("reader")
    out = []
    for _ in range(total // batch):
        (rec,) = p.run()
        out.append(np.array([int(bytes(np.array(rec.at(i))).decode()) for i in range(batch)]))
    return out


def mixing(batches: list[np.ndarray]) -> dict:
    """Mean distinct recordings per batch and the share of a batch's sample pairs from one recording."""
    distinct = [len(np.unique(b)) for b in batches]
    same = [np.mean([b[i] == b[j] for i in range(len(b)) for j in range(i + 1, len(b))]) for b in batches]
    return {"distinct_recordings_per_batch": round(float(np.mean(distinct)), 2),
            "same_recording_pairs": round(float(np.mean(same)), 3)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=0.2, help="fraction of EK100's train recordings (and segments)")
    p.add_argument("--batch", type=int, default=6, help="clips per worker per step (the ek100 recipe's batch_size)")
    p.add_argument("--shard-samples", default="900,64", help="samples per shard: 900 ~ 1 GB shards of 1.1 MB "
                   "segments (docs/real-video.md's estimate), 64 ~ --max-samples-per-shard 64")
    p.add_argument("--buffers", default="256,1024,4096", help="shuffle buffers (the recipe's default 256)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    recs = layout(max(2, round(EK100_TRAIN[0] * a.scale)), round(EK100_TRAIN[1] * a.scale), a.seed)
    rng = np.random.default_rng(a.seed)
    ideal = mixing([b for b in rng.permutation(recs)[: len(recs) // a.batch * a.batch].reshape(-1, a.batch)])
    rows = []
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for per_shard in (int(x) for x in a.shard_samples.split(",")):
            tars = write_shards(Path(tmp), recs, per_shard)
            for buffer in (int(x) for x in a.buffers.split(",")):
                rows.append({"samples_per_shard": per_shard, "shuffle_buffer": buffer,
                             **mixing(read_epoch(tars, buffer, a.batch, a.seed))})
                print(json.dumps(rows[-1]), flush=True)
    result = {"recordings": int(recs.max() + 1), "segments": len(recs),
              "segments_per_recording": round(len(recs) / (recs.max() + 1), 1), "batch": a.batch,
              "uniform_shuffle": ideal, "rows": rows, "wall_s": round(time.perf_counter() - t0, 1),
              "cpu_s": round(time.process_time() - c0, 1), "load_avg": os.getloadavg()}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
