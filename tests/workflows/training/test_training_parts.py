"""Training without Ray: recipes, config validation, mixup on clips, schedule, optimizer groups, train
state round trip, metrics. Fast: tiny tensors and a tiny CAST."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cast_model import CAST
from workflows.evaluation import metrics as M
from workflows.training import launch
from workflows.training.config import (TrainConfig, TrainConfigError, config_from_args, load_recipe, resolve,
                                       validate)
from workflows.training.recipe import (VideoMixup, build_criterion, build_model, build_optimizer, build_scheduler,
                                       total_loss)
from workflows.training.state import STATE_FILE, Progress, load_train_state, rng_state, save_train_state

LABELS = {"label": {str(i): f"class {i}" for i in range(4)}}
EK_LABELS = {"verb": {str(i): f"v{i}" for i in range(3)}, "noun": {str(i): f"n{i}" for i in range(5)}}


def fake_shards(folder: Path, split: str, labels=LABELS, n: int = 2, idx: bool = True) -> Path:
    """A folder with the file layout validation looks at (tar/idx names, classes.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{split}-{i:06d}.tar").write_bytes(b"")
        if idx:
            (folder / f"{split}-{i:06d}.idx").write_text("")
    (folder / "classes.json").write_text(json.dumps(labels))
    return folder


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = fake_shards(tmp_path / "shards", "train")
    fake_shards(folder, "validation")
    return folder


def args(shards: Path, *extra: str) -> list[str]:
    return ["--shards", str(shards), "--val-shards", str(shards), "--run-name", "r", *extra]


# -- recipes ------------------------------------------------------------------------------------------------
def test_recipes_hold_the_papers_values():
    ssv2, k400, ek100 = (load_recipe(d, None) for d in ("ssv2", "k400", "ek100"))
    assert (ssv2["epochs"], ssv2["drop_path"], ssv2["total_batch_size"], ssv2["mixup_prob"]) == (50, 0.3, 384, 0.9)
    assert (k400["epochs"], k400["drop_path"], k400["total_batch_size"], k400["mixup_prob"]) == (70, 0.2, 576, 0.5)
    assert (k400["sampling"], k400["sampling_rate"], k400["test_clips"], k400["test_crops"]) == ("dense", 4, 5, 3)
    assert ssv2["sampling"] == ek100["sampling"] == "uniform" and not ssv2["hflip"] and ek100["hflip"]
    assert ek100["head"] == "verb_noun" and ssv2["head"] == k400["head"] == "single"
    for r in (ssv2, k400, ek100):
        assert r["base_lr"] == 1e-3 and r["weight_decay"] == 0.05 and r["layer_decay"] == 0.75
        assert r["betas"] == [0.9, 0.999] and r["label_smoothing"] == 0.1 and r["warmup_epochs"] == 5
        assert (r["mixup"], r["cutmix"], r["mixup_switch_prob"], r["preset"]) == (0.8, 1.0, 0.0, "base")


def test_preset_overlay_then_flags(shards):
    cfg = config_from_args("ssv2", args(shards, "--preset", "tiny", "--epochs", "3", "--hflip"))
    tiny = load_recipe("ssv2", "tiny")
    assert cfg.preset == "tiny" and cfg.batch_size == tiny["batch_size"] and cfg.epochs == 3 and cfg.hflip
    assert cfg.drop_path == tiny["drop_path"]
    base = config_from_args("ssv2", args(shards, "--num-workers", "16"))
    # the paper's 16 GPUs x 6 clips x update_freq 4 = 384 and lr = 1e-3 * 384 / 256
    assert base.update_freq == 4 and math.isclose(base.lr, 1.5e-3)


# -- validation: every error before any work ---------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (("--batch-size", "6", "--total-batch-size", "16", "--num-workers", "1"), "not divisible"),
    (("--preset", "tiny", "--batch-size", "3", "--total-batch-size", "6", "--mixup-prob", "0.5"),
     "must be even"),
    (("--epochs", "0"), "epochs must be a positive integer"),
    (("--layer-decay", "1.5"), "layer_decay"),
    (("--storage-path", "relative/dir"), "storage_path must be an absolute path or a URI"),
    (("--clip-weights", "/nope/ViT-B-16.safetensors"), "clip_weights: /nope/ViT-B-16.safetensors does not exist"),
])
def test_config_errors(shards, extra, message):
    cfg = config_from_args("ssv2", args(shards, *extra))
    with pytest.raises(TrainConfigError, match=message):
        validate(cfg)


