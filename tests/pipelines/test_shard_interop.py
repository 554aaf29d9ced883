"""The shards read by the ecosystem's WebDataset readers: ``webdataset`` with its default ``.decode()`` and
``ray.data.read_webdataset`` get every sample with its label from ``.cls`` (ASCII, the convention);
shards of the old format (binary int64 ``.cls``) still load in this project's DALI loader."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from pipelines.loader import LoaderConfig, eval_loader, resolve_shards
from pipelines.manifest import read_manifest, shard_paths
from pipelines.schema import LABELS_EXT, LEGACY_LABELS_EXT
from pipelines.shards import Member, read_index, write_tar

from tests.support.pipelines_data import make_dataset, shards_without_ray


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interop")
    out = {}
    for ds in ("ssv2", "ek100"):
        d = make_dataset(ds, root, videos_per_class=1)
        out[ds] = root / f"{ds}_shards"
        shards_without_ray(ds, d["videos"], d["annotations"], "train", out[ds], per_shard=3)
    return out


def truth(folder: Path, column: str) -> dict[str, int]:
    m = read_manifest(str(folder), "train").to_pandas()
    return dict(zip(m["key"], m[column].astype(int)))


def test_webdataset_default_decode_reads_the_class_ids(shards):
    want = truth(shards["ssv2"], "label")
    tars = shard_paths(str(shards["ssv2"]), "train")
    assert len(tars) > 1
    got = {s["__key__"]: s["cls"] for s in wds.WebDataset(tars, shardshuffle=False).decode()}
    assert got == want
    sample = next(iter(wds.WebDataset(tars, shardshuffle=False).decode()))
    assert isinstance(sample["cls"], int) and sample["json"]["labels"]["label"] == sample["cls"]
    assert isinstance(sample["webm"], bytes) and sample["webm"][:4] == b"\x1a\x45\xdf\xa3"  # EBML (WebM)


def test_webdataset_reads_ek100_verb_and_noun(shards):
    verbs, nouns = truth(shards["ek100"], "verb_class"), truth(shards["ek100"], "noun_class")
    tars = shard_paths(str(shards["ek100"]), "train")
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert {s["__key__"]: s["verb.cls"] for s in samples} == verbs
    assert {s["__key__"]: s["noun.cls"] for s in samples} == nouns
    assert all("cls" not in s for s in samples)  # two heads: no ambiguous single class id


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_ray_read_webdataset_on_the_shard_folder(shards):
    import ray

    # The folder also holds .idx, Parquet and JSON: only the tars are WebDataset files.
    ds = ray.data.read_webdataset(str(shards["ssv2"]), file_extensions=["tar"])
    rows = ds.select_columns(["__key__", "cls"]).take_all()
    assert {r["__key__"]: r["cls"] for r in rows} == truth(shards["ssv2"], "label")
    ek = ray.data.read_webdataset(str(shards["ek100"]), file_extensions=["tar"]).take_all()
    assert {r["__key__"]: r["verb.cls"] for r in ek} == truth(shards["ek100"], "verb_class")
    assert {r["__key__"]: r["noun.cls"] for r in ek} == truth(shards["ek100"], "noun_class")


def to_legacy(src: Path, dst: Path) -> None:
    """Re-write ``src``'s shards in the old format: binary int64 labels under ``.cls``, no ``.lbl``."""
    dst.mkdir()
    for name in ("classes.json",):
        (dst / name).write_bytes((src / name).read_bytes())
    for tar_path in shard_paths(str(src), "train"):
        samples: dict[str, list[Member]] = {}
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                data = tar.extractfile(m).read()
                if ext == LABELS_EXT:
                    samples.setdefault(key, []).append(Member(f"{key}.{LEGACY_LABELS_EXT}", data))
                elif not ext.endswith("cls"):
                    samples.setdefault(key, []).append(Member(m.name, data))
        buf = io.BytesIO()
        index = write_tar(buf, list(samples.values()))
        (dst / Path(tar_path).name).write_bytes(buf.getvalue())
        (dst / Path(tar_path).name).with_suffix(".idx").write_text(index)


def test_old_binary_cls_shards_still_load(shards, tmp_path):
    legacy = tmp_path / "legacy"
    to_legacy(shards["ssv2"], legacy)
    tars = sorted(str(p) for p in legacy.glob("*.tar"))
    assert set(read_index(Path(tars[0]).with_suffix(".idx").read_text())[0]) == {"webm", "nf", "cls", "json"}
    assert resolve_shards(tars, "train").labels_ext == LEGACY_LABELS_EXT
    assert resolve_shards(str(shards["ssv2"]), "train").labels_ext == LABELS_EXT
    cfg = LoaderConfig(num_frames=4, img_size=32, batch_size=4, eval_clips=1, eval_crops=1)
    got = {k: int(v) for b in eval_loader(tars, "train", cfg=cfg) for k, v in zip(b["key"], b["label"])}
    assert got == truth(shards["ssv2"], "label")
    new = {k: int(v) for b in eval_loader(shards["ssv2"], "train", cfg=cfg) for k, v in zip(b["key"], b["label"])}
    assert new == got
