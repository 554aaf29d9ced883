"""The binding task's facts, cheaply (no training): what the rendered pixels show, what each kind of
evidence can decide, and the labelled held-out split from another seed."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from pipelines.datasets import read_dataset
from pipelines.synthetic import SynthConfig, made_dataset, render_scene, write_dataset
from pipelines.synthetic_tasks import (APPEARANCES, DIRECTIONS, FORWARD, HORIZONTAL, LUMA_WEIGHTS, WARM, class_parts,
                                       luma, max_classes, objects_id, oracles, scene_for, task_id)

H, W, F = 32, 42, 8


def _mask(frame: np.ndarray, appearance: int) -> np.ndarray:
    return (frame == np.array(APPEARANCES[appearance][1], np.uint8)).all(-1)


def _motion(clip: np.ndarray, appearance: int) -> int:
    """The direction an appearance's pixels move between frames 3 and 4 (the best-overlapping shift)."""
    a, b = _mask(clip[3], appearance), _mask(clip[4], appearance)
    best = max(((axis, s) for axis in (0, 1) for s in range(-4, 5) if s),
               key=lambda t: (np.roll(a, t[1], axis=t[0]) & b).sum())
    axis, s = best
    return {(1, 1): 0, (1, -1): 1, (0, 1): 2, (0, -1): 3}[(axis, int(np.sign(s)))]


def _observe(clip: np.ndarray) -> tuple[frozenset, frozenset, dict]:
    """From pixels alone: the appearances present, the motions present, and which appearance moves how."""
    present = [a for a in range(len(APPEARANCES)) if _mask(clip[3], a).sum() > 8 and _mask(clip[4], a).sum() > 8]
    bound = {a: _motion(clip, a) for a in present}
    return frozenset(present), frozenset(bound.values()), bound


def test_the_objects_differ_in_hue_alone_and_stand_out_from_the_background_in_luma():
    lumas = [luma(rgb) for _, rgb, _ in APPEARANCES]
    assert max(lumas) - min(lumas) < 0.1  # isoluminant
    assert len({shape for _, _, shape in APPEARANCES}) == 1  # one shape
    assert len({rgb for _, rgb, _ in APPEARANCES}) == len({name for name, _, _ in APPEARANCES}) == len(APPEARANCES)
    # the hues are far apart: a colour-seeing expert has plenty to tell them apart by
    rgb = np.array([c for _, c, _ in APPEARANCES], float)
    assert min(np.abs(a - b).max() for i, a in enumerate(rgb) for b in rgb[i + 1:]) > 60
    # a luma-only viewer still sees the objects: no background pixel comes near their luma
    rng = np.random.default_rng(3)
    for c in range(max_classes("binding")):
        clip = render_scene(rng, scene_for(c, "binding", lambda n: int(rng.integers(n))), 8, H, W)
        painted = np.zeros(clip.shape[:3], bool)
        for _, colour, _ in APPEARANCES:
            painted |= (clip == np.array(colour, np.uint8)).all(-1)
        y = clip.astype(float) @ np.array(LUMA_WEIGHTS)
        assert painted.any() and y[~painted].max() < min(lumas) - 20
        assert np.abs(y[painted] - 118).max() < 0.1


def test_a_dataset_of_other_objects_is_not_reused(tmp_path, monkeypatch):
    cfg = SynthConfig(dataset="ssv2", num_classes=2, videos_per_class=1, size=32, frames=4)
    written = write_dataset(cfg, tmp_path / "d")
    assert json.loads((tmp_path / "d" / "synthetic.json").read_text())["task_id"] == task_id("motion")
    assert made_dataset(cfg, tmp_path / "d")["videos"] == written["videos"]
    assert made_dataset(SynthConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "d") is None  # other settings
    assert made_dataset(cfg, tmp_path / "nothing") is None
    monkeypatch.setattr("pipelines.synthetic.task_id", lambda task: "other-objects")
    assert made_dataset(cfg, tmp_path / "d") is None  # the same settings, other objects or task definition


def test_the_digests_follow_the_appearance_table_and_the_task_definition(monkeypatch):
    before, tasks_before = objects_id(), {t: task_id(t) for t in ("motion", "binding")}
    assert before == objects_id() and len(before) == 12 and len(set(tasks_before.values())) == 2
    monkeypatch.setattr("pipelines.synthetic_tasks.APPEARANCES", APPEARANCES[:-1] + (("magenta", (188, 68, 192), "square"),))
    assert objects_id() != before
    assert all(task_id(t) != tasks_before[t] for t in tasks_before)
    monkeypatch.undo()
    monkeypatch.setattr("pipelines.synthetic_tasks.WARM", (0, 1, 2))  # another definition of the verb
    assert task_id("binding") != tasks_before["binding"] and task_id("motion") == tasks_before["motion"]


