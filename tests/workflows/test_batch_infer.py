"""Batch inference end to end: a tiny CAST registered in MLflow (SQLite store), served by the Ray Data job
over raw synthetic videos (broken ones among them), a native layout and shards; reruns; evaluation run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from cast_model import load_checkpoint
from pipelines.datasets import read_dataset
from pipelines.decode import decode_video
from pipelines.loader import LoaderConfig, eval_loader
from workflows.tracking import lineage, registry, store as tracking
from workflows.batch_infer import main as batch_infer_main
from workflows.evaluation.report import MODEL_NAME_TAG, MODEL_VERSION_TAG, evaluate_job, evaluate_table, has_evaluation
from workflows.inference.config import InferConfig, InferConfigError
from workflows.inference.inputs import list_inputs
from workflows.inference.job import plan_job, run_job
from workflows.inference.replica import Predictor, normalise, video_probs
from workflows.inference.store import OutputStore
from workflows.inference.views import ViewSpec, decode_views, sample_views

from tests.support.models import tiny_checkpoint
from tests.support.pipelines_data import make_dataset, shards_without_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

NAME = "cast-ssv2"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("native")
    return {"ssv2": make_dataset("ssv2", root, bad=3), "ek100": make_dataset("ek100", root, bad=0,
                                                                            videos_per_class=1)}


@pytest.fixture(scope="module")
def registered(mlflow_store, data, tmp_path_factory) -> dict:
    """The tiny model logged and registered as cast-ssv2 with the training workflow's registry function."""
    labels = read_dataset("ssv2", data["ssv2"]["videos"], data["ssv2"]["annotations"], "train").label_map
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", labels, num_classes=len(labels["label"]))
    client = tracking.client()
    run = client.create_run(tracking.ensure_experiment(NAME), run_name="tiny")
    reg = registry.register(run.info.run_id, ckpt, NAME, val_top1=0.5)
    client.set_terminated(run.info.run_id)
    return {"checkpoint": ckpt, "labels": labels, "version": reg.version}


def cfg(**kw) -> InferConfig:
    # fp32: the job's numbers are compared with the checkpoint run by hand in fp32 (``auto`` would be
    # bf16 on a CPU where bf16 is fast)
    return InferConfig(**({"batch_size": 4, "flush_rows": 10, "progress_every": 1.0, "precision": "fp32"} | kw))


def predictions(out: Path):
    return pq.read_table(out / "predictions").to_pandas()


def test_raw_videos_one_row_per_good_video_and_every_bad_one_rejected(data, registered, tmp_path):
    d = data["ssv2"]
    # An inbox with every broken file and a few good ones (a Ray start-up costs more than a video).
    videos = tmp_path / "inbox"
    videos.mkdir()
    bad_files = {f"{sid}.webm" for sid, r in d["broken"].items() if r != "missing"}
    good_files = sorted(p.name for p in Path(d["videos"]).glob("*.webm") if p.name not in bad_files)[:7]
    for name in sorted(bad_files) + good_files:
        shutil.copy(Path(d["videos"]) / name, videos / name)
    out = tmp_path / "out"
    plan = plan_job(cfg(model=f"models:/{NAME}@champion", input=str(videos), out=str(out)))
    assert (plan.model.name, plan.model.version) == (NAME, registered["version"])
    assert (plan.views.clips, plan.views.crops) == (2, 3)  # recorded in the checkpoint
    result = run_job(plan)

    files = {str(p.resolve()): p for p in videos.glob("*.webm")}
    broken = {str((videos / f"{sid}.webm").resolve()): r for sid, r in d["broken"].items()
              if r != "missing"}  # a missing file is not in a folder listing
    assert broken and set(broken) < set(files)
    pred = predictions(out)
    assert sorted(pred["source_id"]) == sorted(set(files) - set(broken))  # one row per good video
    assert result.predicted == len(pred) and result.rejected == len(broken)
    rejects = pq.read_table(out / "rejects.parquet").to_pandas()
    assert dict(zip(rejects["source_id"], rejects["reason"])) == broken
    assert (pred["model_name"] == NAME).all() and (pred["model_version"] == registered["version"]).all()
    assert pred["label"].isna().all()  # raw files carry no labels

    names = registered["labels"]["label"]
    for _, row in pred.iterrows():
        assert len(row["top_ids"]) == 5 and list(row["top_probs"]) == sorted(row["top_probs"], reverse=True)
        assert list(row["top_names"]) == [names[str(i)] for i in row["top_ids"]]
    assert pred["top_probs"].map(lambda p: round(float(p[0]), 6)).nunique() > 1  # each video its own scores

    # The job's numbers equal the checkpoint run by hand on the same views of one video.
    row = pred.iloc[0]
    net, _ = load_checkpoint(registered["checkpoint"])
    frames = decode_video(row["source_id"], short_side=net.config.img_size, like_loader=True).frames
    views = sample_views(frames, plan.views)  # (6, T, S, S, 3)
    probs = video_probs(net, torch.from_numpy(views)[None])["label"][0]
    ref = probs.topk(5)
    assert list(row["top_ids"]) == ref.indices.tolist()
    np.testing.assert_allclose(row["top_probs"], ref.values.numpy(), rtol=1e-4, atol=1e-6)

    # A rerun finds nothing to do and changes nothing.
    before = {p.name: p.read_bytes() for p in (out / "predictions").iterdir()}
    rejects_before = (out / "rejects.parquet").read_bytes()
    again = plan_job(cfg(model=f"models:/{NAME}@champion", input=str(videos), out=str(out)))
    assert again.todo == [] and again.skipped == len(files)
    rerun = run_job(again)
    assert (rerun.predicted, rerun.rejected) == (0, 0)
    assert {p.name: p.read_bytes() for p in (out / "predictions").iterdir()} == before
    assert (out / "rejects.parquet").read_bytes() == rejects_before

    # --retry-rejects plans the rejected videos again (the store drops an id from rejects once it is
    # predicted: tests/workflows/test_evaluation.py); without it they stay skipped.
    retry = plan_job(cfg(model=f"models:/{NAME}/{registered['version']}", input=str(videos), out=str(out),
                         retry_rejects=True))
    assert sorted(r["source_id"] for r in retry.todo) == sorted(broken)


