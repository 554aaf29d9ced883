"""Evaluation of batch predictions against known labels, written beside the predictions and logged as
an MLflow evaluation run; and the paper's balanced measure over datasets.

Figures per head (``label``; EK100 ``verb`` and ``noun``): top-1, top-5, mean class accuracy, macro
precision / recall / F1, and a per-class table (support, precision, recall, F1) with its confusion
matrix. EK100 adds the action: top-1 / top-5 of the (verb, noun) pair among the predicted pairs (see
``workflows.inference.replica``); ``top1`` of an EK100 report is its action top-1, as in training.

Files, in ``OUT/evaluation/<model name>-v<version>/``: ``metrics.json`` (summary + what was evaluated),
``per_class_<head>.csv``, ``confusion_<head>.csv`` and ``confusion_<head>.png``. The MLflow run (in
``--experiment``, default ``cast-evaluation``) carries the same files and is tagged ``cast.model_name``,
``cast.model_version``, ``cast.model_uri``, ``cast.dataset`` and ``cast.kind=evaluation``.

The balanced measure: :func:`balanced_measure` takes the ``metrics.json`` of several datasets evaluated
for one model family and returns the harmonic mean of their top-1 (EK100 contributes its verb and noun
top-1, ``EK100_FIGURES``); ``workflows/balanced_measure.py`` is its command line.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cast_model.vocab import head_prefix, is_action
from pipelines.shards import join, write_atomic

from . import metrics as M
from ..cli.flags import flag
from ..inference.store import OutputStore

KIND_TAG = "cast.kind"
EVAL_RUN_TAG = "cast.evaluation_run"  # model version tag: the latest evaluation run of that version
MODEL_NAME_TAG = "cast.model_name"
MODEL_VERSION_TAG = "cast.model_version"
MODEL_URI_TAG = "cast.model_uri"
EVAL_DIR = "evaluation"
# Which top-1 figures of a dataset's metrics.json enter the balanced measure. EK100 counts its verb and
# noun recognition separately (a model must be good at both the motion and the object).
EK100_FIGURES = ("verb_top1", "noun_top1")


@dataclass
class HeadReport:
    head: str
    n: int
    figures: dict[str, float]
    cm: np.ndarray  # (C, C) rows true, columns predicted
    class_names: list[str]


@dataclass
class EvalReport:
    heads: dict[str, HeadReport]
    summary: dict[str, float]
    samples: int
    info: dict[str, Any] = field(default_factory=dict)


def _stack_ids(column: pa.ChunkedArray, k: int) -> np.ndarray:
    """list<int> column -> (N, k) int64, padded with -1."""
    out = np.full((len(column), k), -1, np.int64)
    for i, ids in enumerate(column.to_pylist()):
        ids = ids[:k]
        out[i, : len(ids)] = ids
    return out


def evaluate_table(table: pa.Table, labels: Mapping[str, Mapping[str, str]]) -> EvalReport:
    """Figures over the rows of a predictions table whose every head has a known label."""
    heads = tuple(labels)
    mask = None
    for h in heads:
        valid = pc.is_valid(table[f"{head_prefix(h)}label"])
        mask = valid if mask is None else pc.and_(mask, valid)
    table = table.filter(mask)
    if table.num_rows == 0:
        raise ValueError("no predictions with known labels to evaluate")
    reports, summary = {}, {}
    for h in heads:
        p = head_prefix(h)
        truth = np.asarray(table[f"{p}label"].to_numpy(), np.int64)
        stored_k = max(len(x) for x in table[f"{p}top_ids"].to_pylist())
        ids = _stack_ids(table[f"{p}top_ids"], stored_k)
        names = [labels[h][str(i)] for i in range(len(labels[h]))]
        cm = M.confusion_matrix(ids[:, 0], truth, len(names))
        figures = {"top1": float(M.topk_hits(ids, truth, 1).mean())}
        k5 = min(5, len(names))  # with fewer than 5 classes, top-5 is every class
        if stored_k >= k5:
            figures["top5"] = float(M.topk_hits(ids, truth, k5).mean())
        figures["mean_class_accuracy"] = M.mean_class_accuracy(cm)
        figures.update(M.macro_scores(cm))
        reports[h] = HeadReport(h, table.num_rows, figures, cm, names)
        summary.update({f"{p}{k}": v for k, v in figures.items()})
    if is_action(heads):
        k = max(len(x) for x in table["action_top_verb_ids"].to_pylist())
        verbs, nouns = _stack_ids(table["action_top_verb_ids"], k), _stack_ids(table["action_top_noun_ids"], k)
        tv = np.asarray(table["verb_label"].to_numpy(), np.int64)[:, None]
        tn = np.asarray(table["noun_label"].to_numpy(), np.int64)[:, None]
        pair = (verbs == tv) & (nouns == tn)  # (N, k): the true pair at rank j
        summary["action_top1"] = float(pair[:, 0].mean())
        k5 = min(5, len(labels["verb"]) * len(labels["noun"]))
        if k >= k5:
            summary["action_top5"] = float(pair[:, :k5].any(axis=1).mean())
        summary["top1"] = summary["action_top1"]
    return EvalReport(reports, summary, table.num_rows)


def report_files(report: EvalReport, title: str) -> dict[str, bytes]:
    """{file name: bytes}: metrics.json, per-class and confusion tables (CSV) and plots (PNG)."""
    files = {"metrics.json": json.dumps({"summary": report.summary, "samples": report.samples, **report.info,
                                         "per_head": {h: r.figures for h, r in report.heads.items()}},
                                        indent=1, default=str).encode()}
    with tempfile.TemporaryDirectory() as tmp:
        for h, r in report.heads.items():
            buf = io.StringIO()
            M.per_class_table(r.cm, r.class_names).to_csv(buf, index=False)
            files[f"per_class_{h}.csv"] = buf.getvalue().encode()
            header = "true\\predicted," + ",".join(str(i) for i in range(len(r.cm)))
            rows = [f"{i}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(r.cm)]
            files[f"confusion_{h}.csv"] = ("\n".join([header, *rows]) + "\n").encode()
            png = Path(tmp) / f"confusion_{h}.png"
            M.plot_confusion_matrix(png, r.cm, r.class_names,
                                    title=f"{title} {h}: {r.n} videos, top-1 {r.figures['top1']:.3f}")
            files[png.name] = png.read_bytes()
    return files


def log_evaluation_run(report: EvalReport, files: Mapping[str, bytes], experiment: str,
                       tags: Mapping[str, str], run_name: str, model_id: str | None = None) -> str:
    """An MLflow run holding the figures as metrics and the files as artifacts; returns its id. With
    ``model_id`` (a registered version's logged model) the metrics are attached to that model too."""
    from mlflow.entities import Metric

    from ..tracking import store as tracking

    with tracking.one_shot_run(experiment, run_name, {KIND_TAG: "evaluation", **tags}) as (client, run_id):
        now = int(time.time() * 1000)
        finite = {k: v for k, v in report.summary.items() if np.isfinite(v)}
        finite["samples"] = float(report.samples)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0, model_id=model_id) for k, v in finite.items()])
        params = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in report.info.items()}
        client.log_batch(run_id, params=[tracking.param(k, v) for k, v in params.items()])
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            client.log_artifacts(run_id, tmp, "evaluation")
    return run_id


