"""The ablation: a 2-variant x 1-seed grid at the smallest sizes through Ray Tune and Ray Train into
MLflow (parent and child runs, table, chart, attention maps), and its table, gate and ensemble logic."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from workflows.ablation import report
from workflows.ablation.config import AblationConfig, AblationConfigError
from workflows.ablation.task import scores, task_info

# The "smoke" experts: pretrained in the project in seconds, written and read in the release formats.
SMALLEST = dict(tasks=("binding",), variants=("cast", "spatial"), seeds=(0,), experts="project", preset="smoke",
                steps=4, batch_size=4, eval_every=2, videos_per_class=1, heldout_per_class=1,
                attention_videos=2, gate=False)


@pytest.fixture(scope="module")
def ablation(local_ray, mlflow_store):
    from workflows.ablation.run import run_ablation

    cfg = AblationConfig(**SMALLEST, experts_dir=str(mlflow_store / "experts"), data_dir=str(mlflow_store / "data"),
                         storage_path=str(mlflow_store / "ray"), experiment="ablation-test", run_name="grid")
    cfg.validate()
    return run_ablation(cfg, log=lambda m: None)


@pytest.mark.ray
def test_grid_makes_a_parent_and_a_child_run_per_variant_and_seed(ablation):
    from workflows.tracking import store as tracking
    from workflows.ablation.run import VARIANT_TAG
    from workflows.experts.export import sha256

    client = tracking.client()
    parent = client.get_run(ablation.parent_run_id)
    lineage = {"cast.experts.spatial_sha256": sha256(ablation.experts.files["spatial"]),
               "cast.experts.temporal_sha256": sha256(ablation.experts.files["temporal"])}
    assert lineage.items() <= parent.data.tags.items()
    assert parent.info.status == "FINISHED" and parent.data.tags["cast.ablation"] == "parent"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{ablation.parent_run_id}'")
    assert sorted(c.data.tags[VARIANT_TAG] for c in children) == ["cast", "spatial"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert lineage.items() <= child.data.tags.items()  # lineage on every run that uses the experts
        assert client.get_run(child.data.tags["cast.experts.spatial_run_id"]).info.status == "FINISHED"
        assert len(client.get_metric_history(child.info.run_id, "val_top1")) == 2  # the learning curve
    names = {a.path for a in client.list_artifacts(ablation.parent_run_id, "comparison")}
    assert {"comparison/ablation.csv", "comparison/ablation.md", "comparison/ablation.png",
            "comparison/oracles.csv"} <= names


@pytest.mark.ray
def test_table_entries_are_the_child_runs_metrics(ablation, tmp_path):
    from workflows.tracking import store as tracking
    from workflows.ablation.run import VARIANT_TAG

    client = tracking.client()
    table = pd.read_csv(client.download_artifacts(ablation.parent_run_id, "comparison/ablation.csv", str(tmp_path)))
    parent = client.get_run(ablation.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{ablation.parent_run_id}'")
    for child in children:
        row = table[table["variant"] == child.data.tags[VARIANT_TAG]].iloc[0]
        for m in report.MEASURES:
            assert row[f"{m}_mean"] == pytest.approx(child.data.metrics[f"test_{m}"])
            assert row[f"{m}_std"] == 0.0  # one seed
    assert "| CAST |" in ablation.markdown and "appearance + motion (summed)" in ablation.markdown


@pytest.mark.ray
def test_cast_run_holds_attention_maps_of_the_right_shape(ablation, tmp_path):
    from PIL import Image

    from workflows.tracking import store as tracking
    from workflows.ablation.run import VARIANT_TAG

    client = tracking.client()
    parent = client.get_run(ablation.parent_run_id)
    cast = [c for c in client.search_runs([parent.info.experiment_id],
                                          filter_string=f"tags.`mlflow.parentRunId` = '{ablation.parent_run_id}'")
            if c.data.tags[VARIANT_TAG] == "cast"][0]
    cfg = ablation.experts.config
    T, N = cfg.num_steps, cfg.num_patches
    with np.load(client.download_artifacts(cast.info.run_id, "attention/maps.npz", str(tmp_path))) as z:
        assert z["t2s_time"].shape == (2, cfg.depth, T, T)  # 2 videos, every block, query step x key step
        assert z["s2t_space"].shape == (2, cfg.depth, T, N)  # query step x key patch
        assert np.allclose(z["t2s_time"].sum(-1), 1, atol=1e-4) and np.allclose(z["s2t_space"].sum(-1), 1, atol=1e-4)
    png = Image.open(client.download_artifacts(cast.info.run_id, "attention/maps.png", str(tmp_path)))
    assert png.size[0] > png.size[1] > 100  # a row per video, T frames and a matrix across


def test_ensemble_averages_the_saved_predictions_head_by_head(mlflow_store):
    from workflows.tracking import store as tracking
    from workflows.ablation.run import SEED_TAG, TASK_TAG, VARIANT_TAG, log_ensembles
    from workflows.ablation.trial import log_predictions, read_predictions
    from workflows.ablation.variants import BY_NAME

    info = task_info("binding")
    client = tracking.client()
    exp = tracking.ensure_experiment("ensemble-test")
    rng = np.random.default_rng(0)
    labels = np.arange(12)
    rows, probs = [], {}
    for side in ("spatial", "temporal"):
        run_id = client.create_run(exp).info.run_id
        probs[side] = {"noun": rng.dirichlet(np.ones(6), size=12).astype(np.float32),
                       "verb": rng.dirichlet(np.ones(4), size=12).astype(np.float32)}
        log_predictions(client, run_id, probs[side], labels)
        rows.append({"task": "binding", "variant": side, "seed": 3, "run_id": run_id})
    out = log_ensembles(rows, BY_NAME["ensemble"], {"binding": info}, "parent-id", "ensemble-test", {"cast.x": "y"})
    mean = {h: (probs["spatial"][h] + probs["temporal"][h]) / 2 for h in ("noun", "verb")}
    expected = scores(mean, labels, info)
    assert {k: out[0][f"test_{k}"] for k in expected} == pytest.approx(expected)
    saved, saved_labels = read_predictions(client, out[0]["run_id"])
    assert all(np.allclose(saved[h], mean[h]) for h in mean) and (saved_labels == labels).all()
    run = client.get_run(out[0]["run_id"])
    assert run.data.tags[VARIANT_TAG] == "ensemble" and run.data.tags[SEED_TAG] == "3"
    assert run.data.tags[TASK_TAG] == "binding" and run.data.tags["mlflow.parentRunId"] == "parent-id"


def test_scores_are_the_noun_and_verb_heads_and_the_action_needs_both():
    info = task_info("binding")  # class = noun * 2 + axis; the verb is the warm object's direction
    labels = np.array([0, 5, 10])  # (red, right), (green, up), (magenta, right)
    assert [tuple(info.targets(labels)[h]) for h in ("noun", "verb")] == [(0, 2, 5), (0, 3, 0)]
    noun = np.eye(6)[[0, 2, 1]]  # right, right, wrong
    verb = np.eye(4)[[1, 3, 0]]  # wrong, right, right
    s = scores({"noun": noun, "verb": verb}, labels, info)
    assert s["top1"] == pytest.approx(1 / 3)  # only the second has both
    assert s["appearance_acc"] == pytest.approx(2 / 3) and s["motion_acc"] == pytest.approx(2 / 3)
    assert s["am_balance"] == pytest.approx(2 / 3)
    no_verb = scores({"noun": noun, "verb": np.eye(4)[[2, 2, 2]]}, labels, info)
    assert no_verb["motion_acc"] == 0 and no_verb["am_balance"] == 0 and no_verb["top1"] == 0
    with pytest.raises(ValueError, match="noun .* and verb"):
        scores({"noun": noun}, labels, info)
    with pytest.raises(ValueError, match="noun .* and verb"):
        scores({"noun": noun, "verb": np.eye(5)[[0, 1, 2]]}, labels, info)


def _rows(values: dict[str, list[float]]) -> list[dict]:
    return [{"task": "motion", "variant": v, "seed": i, **{f"test_{m}": x for m in report.MEASURES}}
            for v, xs in values.items() for i, x in enumerate(xs)]


def test_gate_needs_a_lead_larger_than_the_seed_spread():
    labels = {"cast": "CAST", "spatial": "spatial expert", "temporal": "temporal expert"}
    clear = report.summarize(_rows({"cast": [0.9, 0.92, 0.94], "spatial": [0.5, 0.5, 0.5], "temporal": [0.7, 0.8, 0.6]}),
                             list(labels), labels)
    assert clear["seeds"].tolist() == [3, 3, 3]
    assert clear.loc[0, "top1_mean"] == pytest.approx(0.92) and clear.loc[0, "top1_std"] == pytest.approx(0.02)
    (gate,) = report.gates(clear)
    assert gate.passed and gate.runner_up == "temporal" and gate.spread == pytest.approx(0.1)
    close = report.summarize(_rows({"cast": [0.9, 0.7, 0.8], "spatial": [0.75, 0.75, 0.75]}), ["cast", "spatial"], labels)
    assert not report.gates(close)[0].passed  # lead 0.05 < std 0.1
    behind = report.summarize(_rows({"cast": [0.5], "spatial": [0.6]}), ["cast", "spatial"], labels)
    assert not report.gates(behind)[0].passed
    # a task where appearance and motion seen apart can be perfect: a tie at the top passes, being behind not
    tied = report.summarize(_rows({"cast": [1.0, 1.0], "spatial": [1.0, 1.0]}), ["cast", "spatial"], labels)
    assert not report.gates(tied)[0].passed and not report.gates(tied, {"motion": 0.5})[0].passed
    assert report.gates(tied, {"motion": 1.0})[0].passed
    assert not report.gates(behind, {"motion": 1.0})[0].passed


def test_chart_is_a_png(tmp_path):
    labels = {"cast": "CAST", "spatial": "spatial expert"}
    table = report.summarize(_rows({"cast": [0.9, 0.8], "spatial": [0.5, 0.6]}), list(labels), labels)
    path = report.plot(table, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad, message", [
    (dict(tasks=("colour",)), "tasks"),
    (dict(variants=("spatial",)), "must include cast"),
    (dict(variants=("cast", "ensemble", "spatial")), "add \\['temporal'\\]"),
    (dict(seeds=(1, 1)), "seeds"),
    (dict(experts="hub"), "experts"),
    (dict(steps=0), "steps"),
])
def test_wrong_configs_fail_before_any_work(bad, message):
    with pytest.raises(AblationConfigError, match=message):
        AblationConfig(**bad).validate()


def test_door_reports_a_wrong_flag_in_one_line(capsys):
    from workflows.reproduce import main

    assert main(["--variants", "cast,sideways"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cast-reproduce: error: unknown variants ['sideways']") and "\n" not in err