def test_native_layout_with_labels_rejects_missing_and_logs_an_evaluation_run(data, registered, tmp_path):
    d = data["ssv2"]
    out = tmp_path / "out"
    plan = plan_job(cfg(model=str(registered["checkpoint"]), input=d["videos"], out=str(out), dataset="ssv2",
                        annotations=d["annotations"], split="train", experiment="cast-eval-test"))
    assert plan.dataset == "ssv2" and plan.listing.labelled
    run_job(plan)
    pred = predictions(out)
    rejects = pq.read_table(out / "rejects.parquet").to_pandas()
    listed = {r.source_id: r.labels["label"] for r in
              read_dataset("ssv2", d["videos"], d["annotations"], "train").rows}
    assert dict(zip(rejects["source_id"], rejects["reason"])) == {s: r for s, r in d["broken"].items() if s in listed}
    assert sorted(pred["source_id"]) == sorted(set(listed) - set(d["broken"]))
    assert all(pred["label"] == pred["source_id"].map(listed))

    assert not has_evaluation(plan)
    summary = evaluate_job(plan, log=lambda _: None)
    assert has_evaluation(plan)  # a rerun that predicts nothing new does not log the same figures again
    # The figures are those of the predictions table on disk, and are written beside it.
    top1 = float(np.mean([ids[0] == y for ids, y in zip(pred["top_ids"], pred["label"])]))
    assert summary["top1"] == pytest.approx(top1) and summary["samples"] == len(pred)
    folder = Path(summary["folder"])
    assert folder.parent == out / "evaluation"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["summary"]["top1"] == pytest.approx(top1) and saved["dataset"] == "ssv2"
    assert {"per_class_label.csv", "confusion_label.csv", "confusion_label.png"} <= {p.name for p in folder.iterdir()}

    client = tracking.client()
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[MODEL_NAME_TAG] == plan.model.name and run.data.tags[MODEL_VERSION_TAG] == "local"
    assert run.data.tags["cast.kind"] == "evaluation" and run.data.metrics["top1"] == pytest.approx(top1)
    exp = client.get_experiment_by_name("cast-eval-test")
    found = client.search_runs([exp.experiment_id], f"tags.`{MODEL_NAME_TAG}` = '{plan.model.name}'")
    assert [r.info.run_id for r in found] == [summary["run_id"]]
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"], "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/confusion_label.png", "evaluation/per_class_label.csv"} <= artifacts
    # Lineage: the code that ran and what it evaluated (no manifest here: the evaluated rows themselves).
    assert run.data.tags["mlflow.source.name"] == "workflows/batch_infer.py"
    (evaluated,) = run.inputs.dataset_inputs
    assert [(t.key, t.value) for t in evaluated.tags] == [("mlflow.data.context", "evaluation")]
    assert Path(d["videos"]).name in evaluated.dataset.name and d["videos"] in evaluated.dataset.source


