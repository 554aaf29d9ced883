"""Evaluation figures against hand computations on small confusion matrices; the balanced measure; the
rejects file across runs; the MLflow evaluation run with its tags."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflows.evaluation import metrics as M
from workflows.tracking import store as tracking
from workflows.balanced_measure import main as evaluate_main
from workflows.evaluation.report import (EvalReport, MODEL_NAME_TAG, MODEL_VERSION_TAG, balanced_measure,
                                  evaluate_table, log_evaluation_run, report_files)
from workflows.inference.store import ModelStamp, OutputStore, prediction_schema, predictions_table

# 3 classes, 10 samples. Rows true, columns predicted.
CM = np.array([[3, 1, 0],
               [1, 2, 1],
               [0, 0, 2]])


def test_precision_recall_f1_equal_a_hand_computation():
    p, r, f1, support = M.precision_recall_f1(CM)
    # precision = diag / column sums: 3/4, 2/3, 2/3; recall = diag / row sums: 3/4, 2/4, 2/2
    np.testing.assert_allclose(p, [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(r, [3 / 4, 1 / 2, 1.0])
    np.testing.assert_allclose(f1, [3 / 4, 2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2), 2 * (2 / 3) / (2 / 3 + 1)])
    assert support.tolist() == [4, 4, 2]
    assert M.mean_class_accuracy(CM) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    macro = M.macro_scores(CM)
    assert macro["macro_precision"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert macro["macro_recall"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert macro["macro_f1"] == pytest.approx(float(np.mean(f1)))


def test_classes_never_predicted_or_without_samples():
    cm = np.array([[2, 0, 0],
                   [1, 0, 0],   # class 1 has samples but is never predicted: precision 0 in the macro mean
                   [0, 0, 0]])  # class 2 has no samples: left out of the macro means
    p, r, f1, _ = M.precision_recall_f1(cm)
    assert p[0] == pytest.approx(2 / 3) and math.isnan(p[1]) and math.isnan(p[2])
    assert r.tolist()[:2] == [1.0, 0.0] and math.isnan(r[2]) and math.isnan(f1[1])
    macro = M.macro_scores(cm)
    assert macro["macro_precision"] == pytest.approx((2 / 3 + 0) / 2)
    assert macro["macro_recall"] == pytest.approx(0.5)
    assert macro["macro_f1"] == pytest.approx((2 * (2 / 3) / (2 / 3 + 1) + 0) / 2)
    assert M.mean_class_accuracy(cm) == pytest.approx(0.5)


def test_harmonic_mean_and_topk_hits():
    assert M.harmonic_mean([0.5, 0.25]) == pytest.approx(2 / (2 + 4))
    assert M.harmonic_mean([0.7, 0.0]) == 0.0
    with pytest.raises(ValueError):
        M.harmonic_mean([])
    ids = np.array([[2, 0, 1], [1, 2, -1]])
    assert M.topk_hits(ids, np.array([0, 0]), 1).tolist() == [False, False]
    assert M.topk_hits(ids, np.array([0, 2]), 2).tolist() == [True, True]
    with pytest.raises(ValueError, match="top-4"):
        M.topk_hits(ids, np.array([0, 0]), 4)


LABELS = {"label": {"0": "a", "1": "b", "2": "c"}}


def single_table(truth: list[int | None], top: list[list[int]]) -> pa.Table:
    n = len(truth)
    batch = {"source_id": np.array([f"v{i}" for i in range(n)], object), "key": np.array([f"v{i}" for i in range(n)], object),
             "path": np.array(["p"] * n, object), "label_label": np.array([-1 if t is None else t for t in truth]),
             "top_ids": np.array(top, np.int64), "top_probs": np.tile(np.array([0.6, 0.3, 0.1], np.float32), (n, 1))}
    return predictions_table(batch, LABELS, ModelStamp("cast-x", "3", "models:/cast-x/3"), "job")


def cm_rows(cm: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Samples that produce confusion matrix ``cm`` (top-1 = the predicted column; the rest fill the top-3)."""
    truth, top = [], []
    for t in range(len(cm)):
        for p in range(len(cm)):
            for _ in range(cm[t, p]):
                truth.append(t)
                top.append([p] + [c for c in range(len(cm)) if c != p])
    return truth, top


