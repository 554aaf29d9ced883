"""Classification metrics as pure numpy functions, plus the two artifact writers (PNG, CSV).

Scores are (N, C) arrays (logits or probabilities: only their order matters), labels (N,) ints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cast_model.vocab import head_prefix, is_action


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f"scores (N, C) and labels (N,) expected, got {scores.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}")


def ranked_ids(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, C) scores -> (N, min(k, C)) class ids, best first."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (N, k), unordered
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the label is among the k highest scores (``topk_hits`` over the ranked ids)."""
    _check(scores, labels)
    return topk_hits(ranked_ids(scores, k), labels, min(k, scores.shape[1]))


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is in the top k (0.0 for an empty set)."""
    return float(topk_correct(scores, labels, k).mean()) if len(labels) else 0.0


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(C,) recall per true class; NaN for classes without samples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def action_accuracy(verb_scores: np.ndarray, verb_labels: np.ndarray, noun_scores: np.ndarray,
                    noun_labels: np.ndarray, k: int = 1) -> float:
    """EK100 action top-k: verb and noun both right (top-1: both argmaxes right)."""
    if len(verb_labels) != len(noun_labels):
        raise ValueError("verb and noun sets differ in size")
    both = topk_correct(verb_scores, verb_labels, k) & topk_correct(noun_scores, noun_labels, k)
    return float(both.mean()) if len(both) else 0.0


def classification_summary(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Top-1/top-5 per head; with verb and noun heads also the action top-1.

    Keys: ``top1``/``top5`` for a single ``label`` head; ``verb_top1``, ``noun_top1``, ...,
    ``action_top1`` and ``top1`` (= action top-1, the figure the registry compares) for EK100.
    """
    out: dict[str, float] = {}
    for head in scores:
        prefix = head_prefix(head)
        out[f"{prefix}top1"] = topk_accuracy(scores[head], labels[head], 1)
        out[f"{prefix}top5"] = topk_accuracy(scores[head], labels[head], 5)
    if is_action(tuple(scores)):
        out["action_top1"] = action_accuracy(scores["verb"], labels["verb"], scores["noun"], labels["noun"])
        out["top1"] = out["action_top1"]
    return out


def write_per_class_csv(path: str | Path, cm: np.ndarray, class_names: Sequence[str]) -> Path:
    """The per-class table (:func:`per_class_table`) as CSV: the one per-class format of training and
    evaluation alike."""
    path = Path(path)
    per_class_table(cm, class_names).to_csv(path, index=False)
    return path


def plot_confusion_matrix(path: str | Path, cm: np.ndarray, class_names: Sequence[str], title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (class names on the axes up to 60 classes)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    support = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(support, 1)
    n = len(cm)
    size = min(4 + 0.25 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix ({int(cm.sum())} clips)")
    if n <= 60:
        ax.set_xticks(range(n), [str(c)[:24] for c in class_names], rotation=90, fontsize=6)
        ax.set_yticks(range(n), [str(c)[:24] for c in class_names], fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- Batch-inference evaluation: metrics from confusion matrices and stored top-k lists --------------
# (precision/recall/F1, mean class accuracy, the paper's balanced measure; used by workflows/evaluation/report.py)


def topk_hits(top_ids: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool from predicted ids ``top_ids`` (N, K) best first (-1 pads missing entries): the label is
    among the first ``k``. ``k`` may not exceed K: fewer stored ids cannot answer top-k."""
    if top_ids.ndim != 2 or len(top_ids) != len(labels):
        raise ValueError(f"top_ids (N, K) and labels (N,) expected, got {top_ids.shape} and {labels.shape}")
    if k > top_ids.shape[1]:
        raise ValueError(f"top-{k} needs at least {k} stored predictions per sample, have {top_ids.shape[1]}")
    return (top_ids[:, :k] == labels[:, None]).any(axis=1)


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class (C,) precision, recall, F1 and support from ``cm`` (rows true, columns predicted).

    Precision is NaN for a class never predicted, recall NaN for a class without samples; F1 is NaN
    when either is, and 0 when both are 0.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
    return precision, recall, f1, support


def macro_scores(cm: np.ndarray) -> dict[str, float]:
    """Macro precision / recall / F1 over the classes that have samples. A class with samples that is
    never predicted counts with precision 0 (and so F1 0), as scikit-learn's ``zero_division=0``."""
    precision, recall, f1, support = precision_recall_f1(cm)
    present = support > 0
    if not present.any():
        return {"macro_precision": float("nan"), "macro_recall": float("nan"), "macro_f1": float("nan")}
    p = np.nan_to_num(precision[present], nan=0.0)
    f = np.nan_to_num(f1[present], nan=0.0)
    return {"macro_precision": float(p.mean()), "macro_recall": float(recall[present].mean()),
            "macro_f1": float(f.mean())}


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean over classes with samples of each class's accuracy (its recall): the figure that does not
    let frequent classes dominate."""
    acc = per_class_accuracy(cm)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def harmonic_mean(values: Sequence[float]) -> float:
    """n / sum(1 / v): the paper's balanced measure over datasets. 0 when any value is 0."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or (v < 0).any() or not np.isfinite(v).all():
        raise ValueError(f"harmonic mean needs finite values >= 0, got {list(values)}")
    if (v == 0).any():
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


def appearance_motion_balance(appearance_acc: float, motion_acc: float) -> float:
    """The ablation's balance of one model on one task: the harmonic mean of how often its predicted
    class has the right appearance and the right motion. The same function as the paper's balanced
    measure (:func:`harmonic_mean` of top-1 over datasets), a different measure: it stays low for a model
    that gets only one of the two right, as the paper's stays low for one that wins on one dataset only."""
    return harmonic_mean([appearance_acc, motion_acc])


def per_class_table(cm: np.ndarray, class_names: Sequence[str]):
    """A DataFrame, one row per class: class_id, name, support, predicted, correct, precision, recall, f1."""
    import pandas as pd

    precision, recall, f1, support = precision_recall_f1(cm)
    return pd.DataFrame({"class_id": np.arange(len(cm)), "name": list(class_names), "support": support,
                         "predicted": cm.sum(axis=0), "correct": np.diag(cm), "precision": precision,
                         "recall": recall, "f1": f1})
