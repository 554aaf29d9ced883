"""Inputs that are not (good) videos stay out with a reason that says what they are: hostile shard
indices, links out of the dataset, ids listed twice with other labels, SSV2 videos that are not WebM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipelines.datasets import read_ssv2
from pipelines.encode import EncodeConfig
from pipelines.preprocess_job import _Work, duplicate_reason, process_row
from pipelines.schema import REJECT_REASONS, VideoRow
from pipelines.shards import read_index
from tests.support.real_video_cases import frames
from tests.support.real_videos import encode, require_ffmpeg
from workflows.inference.inputs import InputListing, _dedupe, _shard_records, record


@pytest.mark.parametrize("text, says", [
    ("", "empty index"),
    ("v1.2 1\nwebm -1536 100 a.webm json 0 10 a.json", "negative offset"),
    ("v1.2 1\nwebm 1536 -5 a.webm", "negative offset or size"),
    ("v1.2 2\nwebm 1536 100 a.webm\nwebm 1000 100 b.webm", "overlaps"),
    ("v1.2 2\nwebm 1536 100 a.webm", "index says 2 samples, lists 1"),
    ("v1.2 1\nwebm 1536 100", "groups of 'ext offset size name'"),
    ("garbage", "expected 'v1.2 <count>'"),
])
def test_a_hostile_index_is_a_clear_error(text, says):
    with pytest.raises(ValueError, match=says):
        read_index(text)


@pytest.mark.parametrize("text", ["", "v1.2 1\nwebm -1536 100 a.webm json 0 10 a.json"])
def test_a_shard_with_a_hostile_index_is_a_bad_index_reject_never_a_prediction(tmp_path, text):
    tar = tmp_path / "train-000000.tar"
    tar.write_bytes(b"\0" * 4096)
    (tmp_path / "train-000000.idx").write_text(text)
    records, rejects = _shard_records(pafs.LocalFileSystem(), str(tar), str(tar), ("label",))
    assert records == [] and [r["reason"] for r in rejects] == ["bad_index"]
    assert "train-000000.idx: ValueError:" in rejects[0]["detail"]


def test_an_id_listed_again_with_other_labels_is_reported_as_such():
    first = VideoRow("v1", "/x/v1.webm", {"label": 3})
    assert duplicate_reason(VideoRow("v1", "/x/v1.webm", {"label": 3}), first)["reason"] == "duplicate"
    other = duplicate_reason(VideoRow("v1", "/x/v1.webm", {"label": 5}), first)
    assert other["reason"] == "conflicting_labels" and "{'label': 5}" in other["detail"]
    assert {"duplicate", "conflicting_labels"} <= set(REJECT_REASONS)
    listing = _dedupe(InputListing("native", [record("v1", "/x", {"label": 3}), record("v1", "/x", {"label": 3}),
                                              record("v1", "/x", {"label": 5})], ("label",), None, None))
    assert len(listing.records) == 1
    assert [d["reason"] for d in listing.duplicates] == ["duplicate", "conflicting_labels"]


@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> bytes:
    require_ffmpeg()
    return encode(frames(8), tmp_path_factory.mktemp("hostile") / "v.mp4", ("-c:v", "libx264")).read_bytes()


def _videos_with_a_link_out(tmp_path: Path, video: bytes, link: str, real: str) -> Path:
    """A videos folder holding ``real`` and ``link``, a symlink to a video outside the folder."""
    videos, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    videos.mkdir(), elsewhere.mkdir()
    (elsewhere / "secret.mp4").write_bytes(video)
    os.symlink(elsewhere / "secret.mp4", videos / link)
    (videos / real).write_bytes(video)
    return videos


def test_a_link_out_of_the_videos_folder_is_refused_unless_allowed(tmp_path, small_video):
    videos = _videos_with_a_link_out(tmp_path, small_video, "v1.mp4", "v2.mp4")
    os.symlink("v2.mp4", videos / "v3.mp4")  # a link inside the folder is fine
    work = _Work(32, None, EncodeConfig(codec="mjpeg"), "cpu", 2, ("label",), videos_root=str(videos))
    rows = {n: VideoRow(n, str(videos / f"{n}.mp4"), {"label": 0}).to_record() for n in ("v1", "v2", "v3")}
    out = {n: process_row(r, work) for n, r in rows.items()}
    assert out["v1"]["reason"] == "outside_root" and "elsewhere" in out["v1"]["detail"]
    assert out["v2"]["reason"] == out["v3"]["reason"] == ""
    allowed = process_row(rows["v1"], _Work(32, None, EncodeConfig(codec="mjpeg"), "cpu", 2, ("label",)))
    assert allowed["reason"] == ""


def test_the_ssv2_reader_finds_mp4_and_mkv_too(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps(
        [{"id": str(i), "template": "Pushing [something]"} for i in (1, 2, 3, 4)]))
    for name in ("1.webm", "2.mp4", "3.mkv"):
        (tmp_path / name).write_bytes(b"x")
    paths = [Path(r.path).name for r in read_ssv2(str(tmp_path), str(tmp_path), "train").rows]
    assert paths == ["1.webm", "2.mp4", "3.mkv", "4.webm"]  # 4: missing, under the name SSV2 ships


def test_a_video_over_the_memory_budget_is_a_reject_not_an_oom_kill(small_video, tmp_path):
    (tmp_path / "v.mp4").write_bytes(small_video)
    row = VideoRow("v", str(tmp_path / "v.mp4"), {"label": 0}).to_record()
    out = process_row(row, _Work(32, None, EncodeConfig(codec="mjpeg"), "cpu", 2, ("label",), memory_budget=100_000))
    assert out["reason"] == "too_large" and "over the budget" in out["detail"]


def test_the_watchdog_stops_a_decode_whose_memory_grows_past_the_budget():
    import time

    import numpy as np

    from pipelines.decode import VideoDecodeError
    from pipelines.memory import MemoryWatch

    with MemoryWatch(budget=64 << 20, interval_s=0.01) as watch:
        watch.check()
        hog = np.ones(256 << 20, dtype=np.uint8)  # touched: resident
        time.sleep(0.1)
        with pytest.raises(VideoDecodeError) as e:
            watch.check()
        del hog
    assert e.value.reason == "too_large"


def test_batch_inference_refuses_a_link_out_of_its_input_folder(tmp_path, small_video):
    from workflows.inference.config import InferConfig
    from workflows.inference.inputs import list_inputs

    videos = _videos_with_a_link_out(tmp_path, small_video, "out.mp4", "in.mp4")
    model = "models:/cast@champion"  # only named: listing opens no model
    listing = list_inputs(InferConfig(model=model, input=str(videos), out=str(tmp_path / "o")))
    assert [Path(r["path"]).name for r in listing.records] == ["in.mp4"]
    assert [(Path(r["path"]).name, r["reason"]) for r in listing.rejects] == [("out.mp4", "outside_root")]
    allowed = list_inputs(InferConfig(model=model, input=str(videos), out=str(tmp_path / "o"), allow_outside_links=True))
    assert len(allowed.records) == 2 and not allowed.rejects