def test_evaluate_table_equals_the_hand_computation():
    truth, top = cm_rows(CM)
    table = single_table(truth + [None], top + [[0, 1, 2]])  # an unlabelled row is not evaluated
    assert table.schema == prediction_schema(("label",))
    report = evaluate_table(table, LABELS)
    assert report.samples == 10
    np.testing.assert_array_equal(report.heads["label"].cm, CM)
    s = report.summary
    assert s["top1"] == pytest.approx(7 / 10)
    # top-5 with 3 classes is every class
    assert s["top5"] == 1.0
    assert s["mean_class_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert s["macro_f1"] == pytest.approx(M.macro_scores(CM)["macro_f1"])
    files = report_files(report, "test")
    table_csv = files["per_class_label.csv"].decode().splitlines()
    assert table_csv[0] == "class_id,name,support,predicted,correct,precision,recall,f1"
    assert table_csv[1].startswith("0,a,4,4,3,0.75,0.75,0.75")
    assert files["confusion_label.csv"].decode().splitlines()[2] == "1,1,2,1"
    assert files["confusion_label.png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_ek100_verb_noun_and_action():
    labels = {"verb": {"0": "take", "1": "put"}, "noun": {"0": "cup", "1": "pan", "2": "lid"}}
    # 4 segments: (verb, noun) truth and the stored top-2 of verbs, nouns and action pairs.
    truth = [(0, 0), (1, 2), (0, 1), (1, 1)]
    verb_top = [[0, 1], [1, 0], [1, 0], [1, 0]]
    noun_top = [[0, 1], [1, 2], [1, 0], [1, 2]]
    action_top = [[(0, 0), (1, 0)], [(1, 1), (1, 2)], [(1, 1), (0, 1)], [(1, 1), (0, 1)]]
    batch = {"source_id": np.array(["a", "b", "c", "d"], object), "key": np.array(["a", "b", "c", "d"], object),
             "path": np.array(["p"] * 4, object), "label_verb": np.array([t[0] for t in truth]),
             "label_noun": np.array([t[1] for t in truth]), "verb_top_ids": np.array(verb_top),
             "verb_top_probs": np.full((4, 2), 0.5, np.float32), "noun_top_ids": np.array(noun_top),
             "noun_top_probs": np.full((4, 2), 0.5, np.float32),
             "action_top_verb_ids": np.array([[v for v, _ in a] for a in action_top]),
             "action_top_noun_ids": np.array([[n for _, n in a] for a in action_top]),
             "action_top_probs": np.full((4, 2), 0.25, np.float32)}
    table = predictions_table(batch, labels, ModelStamp("cast-ek100", "1", "u"), "job")
    assert table["action_top_names"].to_pylist()[0] == ["take cup", "put cup"]
    s = evaluate_table(table, labels).summary
    assert s["verb_top1"] == pytest.approx(3 / 4)   # a, b, d
    assert s["noun_top1"] == pytest.approx(3 / 4)   # a, c, d
    # the top pair is the top verb with the top noun: right for a and d only
    assert s["action_top1"] == pytest.approx(2 / 4) and s["top1"] == s["action_top1"]
    assert "action_top5" not in s  # only 2 pairs stored: top-5 cannot be answered


def test_balanced_measure_over_datasets(tmp_path):
    reports = [{"dataset": "ssv2", "model_name": "cast-ssv2", "model_version": "1", "summary": {"top1": 0.6}},
               {"dataset": "k400", "model_name": "cast-k400", "model_version": "2", "summary": {"top1": 0.8}},
               {"dataset": "ek100", "model_name": "cast-ek100", "model_version": "1",
                "summary": {"verb_top1": 0.5, "noun_top1": 0.4, "action_top1": 0.2, "top1": 0.2}}]
    out = balanced_measure(reports)
    assert out["top1"] == {"ssv2": 0.6, "k400": 0.8, "ek100_verb": 0.5, "ek100_noun": 0.4}
    assert out["harmonic_mean"] == pytest.approx(4 / (1 / 0.6 + 1 / 0.8 + 1 / 0.5 + 1 / 0.4))
    paths = []
    for r in reports:
        paths.append(tmp_path / f"{r['dataset']}.json")
        paths[-1].write_text(json.dumps(r))
    assert evaluate_main([*map(str, paths), "--ek100-figures", "action_top1", "--out", str(tmp_path / "b.json")]) == 0
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["harmonic_mean"] == pytest.approx(3 / (1 / 0.6 + 1 / 0.8 + 1 / 0.2))
    with pytest.raises(ValueError, match="twice"):
        balanced_measure([reports[0], reports[0]])
    assert evaluate_main([str(tmp_path / "missing.json")]) == 2


def test_rejects_accumulate_across_runs_without_duplicates(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    assert store.update_rejects([]) == 0 and store.read_rejects() is None
    store.update_rejects([{"source_id": "a", "path": "a.mp4", "reason": "empty"},
                          {"source_id": "b", "path": "b.mp4", "reason": "truncated"}])
    store.update_rejects([{"source_id": "b", "path": "b.mp4", "reason": "undecodable", "detail": "x"},
                          {"source_id": "c", "path": "c.mp4", "reason": "missing"}])
    rows = {r["source_id"]: r["reason"] for r in pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()}
    assert rows == {"a": "empty", "b": "undecodable", "c": "missing"}
    store.update_rejects([], predicted={"a"})  # retried and predicted since
    assert store.rejected_ids() == {"b", "c"}


def test_evaluation_run_is_logged_with_its_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    truth, top = cm_rows(CM)
    report = evaluate_table(single_table(truth, top), LABELS)
    report.info = {"model_name": "cast-x", "model_version": "3", "dataset": "ssv2"}
    run_id = log_evaluation_run(report, report_files(report, "t"), "cast-evaluation",
                                {MODEL_NAME_TAG: "cast-x", MODEL_VERSION_TAG: "3"}, run_name="eval")
    client = tracking.client()
    exp = client.get_experiment_by_name("cast-evaluation")
    (run,) = client.search_runs([exp.experiment_id],
                                f"tags.`{MODEL_NAME_TAG}` = 'cast-x' and tags.`{MODEL_VERSION_TAG}` = '3'")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["cast.kind"] == "evaluation"
    assert run.data.metrics["top1"] == pytest.approx(0.7) and run.data.metrics["samples"] == 10
    assert run.data.params["dataset"] == "ssv2"
    names = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/confusion_label.png", "evaluation/per_class_label.csv", "evaluation/metrics.json"} <= names
    assert isinstance(report, EvalReport)


# -- scikit-learn as the oracle --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed):
    """Random scores over 7 classes, one class absent from the labels and one never predicted: every
    figure equals scikit-learn's (the macro means over the classes that have samples, zero_division=0)."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(seed)
    n, c = 200, 7
    labels = rng.choice([0, 1, 2, 3, 4, 6], size=n)            # class 5 has no samples
    scores = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[labels]
    scores[:, 6] -= 100.0                                       # class 6 is never predicted
    preds = scores.argmax(1)
    classes = np.arange(c)

    cm = M.confusion_matrix(preds, labels, c)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, preds, labels=classes))
    for k in (1, 3, 5):
        assert M.topk_accuracy(scores, labels, k) == pytest.approx(
            skm.top_k_accuracy_score(labels, scores, k=k, labels=classes))
        np.testing.assert_array_equal(M.topk_hits(M.ranked_ids(scores, k), labels, k),
                                      M.topk_correct(scores, labels, k))
    present = np.unique(labels)
    p, r, f1, support = skm.precision_recall_fscore_support(labels, preds, labels=present, zero_division=0)
    macro = M.macro_scores(cm)
    assert macro["macro_precision"] == pytest.approx(p.mean())
    assert macro["macro_recall"] == pytest.approx(r.mean())
    assert macro["macro_f1"] == pytest.approx(f1.mean())
    assert M.mean_class_accuracy(cm) == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    ours_p, ours_r, ours_f1, ours_support = M.precision_recall_f1(cm)
    np.testing.assert_allclose(ours_r[present], r)
    np.testing.assert_array_equal(ours_support[present], support)
    predicted = cm.sum(axis=0)[present] > 0
    np.testing.assert_allclose(ours_p[present][predicted], p[predicted])
    np.testing.assert_allclose(ours_f1[present][predicted], f1[predicted])
