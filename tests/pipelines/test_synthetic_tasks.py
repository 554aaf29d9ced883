"""The binding task's facts, cheaply (no training): what the rendered pixels show, what each kind of
evidence can decide, and the labelled held-out split from another seed."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from pipelines.datasets import read_dataset
from pipelines.synthetic import SynthConfig, made_dataset, render_scene, write_dataset
from pipelines.synthetic_tasks import (APPEARANCES, DIRECTIONS, HORIZONTAL, LUMA_WEIGHTS, class_parts, luma,
                                       max_classes, objects_id, oracles, scene_for)

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
    assert json.loads((tmp_path / "d" / "synthetic.json").read_text())["objects"] == objects_id()
    assert made_dataset(cfg, tmp_path / "d")["videos"] == written["videos"]
    assert made_dataset(SynthConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "d") is None  # other settings
    assert made_dataset(cfg, tmp_path / "nothing") is None
    monkeypatch.setattr("pipelines.synthetic.objects_id", lambda: "other-objects")
    assert made_dataset(cfg, tmp_path / "d") is None  # the same settings, painted with other objects


def test_the_objects_digest_follows_the_appearance_table(monkeypatch):
    before = objects_id()
    assert before == objects_id() and len(before) == 12
    monkeypatch.setattr("pipelines.synthetic_tasks.APPEARANCES", APPEARANCES[:-1] + (("magenta", (188, 68, 192), "square"),))
    assert objects_id() != before


def test_pixels_bind_appearance_to_motion_and_nothing_less_decides_the_class():
    rng = np.random.default_rng(5)
    by_appearance, by_motion, by_both = defaultdict(set), defaultdict(set), defaultdict(set)
    seen = 0
    for _ in range(240):
        c = int(rng.integers(max_classes("binding")))
        scene = scene_for(c, "binding", lambda n: int(rng.integers(n)))
        clip = render_scene(rng, scene, 24, H, W)[::3]
        appearances, motions, bound = _observe(clip)
        if len(appearances) < 2:  # the two objects overlap in frame 3 or 4: nothing to read there
            continue
        seen += 1
        a, d = class_parts(c, "binding")
        # the class is exactly "the appearance that moves horizontally, and which way"
        horizontal = [(x, m) for x, m in bound.items() if m in HORIZONTAL]
        assert horizontal == [(a, d)]
        assert len(appearances) == 2 and len(motions) == 2
        by_appearance[appearances].add(c)
        by_motion[motions].add(c)
        by_both[(appearances, motions)].add(c)
    assert seen > 200
    # the same appearances, the same motions, or both seen unbound, come with several classes; unbound
    # evidence narrows the class to the two objects' appearances with the one horizontal motion, never to one
    mean = lambda groups: np.mean([len(v) for v in groups.values()])  # noqa: E731
    assert mean(by_appearance) > 2 and mean(by_motion) > 4
    assert max(len(v) for v in by_both.values()) == 2 and mean(by_both) > 1.5


def test_single_frame_position_is_the_same_for_both_horizontal_directions():
    rng = np.random.default_rng(1)
    occupancy = {}
    for d in HORIZONTAL:
        occ = np.zeros(6)
        for _ in range(60):
            scene = scene_for(d, "binding", lambda n: int(rng.integers(n)))  # appearance 0, direction d
            clip = render_scene(rng, scene, 12, H, W)
            for f in (0, 11):  # the first and last frames, where a design without wrapping would leak
                occ += np.add.reduceat(_mask(clip[f], 0).sum(0), np.linspace(0, W, 7).astype(int)[:-1])
        occupancy[d] = occ / occ.sum()
    assert np.abs(occupancy[0] - occupancy[1]).max() < 0.06  # one frame: no hint of the direction


def test_oracles_from_the_definition():
    b = oracles("binding")
    assert b["full video"].ceiling == 1.0
    assert b["one frame"].ceiling == pytest.approx(1 / 4)  # which object and which way: unknown
    assert b["shuffled frames"].ceiling == pytest.approx(1 / 2)  # which object, not which way
    assert b["appearance only"].ceiling == pytest.approx(1 / 4)
    assert b["motion only"].ceiling == pytest.approx(1 / len(APPEARANCES))
    assert b["appearance + motion (summed)"].ceiling == pytest.approx(1 / 2)  # binding is what is missing
    assert b["one frame"].chance == pytest.approx(1 / 12)
    m = oracles("motion")
    assert m["appearance + motion (summed)"].ceiling == 1.0  # one object: the sum is enough
    assert m["appearance only"].ceiling == pytest.approx(1 / len(DIRECTIONS))
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
    assert "Moving red disc from left to right past another object moving vertically" in names
    # the held-out videos come from another generator: not the bytes of a training video
    train_bytes = {open(r.path, "rb").read() for r in train.rows}
    assert all(open(r.path, "rb").read() not in train_bytes for r in held.rows)
    ek = write_dataset(cfg.__class__(**{**cfg.__dict__, "dataset": "ek100"}), tmp_path / "ek100")
    rows = read_dataset("ek100", ek["videos"], ek["heldout_annotations"], "heldout").rows
    assert sorted((r.labels["noun"], r.labels["verb"]) for r in rows) == sorted(class_parts(c, "binding") for c in range(4))
    with pytest.raises(ValueError, match="num_classes"):
        SynthConfig(task="binding", num_classes=24)
