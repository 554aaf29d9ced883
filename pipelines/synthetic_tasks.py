"""The synthetic tasks' definitions: classes, what each sample shows, and what each kind of model could know.

Two tasks share the same objects (six appearances, four directions of motion). The six appearances
are discs of six hues at one brightness (Rec.601 luma 118 of 255; the background's is about 20-60): they differ
in hue alone, so only a colour-seeing model tells them apart, and a luma-only one (the project's temporal
expert, as primate motion vision is largely colour-blind) sees six identical discs:

- ``motion``: one object; the class is its appearance x its direction (up to 24 classes).
- ``binding``: two objects, one of a warm hue and one of a cool hue, moving along one axis (both
  horizontally or both vertically) in opposite senses. Each clip carries two labels, as an EPIC-KITCHENS
  action does: the *noun* is the hue of the object moving forward (rightwards or downwards), the *verb* is
  the direction of the warm object (up to 12 classes: the noun x the axis; the verb follows from them).
  Neither label is in the hues present or in the motions present: the noun picks an appearance by its
  motion, the verb a motion by its appearance. A model whose noun head reads the appearance expert and
  whose verb head reads the motion expert (CAST's EK100 heads) needs the exchange in both directions:
  motion into the appearance path for the noun (T2S), appearance into the motion path for the verb (S2T).

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
AXES = ("horizontal", "vertical")
FORWARD = (0, 2)  # per axis: rightwards, downwards
BACKWARD = (1, 3)  # per axis: leftwards, upwards
# Hue groups of the binding task's verb: within 60 degrees of red on the hue circle, and the rest.
WARM = (0, 1, 5)  # red, yellow, magenta
COOL = (2, 3, 4)  # green, cyan, blue
TASKS = ("motion", "binding")


def max_classes(task: str) -> int:
    """How many classes ``task`` defines."""
    _check_task(task)
    return len(APPEARANCES) * (len(DIRECTIONS) if task == "motion" else len(AXES))


def class_parts(c: int, task: str = "motion") -> tuple[int, int]:
    """Class id -> (noun, verb): an appearance index and a direction index. ``motion``: the one object's
    appearance and direction. ``binding``: the hue of the object moving forward, and the direction of
    the warm object (forward when the noun is warm, backward when it is cool). Models with noun and verb
    heads train on these, and the ablation scores appearance and motion accuracy through them."""
    if not 0 <= c < max_classes(task):
        raise ValueError(f"class id {c} outside 0..{max_classes(task) - 1} of task {task!r}")
    if task == "motion":
        return c // len(DIRECTIONS), c % len(DIRECTIONS)
    noun, axis = divmod(c, len(AXES))
    return noun, (FORWARD if noun in WARM else BACKWARD)[axis]


def class_name(c: int, task: str = "motion") -> str:
    a, d = class_parts(c, task)
    colour, _, shape = APPEARANCES[a]
    if task == "motion":
        return f"Moving {colour} {shape} {DIRECTIONS[d][0]}"
    axis = c % len(AXES)
    other = "cool" if a in WARM else "warm"
    return (f"Moving {colour} {shape} {DIRECTIONS[FORWARD[axis]][0]} past a {other} {shape} moving "
            f"{DIRECTIONS[BACKWARD[axis]][0]}")


def object_name(appearance: int) -> str:
    colour, _, shape = APPEARANCES[appearance]
    return f"{colour} {shape}"


@dataclass(frozen=True)
class Scene:
    """What one sample shows: (appearance, direction) of each object, the class's object first."""

    objects: tuple[tuple[int, int], ...]


def _other_group(appearance: int) -> tuple[int, ...]:
    return COOL if appearance in WARM else WARM


def scene_for(c: int, task: str, draw: Callable[[int], int]) -> Scene:
    """The objects of a sample of class ``c``; ``draw(n)`` returns a uniform integer in [0, n)."""
    if task == "motion":
        return Scene((class_parts(c, task),))
    noun, axis = divmod(c, len(AXES))
    others = _other_group(noun)
    return Scene(((noun, FORWARD[axis]), (others[draw(len(others))], BACKWARD[axis])))


