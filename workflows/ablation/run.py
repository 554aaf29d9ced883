"""The whole ablation under one MLflow parent run: experts, data, a Ray Tune grid of Ray Train trials
(variant x seed x task), the ensembles from saved predictions, the table, chart and gate."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from cast_model import CASTConfig

from ..tracking import store as tracking
from . import report
from .config import AblationConfig
from .task import HEADS, TaskInfo, scores, task_info
from .trial import EXPERTS_KEY, PARENT_TAG, log_predictions, read_predictions, run_trial
from .variants import Variant, select

TRIAL_DRIVER_MEMORY = 256 * 2**20  # bytes: a trial's process only drives Ray Train and logs
KIND_TAG = "cast.ablation"  # "parent" or the variant's name
TASK_TAG, VARIANT_TAG, SEED_TAG = "cast.ablation.task", "cast.ablation.variant", "cast.ablation.seed"


@dataclass(frozen=True)
class Experts:
    config: CASTConfig  # the geometry every variant is built at
    files: dict[str, str] | None  # {"spatial", "temporal"} release-format files, or None: random frozen
    lineage: dict[str, str]  # digests and pretraining runs, a tag on every run that uses them


@dataclass(frozen=True)
class AblationResult:
    parent_run_id: str
    experts: Experts
    table: pd.DataFrame
    markdown: str
    gates: list[report.Gate]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def resolve_experts(cfg: AblationConfig, log: Callable[[str], None]) -> Experts:
    if cfg.experts == "none":
        log("[experts] none: randomly initialised frozen experts (a smoke run of the machinery, not the paper's)")
        return Experts(CASTConfig.preset(cfg.preset), None, {"experts": "random-init"})
    from ..experts import ensure_experts

    files = ensure_experts(Path(cfg.experts_dir) if cfg.experts_dir else None, preset=cfg.preset, log=log)
    return Experts(files.config, {"spatial": str(files.spatial), "temporal": str(files.temporal)},
                   dict(files.lineage))


def expert_weights(experts: Experts) -> dict[str, dict] | None:
    """The release-format state dicts of the expert files ({"spatial", "temporal"}), or None (random)."""
    from safetensors.torch import load_file

    return None if experts.files is None else {k: load_file(v) for k, v in experts.files.items()}


def _lineage_tags(experts: Experts) -> dict[str, str]:
    return {f"cast.experts.{k}": str(v) for k, v in experts.lineage.items()}


def trial_specs(cfg: AblationConfig, experts: Experts, variants: tuple[Variant, ...], parent: str,
                experiment_id: str) -> list[dict[str, Any]]:
    """One spec per trained variant x seed x task, CAST first (the longest trials start early)."""
    specs = []
    for task in cfg.tasks:
        for v in sorted((v for v in variants if v.trained), key=lambda v: v.name != "cast"):
            for seed in cfg.seeds:
                name = f"{task}-{v.name}-seed{seed}"
                specs.append({
                    "task": task, "variant": v.name, "seed": seed, "overrides": v.overrides,
                    "model": experts.config.to_dict(), "recipe": cfg.recipe(),
                    "cpus": cfg.cpus_per_trial, "attention": v.name == "cast", "run_name": name,
                    "train_run_name": f"{parent[:12]}-{name}", "storage_path": cfg.storage_path,
                    "experiment_id": experiment_id, "tracking_uri": tracking.tracking_uri(),
                    "tags": {PARENT_TAG: parent, KIND_TAG: v.name, TASK_TAG: task, VARIANT_TAG: v.name,
                             SEED_TAG: str(seed), **_lineage_tags(experts)},
                    "params": {"variant": v.name, "task": task, "seed": seed, "overrides": v.overrides,
                               **cfg.recipe()},
                })
    return specs


def run_grid(specs: list[dict[str, Any]], data_refs: dict[str, list], infos: dict[str, TaskInfo],
             cfg: AblationConfig, parent: str) -> None:
    """Every spec as a Ray Tune trial (a Ray Train run each), ``concurrent_trials`` at a time. The trial
    (Train's driver) holds no CPU, only the memory it uses: its one Train worker holds the CPUs. (Tune
    refuses a request of nothing, and a CPU held by the trial would halve the trials run at once.)"""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data_refs, info=infos),
                                    {"memory": TRIAL_DRIVER_MEMORY})
    tuner = tune.Tuner(trainable, param_space={"trial": tune.grid_search(specs)},
                       tune_config=tune.TuneConfig(max_concurrent_trials=cfg.concurrent_trials),
                       run_config=tune.RunConfig(name=f"ablation-{parent[:12]}", storage_path=cfg.storage_path,
                                                 verbose=0))
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} of {len(specs)} trials failed; first: {results.errors[0]}")


def child_rows(parent: str, experiment_id: str) -> list[dict[str, Any]]:
    """Each FINISHED child run of ``parent``: task, variant, seed, run id and its test_* metrics."""
    client = tracking.client()
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}' "
                              f"and attributes.status = 'FINISHED'", max_results=5000)
    return [{"task": r.data.tags[TASK_TAG], "variant": r.data.tags[VARIANT_TAG], "seed": int(r.data.tags[SEED_TAG]),
             "run_id": r.info.run_id, **{k: v for k, v in r.data.metrics.items() if k.startswith("test_")}}
            for r in runs]


def log_ensembles(rows: list[dict[str, Any]], variant: Variant, infos: dict[str, TaskInfo], parent: str,
                  experiment: str, lineage: dict[str, str]) -> list[dict[str, Any]]:
    """Per task and seed, a child run whose predictions are the mean of its sources' saved softmax
    outputs, head by head."""
    from mlflow.entities import Metric

    client = tracking.client()
    out = []
    by_key = {(r["task"], r["variant"], r["seed"]): r for r in rows}
    for task, seed in sorted({(r["task"], r["seed"]) for r in rows}):
        sources = [by_key[(task, s, seed)]["run_id"] for s in variant.ensemble_of]
        preds = [read_predictions(client, rid) for rid in sources]
        probs = {h: sum(p[h] for p, _ in preds) / len(preds) for h in HEADS}  # per head: (n, K)
        labels = preds[0][1]
        test = {f"test_{k}": v for k, v in scores(probs, labels, infos[task]).items()}
        tags = {PARENT_TAG: parent, KIND_TAG: variant.name, TASK_TAG: task, VARIANT_TAG: variant.name,
                SEED_TAG: str(seed), "cast.ablation.sources": ",".join(sources), **lineage}
        with tracking.one_shot_run(experiment, f"{task}-{variant.name}-seed{seed}", tags) as (_, run_id):
            client.log_batch(run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in test.items()],
                             params=[tracking.param("ensemble_of", ",".join(variant.ensemble_of))])
            log_predictions(client, run_id, probs, labels)
        out.append({"task": task, "variant": variant.name, "seed": seed, "run_id": run_id, **test})
    return out


def run_ablation(cfg: AblationConfig, log: Callable[[str], None] = print) -> AblationResult:
    """The ablation on the connected Ray cluster; ``cfg`` must have passed :meth:`AblationConfig.validate`."""
    import ray

    from .data import load_task

    from ..cluster.shared_storage import alive_nodes, cluster_path_problems
    from .config import AblationConfigError

    started = time.perf_counter()
    problems = cluster_path_problems({"--storage-path": cfg.storage_path}, alive_nodes(),
                                     tracking_uri=tracking.tracking_uri())
    if problems:
        raise AblationConfigError("; ".join(problems))
    variants = select(cfg.variants)
    experts = resolve_experts(cfg, log)
    # The expert weights travel through the object store, as the clips do: no worker reads the driver's disk.
    refs: dict[str, list] = {EXPERTS_KEY: [ray.put(expert_weights(experts))]}
    infos = {}
    for task in cfg.tasks:
        infos[task] = task_info(task)
        data = load_task(task, cfg.data_dir, infos[task].num_classes, cfg.videos_per_class, cfg.heldout_per_class,
                         experts.config.num_frames, experts.config.img_size, cfg.data_seed, log)
        log(f"[data] {task}: {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test clips "
            f"in memory; chance {infos[task].chance:.3f}")
        refs[task] = [ray.put(data)]  # in a list: Ray passes the reference on instead of resolving it
    client = tracking.client()
    experiment_id = tracking.ensure_experiment(cfg.experiment)
    run_name = cfg.run_name or f"ablation-{time.strftime('%Y%m%d-%H%M%S')}"
    lineage = _lineage_tags(experts)
    parent = client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: "parent", **lineage}).info.run_id
    ok = False
    try:
        client.log_batch(parent, params=[tracking.param(k, v) for k, v in cfg.to_params().items()]
                         + [tracking.param(f"model.{k}", str(v)) for k, v in experts.config.to_dict().items()])
        specs = trial_specs(cfg, experts, variants, parent, experiment_id)
        log(f"[ablation] parent MLflow run {parent} ({run_name}): {len(specs)} trials "
            f"({len(cfg.tasks)} tasks x {sum(v.trained for v in variants)} trained variants x {len(cfg.seeds)} seeds), "
            f"{cfg.concurrent_trials} at a time")
        run_grid(specs, refs, infos, cfg, parent)
        rows = child_rows(parent, experiment_id)
        for v in variants:
            if not v.trained:
                rows += log_ensembles(rows, v, infos, parent, cfg.experiment, lineage)
        result = finish(client, parent, rows, variants, infos, experts, time.perf_counter() - started)
        ok = True
        return result
    finally:
        tracking.end_run(parent, ok)


def finish(client, parent: str, rows: list[dict[str, Any]], variants: tuple[Variant, ...],
           infos: dict[str, TaskInfo], experts: Experts, seconds: float) -> AblationResult:
    """The parent's table (CSV, Markdown), chart, oracle ceilings, summary metrics and gate."""
    from mlflow.entities import Metric

    table = report.summarize(rows, [v.name for v in variants], {v.name: v.label for v in variants})
    oracles = [o for info in infos.values() for o in info.oracle_rows()]
    markdown = report.to_markdown(table, oracles)
    gates = report.gates(table, {t: info.oracles[report.UNBOUND_EVIDENCE].ceiling for t, info in infos.items()})
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "ablation.csv", index=False)
        (Path(tmp) / "ablation.md").write_text(markdown)
        pd.DataFrame(oracles).to_csv(Path(tmp) / "oracles.csv", index=False)
        pd.DataFrame(rows).to_csv(Path(tmp) / "runs.csv", index=False)
        report.plot(table, Path(tmp) / "ablation.png")
        client.log_artifacts(parent, tmp, "comparison")
    now = int(time.time() * 1000)
    metrics = [Metric(f"{r['task']}.{r['variant']}.{m}_{stat}", float(r[f"{m}_{stat}"]), now, 0)
               for _, r in table.iterrows() for m in report.MEASURES for stat in ("mean", "std")]
    metrics.append(Metric("seconds", seconds, now, 0))
    client.log_batch(parent, metrics=metrics)
    client.set_tag(parent, "cast.ablation.gate", "pass" if all(g.passed for g in gates) else "fail")
    return AblationResult(parent, experts, table, markdown, gates, seconds)