def test_shards_are_served_with_their_labels(data, registered, tmp_path):
    d = data["ssv2"]
    shards = tmp_path / "shards"
    shards_without_ray("ssv2", d["videos"], d["annotations"], "validation", shards, per_shard=3)
    out = tmp_path / "out"
    plan = plan_job(cfg(model=f"models:/{NAME}@champion", input=str(shards), out=str(out), test_clips=1))
    assert plan.listing.kind == "shards" and plan.views.clips == 1
    run_job(plan)
    pred = predictions(out)
    truth = {r.source_id: r.labels["label"] for r in
             read_dataset("ssv2", d["videos"], d["annotations"], "validation").rows if r.source_id not in d["broken"]}
    assert dict(zip(pred["source_id"], pred["label"])) == truth
    assert not (out / "rejects.parquet").exists()
    report = evaluate_table(pq.read_table(out / "predictions"), registered["labels"])
    assert report.samples == len(truth)
    # The evaluation run records the shards' manifest as its input, with the manifest's digest.
    summary = evaluate_job(plan, log=lambda _: None)
    (evaluated,) = tracking.client().get_run(summary["run_id"]).inputs.dataset_inputs
    assert evaluated.dataset.digest == lineage.manifest_dataset(str(shards), None).digest
    assert [t.value for t in evaluated.tags] == ["evaluation"] and "manifest.parquet" in evaluated.dataset.source

    # The views equal the DALI evaluation loader's on the same shard (up to resampling differences).
    views = ViewSpec(num_frames=8, img_size=64, clips=1, crops=3)
    loader = eval_loader(str(shards), "validation",
                         cfg=LoaderConfig(num_frames=8, img_size=64, batch_size=1, eval_clips=1, eval_crops=3))
    batch = next(iter(loader))
    rec = next(r for r in plan.listing.records if r["key"] == batch["key"][0])
    ours = normalise(torch.from_numpy(decode_views(rec, views)["views"])[None])  # (3, 3, T, S, S)
    err = [[(batch["video"][0][i] - ours[j]).abs().mean().item() for j in range(3)] for i in range(3)]
    for i in range(3):
        assert err[i][i] < 0.1, err
        assert err[i][i] == min(err[i]), err


