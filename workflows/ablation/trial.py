"""One trial of the ablation: one variant, one seed, one task.

A Ray Tune trial (:func:`run_trial`, a function trainable) drives a Ray Train run (``TorchTrainer`` with
one worker, :func:`train_worker`), as Ray's guide to Tune over Train v2 does; ``TuneReportCallback``
carries the worker's final report to Tune. The trial opens the variant's MLflow run nested under the
ablation's parent run; the worker logs into it by id (learning curves, test scores, the test
predictions the ensemble is computed from, and for CAST the attention maps) and the trial closes it
FINISHED or FAILED.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cast_model import CAST, CASTConfig, freeze_experts, load_experts, param_groups

from ..training.recipe import total_loss
from .task import HEADS, TaskInfo, scores

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the run under its parent
EXPERT_SEED = 0  # random experts (experts="none") are the same for every variant and seed
EXPERTS_KEY = "experts"  # beside the tasks' names in the object references handed to every trial
PREDICTIONS = "predictions/test.npz"  # artifact: noun (n, A) and verb (n, M) float32 probabilities, labels (n,) int64


# -- the model -------------------------------------------------------------------------------------------
def variant_config(base: CASTConfig, overrides: dict[str, Any], info: TaskInfo) -> CASTConfig:
    """The variant at ``base``'s geometry with CAST's EK100 heads sized for the task's nouns and verbs."""
    return CASTConfig.from_dict({**base.to_dict(), **overrides, "head": "verb_noun", **info.head_sizes})


def build_model(cfg: CASTConfig, experts: dict[str, Any] | None, base: CASTConfig, seed: int) -> CAST:
    """The variant with its experts frozen: from the release-format weights in ``experts`` (``spatial``:
    an OpenAI-CLIP state dict, ``temporal``: a VideoMAE one; files or dicts), or, with None, from random weights drawn once from :data:`EXPERT_SEED` for the full
    CAST of ``base`` so that every variant and seed shares them. Trainable parts are drawn from ``seed``."""
    torch.manual_seed(seed)
    model = CAST(cfg)
    if experts is not None:
        load_experts(model, clip=experts["spatial"] if cfg.has_spatial else None,
                     videomae=experts["temporal"] if cfg.has_temporal else None)
    else:
        torch.manual_seed(EXPERT_SEED)
        full = CAST(base.replace(head=cfg.head, num_nouns=cfg.num_nouns, num_verbs=cfg.num_verbs)).state_dict()
        own = model.state_dict()
        frozen = {k: full[k] for k in own if not CAST.is_trainable(k)}
        model.load_state_dict(frozen, strict=False)
    return freeze_experts(model)


# -- the recipe ------------------------------------------------------------------------------------------
def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warmup to 1, then cosine to 0, per optimizer step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


