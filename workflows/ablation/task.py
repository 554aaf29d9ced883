"""A synthetic task as the ablation scores it: each class's appearance and motion labels, the oracle
ceilings and chance levels from the task's definition, and the scores of a set of predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines import synthetic_tasks as tasks

from ..evaluation import metrics as M


@dataclass(frozen=True)
class TaskInfo:
    task: str
    num_classes: int
    appearance: np.ndarray  # (C,) each class's appearance label
    motion: np.ndarray  # (C,) each class's motion label
    oracles: dict[str, tasks.Oracle]  # evidence -> the Bayes-optimal top-1 seeing only it, and chance

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    def oracle_rows(self) -> list[dict[str, Any]]:
        return [{"task": self.task, "evidence": o.evidence, "ceiling_top1": o.ceiling, "chance_top1": o.chance}
                for o in self.oracles.values()]


def task_info(task: str, num_classes: int | None = None) -> TaskInfo:
    n = tasks.max_classes(task) if num_classes is None else num_classes
    parts = np.array([tasks.class_parts(c, task) for c in range(n)], dtype=np.int64)  # (C, 2)
    return TaskInfo(task, n, parts[:, 0], parts[:, 1], tasks.oracles(task, n))


def scores(probs: np.ndarray, labels: np.ndarray, info: TaskInfo) -> dict[str, float]:
    """Top-1 and how often the predicted class has the right appearance and the right motion, from
    (n, C) class probabilities and (n,) labels. ``am_balance`` is the harmonic mean of the two: the
    appearance-motion balance, computed by the same function as the paper's balanced measure over
    datasets (:func:`workflows.evaluation.metrics.harmonic_mean`), but a different measure."""
    if probs.ndim != 2 or probs.shape[1] != info.num_classes or len(probs) != len(labels) or not len(labels):
        raise ValueError(f"need (n, {info.num_classes}) probabilities for n > 0 labels, got {probs.shape} "
                         f"and {labels.shape}")
    pred = probs.argmax(axis=1)
    app = float((info.appearance[pred] == info.appearance[labels]).mean())
    mot = float((info.motion[pred] == info.motion[labels]).mean())
    return {"top1": float((pred == labels).mean()), "appearance_acc": app, "motion_acc": mot,
            "am_balance": M.appearance_motion_balance(app, mot)}