def test_pixels_bind_appearance_to_motion_and_nothing_less_decides_the_labels():
    rng = np.random.default_rng(5)
    by_appearance, by_motion = defaultdict(set), defaultdict(set)
    unbound = defaultdict(lambda: defaultdict(set))  # (appearances, motions) -> noun/verb/class -> seen
    seen = 0
    for _ in range(240):
        c = int(rng.integers(max_classes("binding")))
        scene = scene_for(c, "binding", lambda n: int(rng.integers(n)))
        clip = render_scene(rng, scene, 24, H, W)[::3]
        appearances, motions, bound = _observe(clip)
        if len(appearances) < 2:  # an object cut by the frame's edge in frame 3 or 4: nothing to read there
            continue
        seen += 1
        noun, verb = class_parts(c, "binding")
        # the noun is exactly "the hue that moves forward", the verb "the way the warm hue moves"
        assert [x for x, m in bound.items() if m in FORWARD] == [noun]
        assert [m for x, m in bound.items() if x in WARM] == [verb]
        # one warm and one cool object, moving apart along one axis
        assert len({x in WARM for x in appearances}) == 2 and len({m // 2 for m in motions}) == 1 and len(motions) == 2
        by_appearance[appearances].add(c)
        by_motion[motions].add(c)
        for name, value in (("class", c), ("noun", noun), ("verb", verb)):
            unbound[(appearances, motions)][name].add(value)
    assert seen > 200
    # the same appearances, or the same motions, come with several classes; both seen unbound narrow the
    # class, the noun and the verb each to two, never to one
    mean = lambda groups: np.mean([len(v) for v in groups.values()])  # noqa: E731
    assert mean(by_appearance) > 2 and mean(by_motion) > 4
    for name in ("class", "noun", "verb"):
        assert max(len(v[name]) for v in unbound.values()) == 2 and np.mean([len(v[name]) for v in unbound.values()]) > 1.5


def test_objects_on_one_axis_keep_to_their_own_lanes():
    rng = np.random.default_rng(2)
    for c in range(max_classes("binding")):
        noun, _ = class_parts(c, "binding")
        for _ in range(10):
            clip = render_scene(rng, scene_for(c, "binding", lambda n: int(rng.integers(n))), 8, H, W)
            mine = np.any([_mask(f, noun) for f in clip], axis=0)  # (H, W): every pixel the noun's object covers
            other = np.any([_mask(f, a) for f in clip for a in range(len(APPEARANCES)) if a != noun], axis=0)
            across = 1 if c % 2 == 0 else 0  # horizontal motion: rows are the lanes; vertical: columns
            lanes = [set(np.flatnonzero(m.any(axis=across))) for m in (mine, other)]
            assert lanes[0] and lanes[1] and not lanes[0] & lanes[1]  # neither ever hides the other


def test_single_frame_position_is_the_same_for_both_horizontal_directions():
    rng = np.random.default_rng(1)
    occupancy = {}
    for d in HORIZONTAL:
        occ = np.zeros(6)
        for _ in range(60):
            scene = scene_for(d, "motion", lambda n: int(rng.integers(n)))  # appearance 0, direction d
            clip = render_scene(rng, scene, 12, H, W)
            for f in (0, 11):  # the first and last frames, where a design without wrapping would leak
                occ += np.add.reduceat(_mask(clip[f], 0).sum(0), np.linspace(0, W, 7).astype(int)[:-1])
        occupancy[d] = occ / occ.sum()
    assert np.abs(occupancy[0] - occupancy[1]).max() < 0.06  # one frame: no hint of the direction


def test_oracles_from_the_definition():
    b = oracles("binding")
    ceilings = {k: (o.ceiling, o.noun, o.verb) for k, o in b.items()}
    assert ceilings["full video"] == (1.0, 1.0, 1.0)
    # one frame shows which hues, not which moves forward nor how the warm one moves
    assert ceilings["one frame"] == pytest.approx((1 / 4, 1 / 2, 1 / 4))
    assert ceilings["shuffled frames"] == pytest.approx((1 / 2, 1 / 2, 1 / 2))  # the axis, not the senses
    assert ceilings["appearance only"] == pytest.approx((1 / 4, 1 / 2, 1 / 4))
    assert ceilings["motion only"] == pytest.approx((1 / len(APPEARANCES), 1 / len(APPEARANCES), 1 / 2))
    # seen apart, neither the noun nor the verb: binding is what is missing, for each head
    assert ceilings["appearance + motion (summed)"] == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert b["one frame"].chance == pytest.approx(1 / 12)
    m = oracles("motion")
    assert m["appearance + motion (summed)"].ceiling == 1.0  # one object: the sum is enough
    assert (m["appearance only"].ceiling, m["appearance only"].noun) == pytest.approx((1 / len(DIRECTIONS), 1.0))
    assert oracles("motion", 8)["motion only"].ceiling == pytest.approx(1 / 2)  # 2 appearances x 4 directions
    with pytest.raises(ValueError, match="num_classes"):
        oracles("binding", 13)


def test_binding_layouts_with_a_heldout_split_from_another_seed(tmp_path):
    cfg = SynthConfig(dataset="ssv2", task="binding", num_classes=4, videos_per_class=1, size=32, frames=8,
                      heldout_per_class=1)
    data = write_dataset(cfg, tmp_path / "ssv2")
    held = read_dataset("ssv2", data["videos"], data["annotations"], "heldout")
    train = read_dataset("ssv2", data["videos"], data["annotations"], "train")
    assert sorted(r.labels["label"] for r in held.rows) == [0, 1, 2, 3]
    assert not {r.source_id for r in held.rows} & {r.source_id for r in train.rows}
    names = json.loads((tmp_path / "ssv2" / "labels" / "labels.json").read_text())
    assert "Moving red disc from left to right past a cool disc moving from right to left" in names
    # the held-out videos come from another generator: not the bytes of a training video
    train_bytes = {open(r.path, "rb").read() for r in train.rows}
    assert all(open(r.path, "rb").read() not in train_bytes for r in held.rows)
    ek = write_dataset(cfg.__class__(**{**cfg.__dict__, "dataset": "ek100"}), tmp_path / "ek100")
    rows = read_dataset("ek100", ek["videos"], ek["heldout_annotations"], "heldout").rows
    assert sorted((r.labels["noun"], r.labels["verb"]) for r in rows) == sorted(class_parts(c, "binding") for c in range(4))
    with pytest.raises(ValueError, match="num_classes"):
        SynthConfig(task="binding", num_classes=24)
