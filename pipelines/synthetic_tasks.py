"""The synthetic tasks' definitions: classes, what each sample shows, and what each kind of model could know.

Two tasks share the same objects (six appearances, four directions of motion). The six appearances
are discs of six hues at one brightness (Rec.601 luma 118 of 255; the background's is about 20-60): they differ
in hue alone, so only a colour-seeing model tells them apart, and a luma-only one (the project's temporal
expert, as primate motion vision is largely colour-blind) sees six identical discs:

- ``motion``: one object; the class is its appearance x its direction (up to 24 classes).
- ``binding``: two objects of different appearance, one moving horizontally, one vertically; the class
  is the appearance of the *horizontally* moving object x which way it moves (up to 12 classes). The
  other object is a distractor of another appearance moving up or down. Knowing which appearances are
  there and which motions happen is not enough: only linking *which* object moves *how* decides it.

:func:`oracles` computes, by enumerating the task's latent variables, the best accuracy a model can
reach from each kind of partial evidence (one frame, shuffled frames, appearance only, motion only,
appearance and motion seen separately and summed) and the chance level: ceilings from the definition,
not from training.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator

# (name, RGB, shape). Isoluminant: Y = 0.299 R + 0.587 G + 0.114 B is 118.0 +- 0.04 for each (no integer RGB
# near these hues hits one value exactly); every channel spread exceeds 120, so the noisy background (greys
# tinted by at most 40) never paints an object's exact colour, which the experts' pretraining targets rely on.
APPEARANCES: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("red", (207, 81, 75), "disc"),
    ("yellow", (135, 132, 1), "disc"),
    ("green", (48, 168, 44), "disc"),
    ("cyan", (29, 155, 161), "disc"),
    ("blue", (104, 102, 237), "disc"),
    ("magenta", (188, 68, 192), "disc"),
)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec.601: the brightness a colour-blind observer sees


def luma(rgb: tuple[int, int, int]) -> float:
    """Rec.601 luma of an RGB colour (0-255)."""
    return sum(w * c for w, c in zip(LUMA_WEIGHTS, rgb))


def objects_id() -> str:
    """A short digest of the appearance table: cached data rendered from these objects (datasets, the
    ablation's clips, the pretrained experts) records it and is remade when the objects change."""
    table = json.dumps([[name, list(rgb), shape] for name, rgb, shape in APPEARANCES])
    return hashlib.sha256(table.encode()).hexdigest()[:12]


# (name, unit vector (dy, dx)) -- image coordinates, y down. The first two are horizontal.
DIRECTIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("from left to right", (0, 1)),
    ("from right to left", (0, -1)),
    ("downwards", (1, 0)),
    ("upwards", (-1, 0)),
)
HORIZONTAL = (0, 1)
VERTICAL = (2, 3)
TASKS = ("motion", "binding")


def max_classes(task: str) -> int:
    """How many classes ``task`` defines."""
    _check_task(task)
    return len(APPEARANCES) * (len(DIRECTIONS) if task == "motion" else len(HORIZONTAL))


def num_motions(task: str) -> int:
    """How many values the motion label takes (4 directions; 2 horizontal ones for ``binding``)."""
    _check_task(task)
    return len(DIRECTIONS) if task == "motion" else len(HORIZONTAL)


def class_parts(c: int, task: str = "motion") -> tuple[int, int]:
    """Class id -> (appearance label, motion label): the appearance index and the direction index (of
    the one object for ``motion``, of the horizontally moving one for ``binding``). The ablation scores
    appearance and motion accuracy separately through this."""
    m = num_motions(task)
    if not 0 <= c < max_classes(task):
        raise ValueError(f"class id {c} outside 0..{max_classes(task) - 1} of task {task!r}")
    return c // m, c % m


def class_name(c: int, task: str = "motion") -> str:
    a, d = class_parts(c, task)
    colour, _, shape = APPEARANCES[a]
    if task == "motion":
        return f"Moving {colour} {shape} {DIRECTIONS[d][0]}"
    return f"Moving {colour} {shape} {DIRECTIONS[d][0]} past another object moving vertically"


def object_name(appearance: int) -> str:
    colour, _, shape = APPEARANCES[appearance]
    return f"{colour} {shape}"


