"""The shared vocabulary (cast_model.vocab), the one classes.json reader, and the checkpoint fields
training writes for inference."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cast_model import CAST, CASTConfig, save_checkpoint
from cast_model.vocab import (CONTRACT_KEYS, DATASETS, EK100_HEADS, HEADS, SINGLE_HEAD, as_heads, head_prefix,
                              is_action, label_key, view_average)
from pipelines.manifest import LabelMapError, read_label_map
from workflows.training.config import TrainConfig, TrainConfigError, load_recipe
from workflows.training.config import read_label_map as train_label_map
from workflows.training.loop import checkpoint_extra
from workflows.stamp_checkpoint import main as stamp_main


def test_names():
    assert DATASETS == ("ssv2", "k400", "ek100") and HEADS == {"single": SINGLE_HEAD, "verb_noun": EK100_HEADS}
    assert [head_prefix(h) for h in ("label", "verb")] == ["", "verb_"]
    assert label_key("noun") == "label_noun" and is_action(("verb", "noun")) and not is_action(SINGLE_HEAD)


def test_view_average_is_the_mean_softmax_of_each_videos_views():
    logits = torch.randn(2 * 3, 5)
    expect = torch.stack([logits[3 * b:3 * b + 3].softmax(-1).mean(0) for b in range(2)])
    torch.testing.assert_close(view_average(logits, 3), expect)
    assert set(as_heads(logits)) == {"label"} and as_heads({"verb": logits})["verb"] is logits


def test_vocab_imports_without_torch():
    code = "import sys, cast_model.vocab, pipelines.datasets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_label_map_reader(tmp_path):
    with pytest.raises(LabelMapError, match="classes.json is missing"):
        read_label_map(tmp_path)
    (tmp_path / "classes.json").write_text("[1, 2]")
    with pytest.raises(TrainConfigError, match="expected"):
        train_label_map(tmp_path)
    (tmp_path / "classes.json").write_text(json.dumps({"label": {0: "a", 1: "b"}}))
    assert read_label_map(str(tmp_path)) == {"label": {"0": "a", "1": "b"}}


def test_checkpoint_records_what_inference_reads():
    cfg = TrainConfig.from_dict(load_recipe("ek100", None) | dict(
        dataset="ek100", shards="/s", val_shards="/v", head="verb_noun", sampling="dense", sampling_rate=2,
        test_clips=2, test_crops=1))
    extra = checkpoint_extra(cfg, "run1", {"val_top1": 0.5})
    assert set(CONTRACT_KEYS) <= set(extra)
    assert extra == {"run_id": "run1", "val_top1": 0.5, "dataset": "ek100", "heads": ["verb", "noun"],
                     "sampling": "dense", "sampling_rate": 2, "test_clips": 2, "test_crops": 1}


def test_inference_refuses_a_checkpoint_without_the_contract_until_it_is_stamped(tmp_path, capsys):
    """No name regex, no recipe: a checkpoint that does not record its dataset and views is one line
    naming what is missing and the command that adds it (exit 2); stamped, it runs."""
    from workflows.inference.model import model_from_folder, resolve_model
    from workflows.inference.classify import views_for
    from workflows.batch_infer import main as batch_infer_main

    labels = {"label": {"0": "a", "1": "b"}}
    ckpt = save_checkpoint(tmp_path / "cast-ssv2", CAST(CASTConfig.preset("tiny", num_classes=2)), labels,
                           extra={"test_clips": 2})
    with pytest.raises(Exception, match="does not record dataset, heads, sampling, sampling_rate, test_crops.*"
                                        "cast-stamp-checkpoint"):
        model_from_folder(ckpt)
    (tmp_path / "in").mkdir()
    assert batch_infer_main(["--model", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cast-stamp-checkpoint" in err

    assert stamp_main([str(ckpt), "--dataset", "ssv2", "--test-crops", "1"]) == 0
    source = resolve_model(str(ckpt))
    assert source.dataset == "ssv2" and source.extra["heads"] == ["label"]
    views = views_for(source)
    recipe = load_recipe("ssv2", None)
    assert (views.sampling, views.stride, views.clips, views.crops) == (recipe["sampling"], recipe["sampling_rate"],
                                                                        recipe["test_clips"], 1)