def test_ek100_replica_gives_verb_noun_and_action(data, tmp_path):
    """The model replica on EK100 segments (no Ray Data): verb and noun top-k, and the action pairs
    ranked by p(verb) * p(noun)."""
    d = data["ek100"]
    listing = read_dataset("ek100", d["videos"], d["val_annotations"], "")
    labels = listing.label_map
    ckpt = tiny_checkpoint(tmp_path / "ek", labels, head="verb_noun", num_verbs=len(labels["verb"]),
                           num_nouns=len(labels["noun"]))
    plan_cfg = cfg(model=str(ckpt), input=d["videos"], out=str(tmp_path / "out"), dataset="ek100",
                   annotations=d["val_annotations"], test_clips=1, test_crops=1)
    recs = list_inputs(plan_cfg).records
    spec = ViewSpec(num_frames=8, img_size=64, clips=1, crops=1)
    rows = [decode_views(r, spec) for r in recs]
    assert all(r["reason"] == "" for r in rows)
    batch = {k: np.stack([r[k] for r in rows]) if k == "views" else np.array([r[k] for r in rows]) for k in rows[0]}
    meta, weights = (ckpt / "cast.json").read_bytes(), (ckpt / "model.safetensors").read_bytes()
    out = Predictor([ray.put((meta, weights))], top_k=2, device="cpu", precision="fp32")(batch)
    net, _ = load_checkpoint(ckpt)
    probs = video_probs(net, torch.from_numpy(batch["views"]))
    joint = probs["verb"][:, :, None] * probs["noun"][:, None, :]  # (B, V, N)
    for b in range(len(recs)):
        assert out["verb_top_ids"][b].tolist() == probs["verb"][b].topk(2).indices.tolist()
        assert out["noun_top_ids"][b].tolist() == probs["noun"][b].topk(2).indices.tolist()
        flat = joint[b].flatten().topk(2)
        pairs = [(int(i) // joint.shape[2], int(i) % joint.shape[2]) for i in flat.indices]
        assert list(zip(out["action_top_verb_ids"][b].tolist(), out["action_top_noun_ids"][b].tolist())) == pairs
        assert (out["action_top_verb_ids"][b][0], out["action_top_noun_ids"][b][0]) == \
            (out["verb_top_ids"][b][0], out["noun_top_ids"][b][0])
        np.testing.assert_allclose(out["action_top_probs"][b], flat.values.numpy(), rtol=1e-5)


def test_wrong_config_fails_before_any_work(data, registered, tmp_path):
    d = data["ssv2"]
    with pytest.raises(InferConfigError, match="--input"):
        InferConfig(model=str(registered["checkpoint"]), input=str(tmp_path / "nope"), out=str(tmp_path / "o"))
    with pytest.raises(InferConfigError, match="test_crops"):
        InferConfig(model=str(registered["checkpoint"]), input=d["videos"], out=str(tmp_path / "o"), test_crops=2)
    with pytest.raises(InferConfigError, match="needs --split"):
        InferConfig(model=str(registered["checkpoint"]), input=d["videos"], out=str(tmp_path / "o"),
                    dataset="ssv2", annotations=d["annotations"])
    # Labels that mean other classes than the model's: refused unless evaluation is off.
    other = tmp_path / "other_labels"
    shutil.copytree(d["annotations"], other)
    names = json.loads((other / "labels.json").read_text())
    (other / "labels.json").write_text(json.dumps({f"{k} twice": v for k, v in names.items()}))
    for split in ("train", "validation"):
        entries = json.loads((other / f"{split}.json").read_text())
        for e in entries:
            e["template"] = e["template"] + " twice"
        (other / f"{split}.json").write_text(json.dumps(entries))
    args = ["--model", str(registered["checkpoint"]), "--input", d["videos"], "--out", str(tmp_path / "o"),
            "--dataset", "ssv2", "--annotations", str(other), "--split", "validation"]
    assert batch_infer_main(args) == 2  # before Ray: the module's Ray is still the one running
    assert not (tmp_path / "o" / "rejects.parquet").exists()
    assert plan_job(cfg(model=str(registered["checkpoint"]), input=d["videos"], out=str(tmp_path / "o"),
                        dataset="ssv2", annotations=str(other), split="validation", eval=False)).todo
    with pytest.raises(Exception, match="nope"):
        plan_job(cfg(model="models:/nope@champion", input=d["videos"], out=str(tmp_path / "o")))
    assert OutputStore(str(tmp_path / "o")).read_predictions() is None


@pytest.mark.gpu
def test_gpu_replica_equals_the_cpu_one(data, registered):
    """The same replica code with the device switched: CUDA (fp32) gives the CPU's top-k."""
    d = data["ssv2"]
    ckpt = registered["checkpoint"]
    spec = ViewSpec(num_frames=8, img_size=64, clips=2, crops=3)
    recs = [r for r in list_inputs(cfg(model=str(ckpt), input=d["videos"], out="/tmp/unused")).records][:6]
    rows = [r for r in (decode_views(r, spec) for r in recs) if r["reason"] == ""]
    batch = {k: np.stack([r[k] for r in rows]) if k == "views" else np.array([r[k] for r in rows]) for k in rows[0]}
    ref = ray.put(((ckpt / "cast.json").read_bytes(), (ckpt / "model.safetensors").read_bytes()))
    cpu = Predictor([ref], top_k=5, device="cpu", precision="fp32")(batch)
    gpu = Predictor([ref], top_k=5, device="gpu", precision="fp32")(batch)
    np.testing.assert_array_equal(gpu["top_ids"][:, 0], cpu["top_ids"][:, 0])
    np.testing.assert_allclose(gpu["top_probs"], cpu["top_probs"], atol=1e-4)


def test_file_lists_and_shard_splits_are_listed_or_refused(data, registered, tmp_path):
    d = data["ssv2"]
    videos = sorted(Path(d["videos"]).glob("*.webm"))[:3]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# new videos\n{videos[0]}\n\n{videos[1]}\n{videos[0]}\n")
    (tmp_path / "rel").mkdir()
    shutil.copy(videos[2], tmp_path / "rel" / videos[2].name)
    lst.write_text(lst.read_text() + f"rel/{videos[2].name}\n")
    listing = list_inputs(cfg(model=str(registered["checkpoint"]), input=str(lst), out=str(tmp_path / "o")))
    assert [r["source_id"] for r in listing.records] == [str(videos[0]), str(videos[1]),
                                                         str((tmp_path / "rel" / videos[2].name).resolve())]
    assert [r["source_id"] for r in listing.duplicates] == [str(videos[0])]  # listed twice: rejected once
    assert not listing.labelled
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    with pytest.raises(InferConfigError, match="names no videos"):
        list_inputs(cfg(model=str(registered["checkpoint"]), input=str(tmp_path / "empty.txt"), out=str(tmp_path / "o")))
    shards = tmp_path / "shards"
    shards_without_ray("ssv2", d["videos"], d["annotations"], "validation", shards, per_shard=8)
    with pytest.raises(InferConfigError, match="no committed shards of split 'test'"):
        list_inputs(cfg(model=str(registered["checkpoint"]), input=str(shards), out=str(tmp_path / "o"), split="test"))
