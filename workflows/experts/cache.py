"""The expert files on disk: made once per preset, checked by digest, remade when missing or changed.

``<root>/<preset>/spatial.safetensors``, ``temporal.safetensors`` and ``experts.json`` (the geometry,
each file's sha256 and pretraining run id, probe accuracies, times). A lock file keeps two processes
from pretraining the same preset at once; files are written to a temporary name and renamed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cast_model.config import CASTConfig
from workflows.tracking import store as tracking
from workflows.tracking.lineage import PRETRAIN_RUN_KEY

from .export import clip_state_dict, sha256, videomae_state_dict, write_safetensors
from .nets import SpatialExpert
from .pretrain import (PRETRAIN_PRESETS, PretrainPools, PretrainPreset, pretrain_pools, probe_spatial, probe_temporal,
                       temporal_net, train_spatial, train_temporal)

EXPERIMENT = "cast-experts"
MANIFEST = "experts.json"
FILES = {"spatial": "spatial.safetensors", "temporal": "temporal.safetensors"}
Log = Callable[[str], None]


def preset_of(name: str) -> PretrainPreset:
    if name not in PRETRAIN_PRESETS:
        raise ValueError(f"unknown expert preset {name!r}; presets: {sorted(PRETRAIN_PRESETS)}")
    return PRETRAIN_PRESETS[name]


def read_manifest(folder: Path, preset: PretrainPreset) -> dict[str, Any] | None:
    """The folder's manifest if both files are there with the digests it records and were made by
    ``preset`` as it is defined now (a changed recipe remakes them), else None."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("params") != preset.params():
        return None
    for side, name in FILES.items():
        f = folder / name
        if not f.is_file() or sha256(f) != manifest["lineage"][f"{side}_sha256"]:
            return None
    return manifest


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread while pretraining: these matrices are too small to gain from a second one, and
    on a shared 2-core machine a second thread waiting for a busy core made steps ~10x slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_experts(folder: Path, preset_name: str, log: Log) -> dict[str, Any]:
    """Pretrain both experts of ``preset_name`` into ``folder`` (under a lock; a manifest another process
    finished meanwhile is returned as is). Returns the manifest."""
    with _locked(folder):
        preset = preset_of(preset_name)
        done = read_manifest(folder, preset)
        if done is not None:
            return done
        torch.manual_seed(preset.seed)
        pools = pretrain_pools(preset, log)
        cfg = preset.config()
        manifest: dict[str, Any] = {"preset": preset_name, "params": preset.params(), "config": cfg.to_dict(),
                                    "lineage": {}, "probes": {},
                                    "seconds": {}, "cpu_seconds": {}}
        with _one_thread():
            for side in FILES:
                _pretrain_one(side, preset, preset_name, pools, folder, manifest, log)
        tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, folder / MANIFEST)
        return manifest


def _pretrain_one(side: str, preset: PretrainPreset, preset_name: str, pools: PretrainPools, folder: Path,
                  manifest: dict[str, Any], log: Log) -> None:
    """One expert: its MLflow run (params, loss curve, probes before/after, the file as an artifact)."""
    cfg = preset.config()
    client = tracking.client()
    exp = tracking.ensure_experiment(EXPERIMENT)
    run_id = client.create_run(exp, run_name=f"pretrain-{side}-{preset_name}",
                               tags={"cast.expert": side, "cast.expert_preset": preset_name}).info.run_id
    ok = False
    try:
        for k, v in preset.params().items():
            client.log_param(run_id, k, v)
        if side == "spatial":
            net, pool, train, probe_of, probe_name = SpatialExpert(cfg), pools.spatial, train_spatial, probe_spatial, "appearance"
        else:
            net, pool, train, probe_of, probe_name = temporal_net(preset), pools.temporal, train_temporal, probe_temporal, "motion"
        probe = pools.probe
        before = probe_of(net.eval(), probe)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = train(net, pool, preset, lambda step, value: client.log_metric(run_id, "loss", value, step=step))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = probe_of(net, probe)
        state = clip_state_dict(net) if side == "spatial" else videomae_state_dict(net)
        path = folder / FILES[side]
        digest = write_safetensors(state, path, {PRETRAIN_RUN_KEY: run_id, "cast.expert": side,
                                                 "cast.expert_preset": preset_name})
        metrics = {f"probe_{probe_name}_top1": after, f"probe_{probe_name}_top1_random_init": before,
                   "final_loss": loss, "pretrain_seconds": seconds, "pretrain_cpu_seconds": cpu}
        for k, v in metrics.items():
            client.log_metric(run_id, k, v)
        client.set_tag(run_id, "cast.expert_sha256", digest)
        client.log_artifact(run_id, str(path), artifact_path="expert")
        manifest["lineage"] |= {f"{side}_sha256": digest, f"{side}_run_id": run_id}
        manifest["probes"][f"{side}_{probe_name}_top1"] = after
        manifest["probes"][f"{side}_{probe_name}_top1_random_init"] = before
        manifest["seconds"][side], manifest["cpu_seconds"][side] = round(seconds, 1), round(cpu, 1)
        log(f"{side} expert: {seconds:.0f}s ({cpu:.0f} CPU s), loss {loss:.4f}; linear probe of {probe_name} "
            f"{after:.3f} (random init {before:.3f}); run {run_id}")
        ok = True
    finally:
        tracking.end_run(run_id, ok)


def config_of(manifest: dict[str, Any]) -> CASTConfig:
    return CASTConfig.from_dict(manifest["config"])


__all__ = ["EXPERIMENT", "FILES", "MANIFEST", "read_manifest", "make_experts", "config_of", "preset_of"]
