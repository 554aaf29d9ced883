"""The demo's data cache: videos made once, and remade (with the shards made from them) when the objects
they show are no longer the task's."""

from __future__ import annotations

import json

import pytest

from workflows.training import demo


@pytest.fixture
def tiny_demo(monkeypatch):
    """The demo's video settings at their smallest: the cache logic is the same, the writing takes a second."""
    for name, value in (("NUM_CLASSES", 2), ("VIDEOS_PER_CLASS", 1), ("VIDEO_SIZE", 32), ("VIDEO_FRAMES", 4)):
        monkeypatch.setattr(demo, name, value)
    monkeypatch.setattr(demo, "log", lambda message: None)


def test_videos_are_reused_then_remade_with_their_shards_when_the_objects_change(tmp_path, tiny_demo, monkeypatch):
    videos, shards = tmp_path / "videos", tmp_path / "shards"
    first = demo.make_videos(videos, shards)
    shards.mkdir()
    (shards / "train-000000.tar").write_bytes(b"made from these videos")
    marker = (videos / "synthetic.json").stat().st_mtime_ns
    assert demo.make_videos(videos, shards) == first  # reused: nothing written, the shards kept
    assert (videos / "synthetic.json").stat().st_mtime_ns == marker and (shards / "train-000000.tar").is_file()

    monkeypatch.setattr("pipelines.synthetic.task_id", lambda task: "other-objects")
    again = demo.make_videos(videos, shards)
    assert json.loads((videos / "synthetic.json").read_text())["task_id"] == "other-objects"
    assert not shards.exists()  # stale: preprocessing would have resumed from them
    assert again["videos"] == first["videos"]
