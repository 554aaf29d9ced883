"""The preprocessing job on real VP9 / H.264 videos in each native layout, broken ones among them."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.datasets import AnnotationError
from pipelines.manifest import read_label_map, read_manifest, read_rejects
from pipelines.preprocess_job import PreprocessConfig, run_preprocess
from workflows.preprocess import main as preprocess_main

from tests.support.pipelines_data import SMALL, make_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("native")
    return {ds: make_dataset(ds, root, bad=3) for ds in ("ssv2", "k400", "ek100")}


def ssv2_truth(labels_dir: str, split: str) -> dict[str, int]:
    names = json.loads((Path(labels_dir) / "labels.json").read_text())
    entries = json.loads((Path(labels_dir) / f"{split}.json").read_text())
    return {e["id"]: int(names[e["template"].replace("[", "").replace("]", "")]) for e in entries}


def ssv2_config(d: dict, out, **kw) -> PreprocessConfig:
    return PreprocessConfig(dataset="ssv2", videos=d["videos"], annotations=d["annotations"], split="train",
                            out=str(out), short_side=40, max_samples_per_shard=5, **kw)


def manifest_rows(out) -> list[tuple]:
    m = read_manifest(str(out)).to_pandas()
    return sorted(zip(m["split"], m["key"], m["source_id"], m["label"], m["num_frames"]))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ssv2_out(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ssv2_shards")
    run_preprocess(ssv2_config(data["ssv2"], out))
    return out


def test_every_good_sample_reaches_the_shards_with_its_labels(data, ssv2_out):
    truth = ssv2_truth(data["ssv2"]["annotations"], "train")
    broken = data["ssv2"]["broken"]
    good = {k: v for k, v in truth.items() if k not in broken}
    m = read_manifest(str(ssv2_out), "train").to_pandas()
    assert dict(zip(m["source_id"], m["label"])) == good
    assert (m["num_frames"] == SMALL["frames"]).all() and m["key"].is_unique
    tars = sorted(ssv2_out.glob("train-*.tar"))
    assert len(tars) == -(-len(good) // 5) >= 3 and sorted(m["shard"].unique()) == [t.name for t in tars]
    seen = {}
    for t in tars:
        assert t.with_suffix(".idx").read_text().startswith(f"v1.2 {(m['shard'] == t.name).sum()}\n")
        with tarfile.open(t) as tar:
            names = tar.getnames()
            for i in range(0, len(names), 5):  # video (MJPEG .avi by default), nf, lbl, cls, json of one key, adjacent
                key = names[i].split(".")[0]
                members = [n.split(".", 1) for n in names[i:i + 5]]
                assert members == [[key, e] for e in ("avi", "nf", "lbl", "cls", "json")]
                lbl = np.frombuffer(tar.extractfile(names[i + 2]).read(), "<i8")
                cls = int(tar.extractfile(names[i + 3]).read().decode("ascii"))  # WebDataset's ASCII class id
                meta = json.loads(tar.extractfile(names[i + 4]).read())
                assert meta["labels"] == {"label": int(lbl[0])} == {"label": cls}
                assert meta["num_frames"] == SMALL["frames"]
                seen[meta["source_id"]] = cls
    assert seen == good
    assert read_label_map(str(ssv2_out)) == {
        "label": {v: k for k, v in json.loads((Path(data["ssv2"]["annotations"]) / "labels.json").read_text()).items()}}


def test_every_bad_input_is_a_reject_with_its_reason(data, ssv2_out):
    r = read_rejects(str(ssv2_out), "train").to_pandas()
    assert dict(zip(r["source_id"], r["reason"])) == data["ssv2"]["broken"]
    assert set(data["ssv2"]["broken"].values()) == {"missing", "truncated", "empty", "undecodable"}


def test_rerun_is_a_no_op(data, ssv2_out):
    before = snapshot(ssv2_out)
    result = run_preprocess(ssv2_config(data["ssv2"], ssv2_out))
    assert (result.written, result.rejected, result.already_done) == (0, 0, len(ssv2_truth(data["ssv2"]["annotations"], "train")))
    assert snapshot(ssv2_out) == before


class Crash(RuntimeError):
    pass


def test_crash_then_rerun_gives_the_same_manifest(data, ssv2_out, tmp_path):
    commits = []

    def crash_after_first(shard: str) -> None:
        commits.append(shard)
        raise Crash(shard)

    with pytest.raises(Crash):  # one write in flight at most: the crash leaves shards to do
        run_preprocess(ssv2_config(data["ssv2"], tmp_path, max_pending_writes=1), on_commit=crash_after_first)
    assert 1 <= len(list(tmp_path.glob("_parts/train-0*.parquet"))) < len(list(ssv2_out.glob("train-*.tar")))
    # what a killed writer leaves: a half-written temp file and a tar without its commit marker
    (tmp_path / ".train-000007.tar.tmp-deadbeef").write_bytes(b"partial")
    (tmp_path / "train-000042.tar").write_bytes(b"no marker")
    result = run_preprocess(ssv2_config(data["ssv2"], tmp_path))
    assert result.already_done >= 5 and result.written > 0
    assert manifest_rows(tmp_path) == manifest_rows(ssv2_out)
    assert not (tmp_path / "train-000042.tar").exists() and not list(tmp_path.glob(".*tmp*"))
    markers = sorted(p.stem for p in tmp_path.glob("_parts/train-0*.parquet"))
    assert markers == sorted(p.stem for p in tmp_path.glob("train-*.tar")) == sorted(p.stem for p in tmp_path.glob("train-*.idx"))


def test_wrong_config_fails_before_any_work(data, tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        ssv2_config(dict(data["ssv2"], videos=str(tmp_path / "nope")), tmp_path)
    with pytest.raises(ValueError, match="codec"):
        ssv2_config(data["ssv2"], tmp_path, codec="theora")
    assert preprocess_main(["--dataset", "ssv2", "--videos", str(tmp_path / "nope"), "--annotations",
                            data["ssv2"]["annotations"], "--split", "train", "--out", str(tmp_path)]) == 2
    (tmp_path / "classes.json").write_text(json.dumps({"label": {"0": "something else"}}))
    with pytest.raises(AnnotationError, match="other classes"):
        run_preprocess(ssv2_config(data["ssv2"], tmp_path))
    assert not list(tmp_path.glob("*.tar"))


def test_k400_through_the_entry_point_to_a_file_uri(data, tmp_path):
    d = data["k400"]
    uri = (tmp_path / "k400").as_uri()
    for videos, ann, split in ((d["videos"], d["annotations"], "train"), (d["val_videos"], d["val_annotations"], "val")):
        assert preprocess_main(["--dataset", "k400", "--videos", videos, "--annotations", ann, "--split", split,
                                "--out", uri, "--short-side", "40", "--max-samples-per-shard", "4", "--codec", "vp9",
                                "--progress-every", "0"]) == 0
    names = sorted({r["label"] for r in csv.DictReader(open(d["annotations"]))})
    assert read_label_map(uri) == {"label": {str(i): n for i, n in enumerate(names)}}
    m = read_manifest(uri).to_pandas()
    expected = {}
    for ann in (d["annotations"], d["val_annotations"]):
        for r in csv.DictReader(open(ann)):
            sid = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}"
            if sid not in d["broken"]:
                expected[sid] = names.index(r["label"])
    assert dict(zip(m["source_id"], m["label"])) == expected
    assert set(m["split"]) == {"train", "val"} and m["key"].is_unique
    assert any(k.startswith("-") for k in m["key"])  # ids may start with '-'
    r = read_rejects(uri).to_pandas()
    assert dict(zip(r["source_id"], r["reason"])) == d["broken"]
    assert len(list((tmp_path / "k400").glob("train-*.tar"))) >= 3
    with tarfile.open(next((tmp_path / "k400").glob("train-*.tar"))) as tar:
        assert tar.getnames()[0].endswith(".webm")


def test_ek100_segments_map_released_frames_and_handle_the_end(data, tmp_path):
    d = data["ek100"]
    run_preprocess(PreprocessConfig(dataset="ek100", videos=d["videos"], annotations=d["annotations"],
                                    split="train", out=str(tmp_path), short_side=40, max_samples_per_shard=6))
    rows = {r["narration_id"]: r for r in csv.DictReader(open(d["annotations"]))}
    m = pq.read_table(tmp_path / "manifest.parquet").to_pandas().set_index("source_id")
    good = set(rows) - set(d["broken"])
    assert set(m.index) == good
    for sid in good:
        assert (m.loc[sid, "verb_class"], m.loc[sid, "noun_class"]) == (int(rows[sid]["verb_class"]), int(rows[sid]["noun_class"]))
    # annotation frames count at 50 fps, the MP4s run at 8 fps: a 16-frame action is 16 frames again
    clamped = m[m["clamped"]]
    assert len(clamped) == 1 and (m[~m["clamped"]]["num_frames"] == SMALL["frames"]).all()
    assert clamped["num_frames"].iloc[0] == SMALL["frames"]  # cut at the end of the video
    r = read_rejects(str(tmp_path)).to_pandas()
    assert dict(zip(r["source_id"], r["reason"])) == d["broken"]
    assert "segment_out_of_range" in set(r["reason"])
    assert read_label_map(str(tmp_path))["verb"] == {str(i): f"move-{i}" for i in range(4)}