@dataclass(frozen=True)
class Scene:
    """What one sample shows: (appearance, direction) of each object, the class's object first."""

    objects: tuple[tuple[int, int], ...]


def scene_for(c: int, task: str, draw: Callable[[int], int]) -> Scene:
    """The objects of a sample of class ``c``; ``draw(n)`` returns a uniform integer in [0, n)."""
    a, d = class_parts(c, task)
    if task == "motion":
        return Scene(((a, d),))
    others = [x for x in range(len(APPEARANCES)) if x != a]
    return Scene(((a, d), (others[draw(len(others))], VERTICAL[draw(len(VERTICAL))])))


# -- oracles -------------------------------------------------------------------------------------------
def _latents(task: str, num_classes: int) -> Iterator[tuple[int, Scene]]:
    """Every (class, scene) the task can produce, each as likely as the generator makes it (uniform)."""
    for c in range(num_classes):
        a, d = class_parts(c, task)
        if task == "motion":
            yield c, Scene(((a, d),))
            continue
        for other in (x for x in range(len(APPEARANCES)) if x != a):
            for v in VERTICAL:
                yield c, Scene(((a, d), (other, v)))


def _axis(direction: int) -> str:
    return "horizontal" if direction in HORIZONTAL else "vertical"


# What each kind of evidence shows of a scene. A single frame shows the objects but neither their
# direction nor their axis: every position is equally likely in every frame (the objects wrap around).
# Shuffled frames show each object's path, hence its axis, but not which way along it. "Appearance only"
# is the set of appearances; "motion only" the set of motions with no object attached. The unbound pair
# sees both sets separately: the most any sum of an appearance model's and a motion model's outputs can use.
EVIDENCE: dict[str, Callable[[Scene], Hashable]] = {
    "full video": lambda s: s.objects,
    "one frame": lambda s: frozenset(a for a, _ in s.objects),
    "shuffled frames": lambda s: frozenset((a, _axis(d)) for a, d in s.objects),
    "appearance only": lambda s: frozenset(a for a, _ in s.objects),
    "motion only": lambda s: frozenset(d for _, d in s.objects),
    "appearance + motion (summed)": lambda s: (frozenset(a for a, _ in s.objects),
                                              frozenset(d for _, d in s.objects)),
}


@dataclass(frozen=True)
class Oracle:
    """The best top-1 a model seeing only ``evidence`` can reach (Bayes-optimal), and chance (1/classes)."""

    evidence: str
    ceiling: float
    chance: float


def oracles(task: str, num_classes: int | None = None) -> dict[str, Oracle]:
    """Each kind of evidence's ceiling on ``task`` with its first ``num_classes`` classes (all by
    default), computed by enumerating the task's equally likely latent scenes: for each thing the
    evidence can show, the best guess is the class most often behind it."""
    n = max_classes(task) if num_classes is None else num_classes
    if not 2 <= n <= max_classes(task):
        raise ValueError(f"num_classes must be in [2, {max_classes(task)}] for task {task!r}, got {n}")
    latents = list(_latents(task, n))
    out = {}
    for name, show in EVIDENCE.items():
        seen: dict[Hashable, Counter] = defaultdict(Counter)
        for c, scene in latents:
            seen[show(scene)][c] += 1
        best = sum(max(counts.values()) for counts in seen.values())
        out[name] = Oracle(name, best / len(latents), 1.0 / n)
    return out


def format_oracles(task: str, num_classes: int | None = None) -> str:
    """The oracles as a Markdown table."""
    rows = oracles(task, num_classes)
    n = max_classes(task) if num_classes is None else num_classes
    lines = [f"task {task!r}, {n} classes (chance {1 / n:.3f})", "", "| evidence | ceiling top-1 |", "|---|---|"]
    lines += [f"| {o.evidence} | {o.ceiling:.3f} |" for o in rows.values()]
    return "\n".join(lines)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


__all__ = ["APPEARANCES", "LUMA_WEIGHTS", "luma", "objects_id",
           "DIRECTIONS", "HORIZONTAL", "VERTICAL", "TASKS", "Scene", "Oracle", "max_classes",
           "num_motions", "class_parts", "class_name", "object_name", "scene_for", "oracles", "format_oracles",
           "EVIDENCE"]