def test_shard_folder_errors(tmp_path, shards):
    with pytest.raises(TrainConfigError, match="is not a folder"):
        validate(config_from_args("ssv2", ["--shards", str(tmp_path / "missing"), "--val-shards", str(shards),
                                           "--run-name", "r"]))
    no_idx = fake_shards(tmp_path / "noidx", "train", idx=False)
    fake_shards(no_idx, "validation")
    with pytest.raises(TrainConfigError, match="without a DALI .idx"):
        validate(config_from_args("ssv2", args(no_idx)))
    with pytest.raises(TrainConfigError, match="no 'val-\\*.tar' shards"):
        validate(config_from_args("ssv2", args(shards, "--val-split", "val")))
    ek = fake_shards(tmp_path / "ek", "train", labels=EK_LABELS)
    fake_shards(ek, "validation", labels=EK_LABELS)
    with pytest.raises(TrainConfigError, match="trains heads \\['label'\\]"):
        validate(config_from_args("ssv2", args(ek)))
    validate(config_from_args("ek100", args(ek)))  # the right recipe accepts them


def test_cluster_fit_is_checked(shards):
    cfg = config_from_args("ssv2", args(shards, "--num-workers", "2", "--gpus-per-worker", "1"))
    with pytest.raises(TrainConfigError, match="2 workers x 1 GPUs requested, the Ray cluster has 0 GPUs"):
        resolve(cfg, cluster_gpus=0, cluster_cpus=8)
    with pytest.raises(TrainConfigError, match="CPUs requested"):
        resolve(dataclasses.replace(cfg, gpus_per_worker=0.0), cluster_gpus=0, cluster_cpus=1)
    auto = resolve(dataclasses.replace(cfg, gpus_per_worker=None), cluster_gpus=2, cluster_cpus=8)
    assert auto.gpus_per_worker == 1.0 and auto.labels == LABELS  # GPUs used when the cluster has them
    assert resolve(dataclasses.replace(cfg, gpus_per_worker=None), 0, 8).gpus_per_worker == 0.0


def test_entry_point_fails_before_ray(shards, capsys):
    import ray

    code = launch.main("ssv2", args(shards, "--epochs", "0"))
    assert code == 2 and "epochs must be a positive integer" in capsys.readouterr().err
    assert not ray.is_initialized()
    with pytest.raises(SystemExit):  # argparse: a flag that does not exist
        launch.main("ssv2", args(shards, "--learning-rate", "1"))


# -- recipe pieces --------------------------------------------------------------------------------------------
def tiny_cfg(shards: Path, *extra: str, labels=LABELS) -> TrainConfig:
    cfg = config_from_args("ssv2", args(shards, "--preset", "tiny", *extra))
    return dataclasses.replace(cfg, labels=labels)


def test_mixup_blends_clips_and_every_head_with_one_lambda(shards):
    cfg = tiny_cfg(shards, "--mixup-prob", "1", "--mixup-switch-prob", "0", "--label-smoothing", "0")
    mix = VideoMixup(cfg, {"verb": 3, "noun": 5})
    torch.manual_seed(0)
    np.random.seed(0)
    x = torch.randn(4, 3, 8, 16, 16)
    verb, noun = torch.tensor([0, 1, 2, 0]), torch.tensor([4, 3, 2, 1])
    mixed, t = mix(x.clone(), {"verb": verb, "noun": noun})
    lam = float(t["noun"][0, 4])  # noun 4 (clip 0) vs noun 1 (its mirror): the weight of clip 0's class
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    onehot = lambda y, n: torch.nn.functional.one_hot(y, n).float()  # noqa: E731
    for head, y, n in (("verb", verb, 3), ("noun", noun, 5)):
        torch.testing.assert_close(t[head], lam * onehot(y, n) + (1 - lam) * onehot(y.flip(0), n))


def test_cutmix_box_covers_every_frame_alike(shards):
    cfg = tiny_cfg(shards, "--mixup-prob", "1", "--mixup-switch-prob", "1")
    mix = VideoMixup(cfg, {"label": 4})
    np.random.seed(3)
    x = torch.randn(2, 3, 8, 32, 32)
    mixed, t = mix(x.clone(), {"label": torch.tensor([0, 1])})
    from_mirror = (mixed == x.flip(0))  # (B, C, T, H, W)
    box = from_mirror[0, 0, 0]
    assert 0 < int(box.sum()) < 32 * 32  # a proper box
    assert bool((from_mirror == box).all())  # the same box for every clip, channel and frame
    kept = 1 - box.float().mean()
    assert math.isclose(float(t["label"][0, 0]), kept * 0.9 + 0.1 / 4, rel_tol=1e-5)  # lam = kept area


