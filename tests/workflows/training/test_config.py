"""Typed training configs: recipe YAML and flags coerced to the fields' types or refused naming the key
(exit 2, before Ray); every flag with help and choices; ``--print-config`` with each value's source."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflows.cli.flags import FlagError, coerce
from workflows.training.command import command_line, parse_config
from workflows.training.config import TrainConfig, field_types
from workflows.training.launch import main

REPO = Path(__file__).resolve().parents[3]


def recipe_dir(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    text = (REPO / "configs" / "ssv2.yaml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    d = tmp_path / "configs"
    d.mkdir()
    (d / "ssv2.yaml").write_text(text)
    return d


def argv(tmp_path: Path, *extra: str, config_dir: Path | None = None) -> list[str]:
    return ["--shards", str(tmp_path), "--val-shards", str(tmp_path),
            *(["--config-dir", str(config_dir)] if config_dir else []), *extra]


def test_yaml_scientific_notation_is_a_float(tmp_path):
    d = recipe_dir(tmp_path, ("base_lr: 1.0e-3", "base_lr: 1e-3"))  # YAML 1.1 reads 1e-3 as a string
    cfg = parse_config("ssv2", argv(tmp_path, config_dir=d)).config
    assert cfg.base_lr == 0.001 and isinstance(cfg.base_lr, float)
    assert isinstance(cfg.epochs, int) and cfg.betas == (0.9, 0.999)


def test_a_wrong_type_in_the_recipe_is_exit_2_naming_the_key_before_ray(tmp_path, capsys):
    import ray

    d = recipe_dir(tmp_path, ("epochs: 50 ", "epochs: fifty "))
    assert main("ssv2", argv(tmp_path, config_dir=d)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "epochs: expected int, got 'fifty' (from recipe ssv2.yaml)" in err
    assert not ray.is_initialized()


@pytest.mark.parametrize("flag, says", [(("--epochs", "5.5"), "epochs: expected int, got '5.5'"),
                                        (("--hflip", "maybe"), "unrecognized arguments: maybe"),
                                        (("--precision", "fp8"), "invalid choice"),
                                        (("--preset", "huge"), "invalid choice: 'huge'"),
                                        (("--betas", "0.9"), "expected 2 arguments")])
def test_a_wrong_flag_is_exit_2_naming_it(tmp_path, capsys, flag, says):
    with pytest.raises(SystemExit) as e:
        parse_config("ssv2", argv(tmp_path, *flag))
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_every_flag_has_help_and_the_closed_sets_have_choices():
    import dataclasses

    from cast_model import PRESETS
    from cast_model.precision import PRECISIONS
    from cast_model.vocab import SAMPLINGS

    actions = {a.dest: a for a in command_line("ssv2").parser._actions if a.dest != "help"}
    no_flag = {"dataset", "head", "labels", "fault_kill_step"}  # set by the entry point, the recipe, tests
    assert {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("cli", True)} == no_flag
    assert set(field_types()) - no_flag <= set(actions)
    assert all(a.help for a in actions.values())
    for name, choices in {"preset": sorted(PRESETS), "precision": PRECISIONS, "sampling": SAMPLINGS,
                          "test_crops": (1, 3)}.items():
        assert tuple(actions[name].choices) == tuple(choices)
    assert actions["hflip"].option_strings == ["--hflip", "--no-hflip"]
    groups = [g.title for g in command_line("ssv2").parser._action_groups]
    assert groups[2:] == ["what to train on", "model", "optimisation (the paper's recipe)", "data and augmentation",
                          "cluster", "run bookkeeping"]
    help_text = " ".join(command_line("ssv2").parser.format_help().split())
    assert "training epochs (default: 50)" in help_text  # the recipe's value, shown once


def test_print_config_shows_each_value_and_its_source(tmp_path, capsys):
    assert main("ssv2", argv(tmp_path, "--preset", "tiny", "--epochs", "3", "--print-config")) == 0
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()}
    assert lines["epochs"][1:] == ["3", "flag"]
    assert lines["batch_size"][1:] == ["8", "preset", "tiny", "of", "ssv2.yaml"]
    assert lines["weight_decay"][1:] == ["0.05", "recipe", "ssv2.yaml"]
    assert lines["seed"][1:] == ["0", "default"]
    assert lines["experiment"][1:] == ['"cast-ssv2"', "derived"]


def test_clip_grad_none_from_a_flag_overrides_the_recipe(tmp_path):
    d = recipe_dir(tmp_path, ("clip_grad: null", "clip_grad: 5.0"))
    assert parse_config("ssv2", argv(tmp_path, config_dir=d)).config.clip_grad == 5.0
    parsed = parse_config("ssv2", argv(tmp_path, "--clip-grad", "none", config_dir=d))
    assert parsed.config.clip_grad is None and parsed.sources["clip_grad"] == "flag"


def test_coercion_is_lossless_or_an_error():
    hints = field_types()
    assert coerce("epochs", 5.0, hints["epochs"]) == 5
    assert coerce("register", "true", hints["register"]) is True
    assert coerce("gpus_per_worker", None, hints["gpus_per_worker"]) is None
    assert coerce("gpus_per_worker", "1", hints["gpus_per_worker"]) == 1.0
    for key, value in (("epochs", 5.5), ("epochs", True), ("run_name", 3), ("betas", [0.9]), ("base_lr", "x")):
        with pytest.raises(FlagError, match=f"^{key}: expected"):
            coerce(key, value, hints[key])
    cfg = parse_config("ssv2", ["--shards", "a", "--val-shards", "b"]).config
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_batch_infer_print_config_and_defaults_defined_once(tmp_path, capsys):
    from workflows.batch_infer import command_line as batch_infer_command
    from workflows.batch_infer import main as batch_infer_main
    from workflows.inference.config import InferConfig

    video = tmp_path / "v.webm"
    video.write_bytes(b"x")
    assert batch_infer_main(["--model", "models:/cast-ssv2@champion", "--input", str(video), "--out",
                             str(tmp_path / "out"), "--top-k=3", "--print-config"]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()}
    assert rows["top_k"][1:] == ["3", "flag"] and rows["batch_size"][1:] == ["8", "default"]
    assert not (tmp_path / "out").exists()  # nothing ran
    a = batch_infer_command().parse(["--model", "m", "--input", "i", "--out", "o"]).values
    d = InferConfig(model=str(tmp_path), input=str(video), out="o")
    assert (a["batch_size"], a["top_k"], a["precision"], a["flush_rows"], a["progress_every"]) == (
        d.batch_size, d.top_k, d.precision, d.flush_rows, d.progress_every)


def test_recipe_fields_have_one_home(tmp_path):
    """The recipe's settings have no dataclass default: every recipe sets them all, and a recipe that
    leaves one out is an error naming it (no silent second default)."""
    import dataclasses

    import yaml

    from workflows.training.command import parse_config
    from workflows.training.config import TrainConfig, TrainConfigError
    from workflows.training.recipe_yaml import CONFIG_DIR

    no_default = {f.name for f in dataclasses.fields(TrainConfig) if f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING} - {"dataset", "shards", "val_shards"}
    for dataset in ("ssv2", "k400", "ek100"):
        recipe = yaml.safe_load((CONFIG_DIR / f"{dataset}.yaml").read_text())["recipe"]
        assert set(recipe) == no_default, dataset
    broken = yaml.safe_load((CONFIG_DIR / "ssv2.yaml").read_text())
    del broken["recipe"]["epochs"]
    (tmp_path / "ssv2.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(TrainConfigError, match=r"missing from the recipe and the flags: \['epochs'\]"):
        parse_config("ssv2", ["--shards", "s", "--val-shards", "v", "--config-dir", str(tmp_path)])


def test_an_unknown_recipe_key_is_refused_by_name(tmp_path):
    from workflows.training.config import TrainConfigError

    d = recipe_dir(tmp_path, ("  epochs: 50 ", "  lerning_rate: 1\n  epochs: 50 "))
    with pytest.raises(TrainConfigError, match=r"unknown training settings: \['lerning_rate'\]"):
        parse_config("ssv2", argv(tmp_path, config_dir=d))


def test_print_config_lists_the_settings_in_the_schema_order(tmp_path, capsys):
    import dataclasses

    assert main("ssv2", argv(tmp_path, "--print-config")) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [f.name for f in dataclasses.fields(TrainConfig)]