def evaluated_dataset(plan, table: pa.Table):
    """What an evaluation run evaluated, as an MLflow dataset: the input's manifest for a shard folder
    (its split, when the job read one), else the evaluated rows themselves (ids, paths, labels)."""
    import mlflow.data

    from ..tracking import lineage

    if lineage.has_manifest(plan.cfg.input):
        return lineage.manifest_dataset(plan.cfg.input, plan.cfg.split)
    keep = [c for c in table.column_names if c in ("source_id", "path") or c.endswith("label")]
    return mlflow.data.from_pandas(table.select(keep).to_pandas(), source=plan.cfg.input,
                                   name=f"{Path(plan.cfg.input.rstrip('/')).name}/evaluated")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def evaluation_folder(plan) -> str:
    return join(OutputStore(plan.cfg.out).base, EVAL_DIR, _slug(f"{plan.model.name}-v{plan.model.version}"))


def has_evaluation(plan) -> bool:
    """This model's evaluation files already exist in OUT (a rerun that predicted nothing new keeps them)."""
    store = OutputStore(plan.cfg.out)
    return store.fs.get_file_info(join(evaluation_folder(plan), "metrics.json")).type.name == "File"


def evaluate_job(plan, log=print) -> dict[str, Any]:
    """After a batch-inference job: evaluate every labelled prediction this model made in OUT, write
    the files to ``OUT/evaluation/<model>-v<version>/`` and log the MLflow evaluation run."""
    store = OutputStore(plan.cfg.out)
    table = store.read_predictions()
    model = plan.model
    if table is None:
        return {}
    mine = pc.and_(pc.equal(table["model_name"], model.name), pc.equal(table["model_version"], model.version))
    table = table.filter(mine)
    report = evaluate_table(table, model.labels)
    report.info = {"model_name": model.name, "model_version": model.version, "model_uri": model.uri,
                   "dataset": plan.dataset, "input": plan.cfg.input,
                   "views": {"clips": plan.views.clips, "crops": plan.views.crops, "sampling": plan.views.sampling},
                   "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    title = f"{plan.dataset or model.name}"
    files = report_files(report, title)
    folder = evaluation_folder(plan)
    store.fs.create_dir(folder, recursive=True)
    # metrics.json last, after the MLflow run is logged: it is has_evaluation's "done" marker, so an
    # evaluation whose logging failed (MLflow down) is evaluated and logged again by the next run.
    for name, data in files.items():
        if name != "metrics.json":
            write_atomic(store.fs, join(folder, name), data)
    from ..tracking import lineage  # MLflow only where a run is logged
    from ..tracking import store as tracking

    tags = {MODEL_NAME_TAG: model.name, MODEL_VERSION_TAG: model.version, MODEL_URI_TAG: model.uri,
            tracking.DATASET_TAG: plan.dataset or "", "cast.input": plan.cfg.input}
    run_id = log_evaluation_run(report, files, plan.cfg.experiment, tags,
                                run_name=f"eval-{_slug(model.name)}-v{model.version}-{plan.dataset or 'data'}",
                                model_id=model.model_id)
    lineage.record(run_id, "workflows/batch_infer.py", {"evaluation": evaluated_dataset(plan, table)}, log=log)
    if model.model_id is not None:  # a registry version: link it back to the run that evaluated it
        tracking.client().set_model_version_tag(model.name, model.version, EVAL_RUN_TAG, run_id)
    if "metrics.json" in files:
        write_atomic(store.fs, join(folder, "metrics.json"), files["metrics.json"])
    log(f"[evaluation] {report.samples} labelled videos: "
        + ", ".join(f"{k} {v:.4f}" for k, v in report.summary.items() if k.endswith(("top1", "top5")))
        + f"; files in {folder}; MLflow run {run_id}")
    return {"run_id": run_id, "folder": folder, "samples": report.samples, **report.summary}


@dataclass(frozen=True)
class BalancedConfig:
    """The balanced measure over ``metrics.json`` files (``cast-balanced-measure``)."""

    metrics: tuple[str, ...] = field(metadata=flag("metrics.json files, one per dataset", positional=True))
    ek100_figures: tuple[str, ...] = field(default=EK100_FIGURES, metadata=flag(
        "EK100 summary figures that enter the mean, comma separated", sep=","))
    out: str | None = field(default=None, metadata=flag("write the result as JSON here", none="stdout only"))
    log_mlflow: bool = field(default=False, metadata=flag("log it as a run in --experiment"))
    experiment: str = field(default="cast-evaluation", metadata=flag("MLflow experiment of --log-mlflow's run"))


def balanced_measure(reports: Sequence[Mapping[str, Any]], ek100_figures: Sequence[str] = EK100_FIGURES
                     ) -> dict[str, Any]:
    """The paper's balanced measure: the harmonic mean of top-1 over the datasets evaluated for one
    model family. ``reports`` are ``metrics.json`` contents; each names its ``dataset``. Returns the
    figures that entered it and the mean."""
    figures: dict[str, float] = {}
    for r in reports:
        dataset = r.get("dataset")
        if not dataset:
            raise ValueError(f"a metrics report without a dataset name (model {r.get('model_name')!r})")
        summary = r["summary"]
        keys = ek100_figures if dataset == "ek100" else ("top1",)
        for k in keys:
            if k not in summary:
                raise ValueError(f"{dataset}: metrics have no {k!r} (have {sorted(summary)})")
            name = dataset if k == "top1" else f"{dataset}_{k.removesuffix('_top1')}"
            if name in figures:
                raise ValueError(f"{name} is given twice")
            figures[name] = float(summary[k])
    return {"top1": figures, "harmonic_mean": M.harmonic_mean(list(figures.values())),
            "models": sorted({f"{r.get('model_name')}:{r.get('model_version')}" for r in reports})}