def test_mixup_off_keeps_hard_labels_and_smoothed_ce(shards):
    cfg = tiny_cfg(shards, "--mixup-prob", "0")
    mix = VideoMixup(cfg, {"label": 4})
    x, y = torch.randn(3, 3, 8, 8, 8), torch.tensor([0, 1, 2])
    out, t = mix(x, {"label": y})
    assert out is x and t["label"] is y
    crit = build_criterion(cfg, mix.active)
    logits = {"label": torch.randn(3, 4)}
    expected = 0.9 * torch.nn.functional.cross_entropy(logits["label"], y) + \
        0.1 * -logits["label"].log_softmax(-1).mean(-1).mean()
    torch.testing.assert_close(total_loss(crit, logits, t), expected)


def test_schedule_warmup_then_cosine_with_layer_decay(shards):
    cfg = tiny_cfg(shards, "--base-lr", "0.256", "--total-batch-size", "16", "--warmup-lr", "0.0",
                   "--min-lr", "0.0")
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, total_steps=20, warmup_steps=4)
    head = next(g for g in opt.param_groups if g["lr_scale"] == 1.0)
    lrs = []
    for step in range(21):
        sched.step_update(step)
        lrs.append(head["lr"])
    peak = 0.256 * 16 / 256
    assert lrs[0] == 0.0 and math.isclose(lrs[2], peak / 2) and math.isclose(lrs[4], peak)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[20] < 1e-9
    assert math.isclose(lrs[12], peak / 2, rel_tol=1e-6)  # cosine half-way after the warmup prefix
    for g in opt.param_groups:  # timm applied layer decay to every group
        assert math.isclose(g["lr"], lrs[20] * g["lr_scale"], abs_tol=1e-12)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}  # none on biases/norms/positions


def test_train_state_round_trip(tmp_path, shards):
    cfg = tiny_cfg(shards)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, 10, 2)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)  # gives AdamW moments to save
    opt.step()
    sched.step_update(1)
    progress = Progress(epoch=1, batch_in_epoch=3, step=7, clips_seen=56)
    random.seed(5)
    save_train_state(tmp_path / "ck", model, opt, sched, scaler, progress, [rng_state()])
    expected_next = (torch.rand(3), np.random.rand(), random.random())
    torch.load(tmp_path / "ck" / STATE_FILE, weights_only=True)  # plain tensors and containers only

    torch.manual_seed(1)
    fresh = build_model(cfg)
    opt2 = build_optimizer(cfg, fresh)
    sched2 = build_scheduler(cfg, opt2, 10, 2)
    got = load_train_state(tmp_path / "ck", fresh, opt2, sched2, scaler, rank=0)
    assert got == progress
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for n, p in fresh.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, trained[n])
    assert opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    assert sched2.state_dict()["base_values"] == sched.state_dict()["base_values"]
    assert torch.equal(torch.rand(3), expected_next[0])  # the RNG streams continue where they were saved
    assert (np.random.rand(), random.random()) == expected_next[1:]


# -- metrics ---------------------------------------------------------------------------------------------------
def test_metrics(tmp_path):
    scores = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3]])
    labels = np.array([0, 1, 1, 2])
    assert M.topk_accuracy(scores, labels, 1) == 0.5
    assert M.topk_accuracy(scores, labels, 2) == 1.0
    cm = M.confusion_matrix(scores.argmax(1), labels, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]
    np.testing.assert_allclose(M.per_class_accuracy(cm), [1.0, 0.5, 0.0])
    verb, noun = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 1])
    assert M.action_accuracy(scores, verb, scores, noun) == 0.25  # only sample 0 has both right
    summary = M.classification_summary({"verb": scores, "noun": scores}, {"verb": verb, "noun": noun})
    assert summary["verb_top1"] == 0.5 and summary["noun_top1"] == 0.5 and summary["top1"] == 0.25
    png = M.plot_confusion_matrix(tmp_path / "cm.png", cm, ["a", "b", "c"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = M.write_per_class_csv(tmp_path / "pc.csv", cm, ["a", "b", "c"]).read_text().splitlines()
    assert csv[0] == "class_id,name,support,predicted,correct,precision,recall,f1"
    assert csv[2] == "1,b,2,2,1,0.5,0.5,0.5"
    with pytest.raises(ValueError, match="labels must lie"):
        M.topk_accuracy(scores, np.array([0, 1, 2, 3]))


def test_verb_noun_model_loss_sums_heads(shards):
    cfg = dataclasses.replace(tiny_cfg(shards, labels=EK_LABELS), head="verb_noun", dataset="ek100")
    model = build_model(cfg)
    assert isinstance(model, CAST) and model.config.num_verbs == 3 and model.config.num_nouns == 5
    out = model(torch.randn(1, 3, 8, 64, 64))
    y = {"verb": torch.tensor([2]), "noun": torch.tensor([4])}
    crit = build_criterion(cfg, False)
    torch.testing.assert_close(total_loss(crit, out, y), crit(out["verb"], y["verb"]) + crit(out["noun"], y["noun"]))
