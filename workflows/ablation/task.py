"""A synthetic task as the ablation scores it: each class's noun (appearance) and verb (motion) labels,
the oracle ceilings and chance levels from the task's definition, and the scores of a set of predictions.

Every variant of the ablation has CAST's EPIC-KITCHENS heads, a noun head and a verb head, as in the
paper's Table 1 (EK100): a class is the action (noun, verb), and a prediction is right when both heads are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines import synthetic_tasks as tasks

from ..evaluation import metrics as M

HEADS = ("noun", "verb")  # CASTConfig(head="verb_noun")'s outputs: the appearance label and the motion label


@dataclass(frozen=True)
class TaskInfo:
    task: str
    num_classes: int
    appearance: np.ndarray  # (C,) each class's noun: an appearance index
    motion: np.ndarray  # (C,) each class's verb: a direction index
    oracles: dict[str, tasks.Oracle]  # evidence -> the Bayes-optimal accuracies seeing only it, and chance

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    @property
    def head_sizes(self) -> dict[str, int]:
        """CASTConfig fields of the heads: every appearance a noun, every direction a verb."""
        return {"num_nouns": len(tasks.APPEARANCES), "num_verbs": len(tasks.DIRECTIONS)}

    def targets(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """(n,) class ids -> each head's (n,) labels."""
        return {"noun": self.appearance[labels], "verb": self.motion[labels]}

    def oracle_rows(self) -> list[dict[str, Any]]:
        return [{"task": self.task, "evidence": o.evidence, "ceiling_top1": o.ceiling, "ceiling_noun": o.noun,
                 "ceiling_verb": o.verb, "chance_top1": o.chance} for o in self.oracles.values()]


def task_info(task: str, num_classes: int | None = None) -> TaskInfo:
    n = tasks.max_classes(task) if num_classes is None else num_classes
    parts = np.array([tasks.class_parts(c, task) for c in range(n)], dtype=np.int64)  # (C, 2)
    return TaskInfo(task, n, parts[:, 0], parts[:, 1], tasks.oracles(task, n))


def scores(probs: dict[str, np.ndarray], labels: np.ndarray, info: TaskInfo) -> dict[str, float]:
    """Action top-1 (both heads right), how often the noun head is right (``appearance_acc``) and the
    verb head (``motion_acc``), from each head's (n, K) probabilities and (n,) class labels.
    ``am_balance`` is the harmonic mean of the two: the appearance-motion balance, computed by the same
    function as the paper's balanced measure over datasets
    (:func:`workflows.evaluation.metrics.harmonic_mean`), but a different measure."""
    sizes = {"noun": info.head_sizes["num_nouns"], "verb": info.head_sizes["num_verbs"]}
    shapes = {h: getattr(probs.get(h), "shape", None) for h in HEADS}
    if set(probs) != set(HEADS) or not len(labels) or any(shapes[h] != (len(labels), sizes[h]) for h in HEADS):
        raise ValueError(f"need noun (n, {sizes['noun']}) and verb (n, {sizes['verb']}) probabilities for n > 0 "
                         f"labels, got {shapes} (heads {sorted(probs)}) and labels {labels.shape}")
    right = {h: probs[h].argmax(axis=1) == target for h, target in info.targets(labels).items()}
    app, mot = float(right["noun"].mean()), float(right["verb"].mean())
    return {"top1": float((right["noun"] & right["verb"]).mean()), "appearance_acc": app, "motion_acc": mot,
            "am_balance": M.appearance_motion_balance(app, mot)}
