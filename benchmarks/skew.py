"""Training/serving skew: does a trained model give the same top-1 on a video whether it reads it from the
shards (as training and its validation do) or from the original file (as batch inference and
``cast-predict`` do on raw videos)?

    python -m benchmarks.skew                 # the demo's data and model: 24 classes x 8 videos (48 validation)
    python -m benchmarks.skew --epochs 0      # the same model before fine-tuning (experts loaded, rest at --seed)
    python -m benchmarks.skew --work /tmp/skew -- --base-lr 0.1   # keep the data; after --: training flags

Steps: the demo's synthetic SSV2-layout videos (``pipelines.synthetic``, VP9 WebM; 6 objects x 4 directions of
motion) -> WebDataset shards by the demo's ``make_shards`` (``run_preprocess``, what ``cast-preprocess`` runs,
on a local Ray) -> CAST fine-tuned in this process as the demo does (``workflows.training.demo``: the micro
recipe from the project's pretrained experts, frozen, cached under data/experts and pretrained there only if
missing), with the training recipe's loader, model, optimizer and schedule (``workflows.training``; one
worker accumulating the recipe's total batch, no Ray Train, no MLflow) and saved with the contract training
writes (its evaluation views) -> every validation video predicted three ways, fp32:

* ``shard/dali``: the DALI evaluation loader on the shard (what training's validation scores);
* ``shard/pyav``: the shard's video member through the inference decode (batch inference on a shard folder);
* ``raw/pyav``: the original file through the inference decode (``cast-predict``, batch inference on videos).

Printed: top-1 agreement and mean |delta p| of the top class between paths, per-path top-1 accuracy, and the
pixel difference of the model inputs (0-255 levels, same views) for the same video; the middle path splits
the skew into the decoder/resize part (dali vs pyav on the same bytes) and the re-encode part (shard vs raw).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from cast_model import CAST, save_checkpoint
from cast_model.vocab import as_heads, view_average
from pipelines.datasets import read_dataset
from pipelines.loader import MEAN, STD, eval_loader, train_loader
from pipelines.synthetic import SynthConfig, ensure_dataset
from workflows.experts import ExpertFiles, ensure_experts
from workflows.inference.classify import VideoClassifier, views_for
from workflows.inference.config import InferConfig
from workflows.inference.inputs import list_inputs
from workflows.inference.model import resolve_model
from workflows.inference.views import video_views
from workflows.training import demo
from workflows.training.command import config_from_args
from workflows.training.config import TrainConfig, steps_per_epoch, warmup_steps
from workflows.training.launch import with_defaults
from workflows.training.loop import Worker, checkpoint_extra, labels_of, loader_config
from workflows.training.recipe import build_criterion, build_model, build_optimizer, build_scheduler, total_loss
from workflows.training.validation import validate

PATHS = ("shard/dali", "shard/pyav", "raw/pyav")


def log(message: str) -> None:
    print(f"[skew] {message}", file=sys.stderr, flush=True)


class Meter:
    """Wall and CPU seconds of a block: this process and its descendants (Ray's workers) together."""

    @staticmethod
    def cpu() -> float:
        me = psutil.Process()
        total = sum(me.cpu_times()[:4])  # user, system, and the reaped children's
        for p in me.children(recursive=True):
            try:
                total += sum(p.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return total

    def __enter__(self) -> "Meter":
        self.t0, self.c0 = time.perf_counter(), self.cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu_s = time.perf_counter() - self.t0, self.cpu() - self.c0


def make_shards(root: Path, a: argparse.Namespace) -> dict:
    """Synthetic SSV2 videos and their train/validation shards (written by a local Ray of 2 CPUs), or
    those ``root`` already holds (``--work``; preprocessing resumes, so a finished split costs nothing)."""
    import ray

    from workflows.cluster.ray_connect import connect_ray

    synth = SynthConfig("ssv2", a.classes, a.per_class, a.size, a.frames, demo.VIDEO_FPS, a.seed)
    shards = root / "shards"
    data = ensure_dataset(synth, root / "videos", derived=(shards,), log=log)
    connect_ray(2, log_to_driver=False)
    try:
        demo.make_shards(data, shards, short_side=a.short_side, log=log)
    finally:
        ray.shutdown()
    return data | {"shards": str(shards)}


def train_config(shards: str, experts: ExpertFiles, a: argparse.Namespace, extra: list[str]) -> TrainConfig:
    """The demo's fine-tuning (the ssv2 recipe at ``a.preset`` from ``experts``; at micro, experts frozen
    and a total batch of 16) on one worker, ``a.epochs``, fp32, then the training flags in ``extra``."""
    argv = demo.finetune_argv(Path(shards), experts, a.preset) + [
        "--num-workers", "1", "--epochs", str(max(a.epochs, 1)), "--precision", "fp32", "--seed", str(a.seed),
        "--run-name", "skew"]
    return with_defaults(config_from_args("ssv2", argv + extra))


def train(cfg: TrainConfig, epochs: int) -> CAST:
    """``epochs`` of the recipe on the shards in this process (one worker; ``epochs`` 0: the model as
    initialised, from the experts ``cfg`` names and ``cfg.seed``)."""
    worker = Worker(0, 1, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    if not epochs:
        return model.eval()
    loader = train_loader(cfg.shards, cfg.train_split, cfg=loader_config(cfg, worker, (1, 1)))
    optimizer = build_optimizer(cfg, model)
    per_epoch = steps_per_epoch(len(loader), cfg.update_freq)
    scheduler = build_scheduler(cfg, optimizer, per_epoch * epochs, warmup_steps(cfg, per_epoch))
    criterion, step = build_criterion(cfg, mixup_active=False), 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        losses = []
        for i, batch in enumerate(loader):
            logits = as_heads(model(batch["video"]))  # {head: (B, C)}
            loss = total_loss(criterion, logits, labels_of(batch, cfg.heads, worker.device))
            (loss / cfg.update_freq).backward()
            losses.append(float(loss.detach()))
            if (i + 1) % cfg.update_freq == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                scheduler.step_update(step)
        log(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.3f}")
    return model.eval()


@torch.inference_mode()
def shard_dali(model: CAST, cfg: TrainConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (probs (C,), views (V, T, S, S, 3) float 0-255) from the DALI evaluation loader at the
    checkpoint's views, softmax averaged over views as training's ``validation_scores``."""
    worker = Worker(0, 1, torch.device("cpu"))
    loader = eval_loader(cfg.val_shards, cfg.val_split, cfg=loader_config(cfg, worker, (cfg.test_clips, cfg.test_crops)))
    mean, std = torch.tensor(MEAN).view(1, 1, 3, 1, 1, 1), torch.tensor(STD).view(1, 1, 3, 1, 1, 1)
    out = {}
    for batch in loader:
        video = batch["video"]  # (B, V, 3, T, S, S) normalised
        probs = view_average(as_heads(model(video.flatten(0, 1)))["label"], video.shape[1])  # (B, C)
        levels = (video * std + mean).permute(0, 1, 3, 4, 5, 2)  # (B, V, T, S, S, 3) in 0-255
        for key, p, v in zip(batch["key"], probs.numpy(), levels.numpy()):
            out[key] = (p, v)
    return out


def pyav_paths(ckpt: Path, data: dict, tmp: Path) -> tuple[dict, dict[str, int]]:
    """({"shard/pyav", "raw/pyav"}: key -> (probs (C,), views (V, T, S, S, 3) uint8), key -> label), by the
    inference code (``VideoClassifier``: cast-predict's; views and model settings from the checkpoint), fp32."""
    source = resolve_model(str(ckpt))
    classifier = VideoClassifier.load(source, top_k=len(source.labels["label"]), device="cpu", precision="fp32")
    spec = views_for(source)
    members = list_inputs(InferConfig(model=str(ckpt), input=data["shards"], out=str(tmp / "out"),
                                      split="validation")).records
    raw = {row.source_id: row for row in read_dataset("ssv2", data["videos"], data["annotations"], "validation").rows}
    inputs, labels = {"shard/pyav": {}, "raw/pyav": {}}, {}
    for rec in members:
        with open(rec["path"], "rb") as f:
            f.seek(rec["offset"])
            inputs["shard/pyav"][rec["key"]] = f.read(rec["size"])
        inputs["raw/pyav"][rec["key"]] = raw[rec["source_id"]].path
        labels[rec["key"]] = raw[rec["source_id"]].labels["label"]
    out = {}
    for path, srcs in inputs.items():
        keys = sorted(srcs)
        results = classifier.classify([srcs[k] for k in keys], names=keys)
        out[path] = {}
        for k, r in zip(keys, results):
            if r["reason"]:
                raise RuntimeError(f"{path} {k}: {r['reason']}: {r['detail']}")
            probs = np.zeros(len(r["top_ids"]), np.float32)
            probs[np.asarray(r["top_ids"])] = r["top_probs"]
            out[path][k] = (probs, video_views(srcs[k], spec))
    return out, labels


def compare(preds: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], labels: dict[str, int]) -> dict:
    """Per path: top-1 accuracy and the mean probability of its top class (a flat model agrees with
    anything); per pair of paths: top-1 agreement, mean |delta p| of the first path's top
    class, and the mean / 99th percentile / max absolute difference of the model inputs (0-255 levels)."""
    keys = sorted(preds[PATHS[0]])
    out = {"videos": len(keys), "chance": 1 / len(preds[PATHS[0]][keys[0]][0]), "top1": {}, "mean_top_prob": {},
           "pairs": {}}
    for path in PATHS:
        out["top1"][path] = float(np.mean([preds[path][k][0].argmax() == labels[k] for k in keys]))
        out["mean_top_prob"][path] = float(np.mean([preds[path][k][0].max() for k in keys]))
    for i, a in enumerate(PATHS):
        for b in PATHS[i + 1:]:
            top_a = [preds[a][k][0].argmax() for k in keys]
            agree = np.mean([t == preds[b][k][0].argmax() for t, k in zip(top_a, keys)])
            dprob = np.mean([abs(preds[a][k][0][t] - preds[b][k][0][t]) for t, k in zip(top_a, keys)])
            diff = np.concatenate([np.abs(preds[a][k][1].astype(np.float32) - preds[b][k][1].astype(np.float32)).ravel()
                                   for k in keys])
            out["pairs"][f"{a} vs {b}"] = {"top1_agreement": float(agree), "mean_abs_dprob_top": float(dprob),
                                           "pixel_mean_abs": float(diff.mean()),
                                           "pixel_p99_abs": float(np.percentile(diff, 99)),
                                           "pixel_max_abs": float(diff.max())}
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=demo.NUM_CLASSES)
    p.add_argument("--per-class", type=int, default=demo.VIDEOS_PER_CLASS,
                   help="training videos per class; validation a quarter")
    p.add_argument("--size", type=int, default=demo.VIDEO_SIZE, help="frame height of the synthetic videos (width 4/3 of it)")
    p.add_argument("--frames", type=int, default=demo.VIDEO_FRAMES)
    p.add_argument("--short-side", type=int, default=demo.SHORT_SIDE, help="the shards' short side (preprocessing)")
    p.add_argument("--preset", default=demo.PRESET, help="model preset and expert preset")
    p.add_argument("--experts", default=None,
                   help="folder holding <preset>/ pretrained expert files (default: data/experts; pretrained there if missing)")
    p.add_argument("--epochs", type=int, default=15, help="0: the model before fine-tuning (experts loaded, rest from --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads of training and prediction")
    p.add_argument("--work", default=None, help="keep videos, shards and model here (default: a temporary folder)")
    a = p.parse_args(ours)
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.work or tmp)
        with Meter() as m:
            data = make_shards(root, a)
        times["data_and_shards"] = m
        experts = ensure_experts(Path(a.experts) if a.experts else None, preset=a.preset, log=log)
        cfg = validate(train_config(data["shards"], experts, a, extra))
        with Meter() as m:
            model = train(cfg, a.epochs)
            shutil.rmtree(root / "model", ignore_errors=True)
            ckpt = save_checkpoint(root / "model", model, cfg.labels, extra=checkpoint_extra(cfg, "skew-benchmark", {}))
        times["train"] = m
        with Meter() as m:
            pyav, labels = pyav_paths(ckpt, data, root)
            preds = {"shard/dali": shard_dali(model, cfg)} | pyav
        times["predict_3_paths"] = m
    result = compare(preds, labels)
    result |= {"setup": vars(a) | {"training_flags": extra, "model": "fine-tuned" if a.epochs else "not fine-tuned (fixed seed)",
                                   "experts": experts.lineage,
                                   "views": f"{cfg.test_clips} clip(s) x {cfg.test_crops} crop(s), {cfg.sampling}",
                                   "img_size": cfg.model_config().img_size},
               "seconds": {k: {"wall": round(v.wall, 1), "cpu": round(v.cpu_s, 1)} for k, v in times.items()},
               "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "load_before": load_before,
                           "load_after": os.getloadavg(), "python": platform.python_version(),
                           "torch": torch.__version__}}
    print(json.dumps(result, indent=1, default=float))
    return result


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