@torch.no_grad()
def predict(model: CAST, video: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """(n, 3, F, S, S) clips -> each head's (n, K) softmax probabilities (float32)."""
    model.eval()
    # np.array copies: arrays from Ray's object store are read-only, which torch warns about
    out = [model(torch.from_numpy(np.array(video[i:i + batch], np.float32))) for i in range(0, len(video), batch)]
    return {h: torch.cat([o[h] for o in out]).softmax(-1).numpy() for h in HEADS}


def fit(model: CAST, train, val, info: TaskInfo, recipe: dict[str, Any], seed: int,
        on_eval: Callable[[int, dict[str, float]], None]) -> None:
    """The one recipe: AdamW (no decay on biases, norms, positions) with warmup and cosine decay, fixed
    steps over shuffled batches of the in-memory clips, the noun and verb cross-entropies summed (as the
    paper trains on EK100); every ``eval_every`` steps the mean training loss and the validation scores
    (action top-1, noun and verb accuracy) go to ``on_eval(step, metrics)``."""
    steps, bs = recipe["steps"], recipe["batch_size"]
    groups = param_groups(model, weight_decay=recipe["weight_decay"], layer_decay=1.0)
    for g in groups:
        g.pop("param_names")
    opt = torch.optim.AdamW(groups, lr=recipe["lr"])
    criterion = torch.nn.CrossEntropyLoss()
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, int(recipe["warmup_frac"] * steps)))
    rng = np.random.default_rng(seed)
    order, pos, losses = rng.permutation(len(train)), 0, []
    model.train()
    for step in range(1, steps + 1):
        if pos + bs > len(order):
            order, pos = rng.permutation(len(train)), 0
        idx = np.sort(order[pos:pos + bs])
        pos += bs
        x = torch.from_numpy(train.video[idx]).float()  # (B, 3, F, S, S)
        targets = {h: torch.from_numpy(y) for h, y in info.targets(train.label[idx]).items()}
        loss = total_loss(criterion, model(x), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % recipe["eval_every"] == 0 or step == steps:
            val_scores = scores(predict(model, val.video), val.label, info)
            on_eval(step, {"train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                           **{f"val_{k}": v for k, v in val_scores.items() if k != "am_balance"}})
            losses = []
            model.train()


# -- the Ray Train worker ------------------------------------------------------------------------------------
def train_worker(config: dict[str, Any]) -> None:
    """Rank 0 of a one-worker Ray Train run: train, test, log into the trial's MLflow run, report."""
    import ray
    import ray.train
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    spec = config["spec"]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(max(1, int(spec["cpus"])))
    data = ray.get(config["data"][0])
    experts = ray.get(config["experts"][0])
    info = config["info"]
    client, run_id = MlflowClient(config["tracking_uri"]), config["run_id"]
    base = CASTConfig.from_dict(spec["model"])
    cfg = variant_config(base, spec["overrides"], info)
    model = build_model(cfg, experts, base, spec["seed"])

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        client.log_batch(run_id, metrics=[Metric(k, v, 0, step) for k, v in metrics.items()])

    fit(model, data.train, data.validation, info, spec["recipe"], spec["seed"], on_eval)
    probs = predict(model, data.test.video)
    test = {f"test_{k}": v for k, v in scores(probs, data.test.label, info).items()}
    # This worker's cost: model build, training, validation and test (not Ray's start-up of the worker).
    test |= {"trial_wall_s": time.perf_counter() - wall0, "trial_cpu_s": time.process_time() - cpu0}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, spec["recipe"]["steps"]) for k, v in test.items()])
    log_predictions(client, run_id, probs, data.test.label)
    if spec["attention"]:
        from .attention_png import log_attention_maps

        log_attention_maps(client, run_id, model, data, spec["recipe"]["attention_videos"], probs)
    ray.train.report(test)


def log_predictions(client, run_id: str, probs: dict[str, np.ndarray], labels: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PREDICTIONS).name
        np.savez(path, **{h: probs[h].astype(np.float32) for h in HEADS}, labels=labels.astype(np.int64))
        client.log_artifact(run_id, str(path), str(Path(PREDICTIONS).parent))


def read_predictions(client, run_id: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A run's saved test predictions: ({head: probs (n, K)}, labels (n,)), read without pickles."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, PREDICTIONS, tmp)
        with np.load(path, allow_pickle=False) as z:
            return {h: z[h] for h in HEADS}, z["labels"]


# -- the Tune trial ------------------------------------------------------------------------------------------
def run_trial(config: dict[str, Any], data: dict[str, list], info: dict[str, Any]) -> None:
    """Tune's function trainable: the child MLflow run around one Ray Train run of one variant."""
    import ray.train
    from ray.train import FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..tracking import store as tracking

    spec = config["trial"]
    os.environ["MLFLOW_TRACKING_URI"] = spec["tracking_uri"]  # the driver's, absolute
    client = tracking.client()
    run_id = client.create_run(spec["experiment_id"], run_name=spec["run_name"], tags=spec["tags"]).info.run_id
    client.log_batch(run_id, params=[tracking.param(k, str(v)) for k, v in spec["params"].items()])
    ok = False
    try:
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"spec": spec, "data": data[spec["task"]], "experts": data[EXPERTS_KEY],
                               "info": info[spec["task"]],
                               "run_id": run_id, "tracking_uri": spec["tracking_uri"]},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": spec["cpus"]}),
            run_config=ray.train.RunConfig(name=spec["train_run_name"], storage_path=spec["storage_path"],
                                           failure_config=FailureConfig(max_failures=0),
                                           callbacks=[TuneReportCallback()]))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        ok = True
    finally:
        tracking.end_run(run_id, ok)