# -- oracles -------------------------------------------------------------------------------------------
def _latents(task: str, num_classes: int) -> Iterator[tuple[int, Scene]]:
    """Every (class, scene) the task can produce, each as likely as the generator makes it (uniform)."""
    for c in range(num_classes):
        if task == "motion":
            yield c, scene_for(c, task, lambda n: 0)
            continue
        for i in range(len(_other_group(c // len(AXES)))):
            yield c, scene_for(c, task, lambda n: i)


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
    """The best accuracy a model seeing only ``evidence`` can reach (Bayes-optimal) on the class (top-1),
    on the noun alone and on the verb alone, and chance on the class (1/classes)."""

    evidence: str
    ceiling: float
    noun: float
    verb: float
    chance: float


def _ceiling(latents: list[tuple[Hashable, Hashable]]) -> float:
    """The Bayes-optimal accuracy of guessing the target from the evidence, over equally likely
    (evidence, target) pairs: for each thing the evidence can show, the target most often behind it."""
    seen: dict[Hashable, Counter] = defaultdict(Counter)
    for shown, target in latents:
        seen[shown][target] += 1
    return sum(max(counts.values()) for counts in seen.values()) / len(latents)


def oracles(task: str, num_classes: int | None = None) -> dict[str, Oracle]:
    """Each kind of evidence's ceilings on ``task`` with its first ``num_classes`` classes (all by
    default), computed by enumerating the task's equally likely latent scenes."""
    n = max_classes(task) if num_classes is None else num_classes
    if not 2 <= n <= max_classes(task):
        raise ValueError(f"num_classes must be in [2, {max_classes(task)}] for task {task!r}, got {n}")
    latents = list(_latents(task, n))
    out = {}
    for name, show in EVIDENCE.items():
        shown = [show(scene) for _, scene in latents]
        out[name] = Oracle(name, _ceiling(list(zip(shown, (c for c, _ in latents)))),
                           _ceiling(list(zip(shown, (class_parts(c, task)[0] for c, _ in latents)))),
                           _ceiling(list(zip(shown, (class_parts(c, task)[1] for c, _ in latents)))), 1.0 / n)
    return out


def format_oracles(task: str, num_classes: int | None = None) -> str:
    """The oracles as a Markdown table."""
    rows = oracles(task, num_classes)
    n = max_classes(task) if num_classes is None else num_classes
    lines = [f"task {task!r}, {n} classes (chance {1 / n:.3f})", "",
             "| evidence | ceiling top-1 | noun | verb |", "|---|---|---|---|"]
    lines += [f"| {o.evidence} | {o.ceiling:.3f} | {o.noun:.3f} | {o.verb:.3f} |" for o in rows.values()]
    return "\n".join(lines)


def task_id(task: str) -> str:
    """A short digest of what ``task``'s videos show: the objects (:func:`objects_id`), each class's name
    and the scenes it is drawn from. Videos, shards and clips of a task record it and are remade when
    the task's definition changes."""
    _check_task(task)
    scenes = [[c, class_name(c, task), [list(o) for o in scene.objects]]
              for c, scene in _latents(task, max_classes(task))]
    table = json.dumps([task, objects_id(), scenes])
    return hashlib.sha256(table.encode()).hexdigest()[:12]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


__all__ = ["APPEARANCES", "LUMA_WEIGHTS", "luma", "objects_id",
           "DIRECTIONS", "HORIZONTAL", "VERTICAL", "AXES", "FORWARD", "BACKWARD", "WARM", "COOL", "TASKS",
           "Scene", "Oracle", "max_classes", "class_parts", "task_id", "class_name", "object_name", "scene_for", "oracles", "format_oracles",
           "EVIDENCE"]
