"""The one flag builder (``workflows.cli.flags``) and every job command line built with it: defaults shown
once, argument groups, choices, ``--print-config`` with each value's source, the program name the user
typed, a wrong value as one error line with exit 2, help on every flag."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import pytest

from workflows.cli.flags import CommandLine, flag, program_name


@dataclass(frozen=True)
class Toy:
    videos: tuple[str, ...] = field(metadata=flag("video files", positional=True))
    model: str = field(metadata=flag("the model", group="model"))
    top_k: int = field(default=5, metadata=flag("classes per video", group="output"))
    clips: int | None = field(default=None, metadata=flag("temporal views", none="the checkpoint's", group="model"))
    device: str = field(default="auto", metadata=flag("where to run", choices=("auto", "cpu", "gpu")))
    json: bool = field(default=False, metadata=flag("JSON lines instead of a table", group="output"))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=flag("two values"))
    secret: int = field(default=0, metadata=flag("set by the program", cli=False))


def toy(monkeypatch, argv0: str = "pytest") -> CommandLine:
    monkeypatch.setattr(sys, "argv", [argv0])
    return CommandLine(Toy, "cast-toy", "/repo/workflows/toy.py", description="A toy.")


def test_values_sources_types_and_groups(monkeypatch, capsys):
    command = toy(monkeypatch)
    parsed = command.parse(["a.mp4", "b.mp4", "--model", "m", "--clips", "2", "--json", "--betas", "0.5", "0.6"])
    assert parsed.values == {"videos": ("a.mp4", "b.mp4"), "model": "m", "top_k": 5, "clips": 2, "device": "auto",
                             "json": True, "betas": (0.5, 0.6), "secret": 0}
    assert parsed.sources["clips"] == "flag" and parsed.sources["top_k"] == "default"
    assert command.parse(["a", "--model", "m", "--clips", "none"]).values["clips"] is None
    help_text = command.parser.format_help()
    at = [help_text.index(s) for s in ("\nmodel:", "\n  --clips", "\noutput:", "\n  --json")]
    assert at == sorted(at)  # each group's flags under its title, groups in the order of their fields
    assert "--secret" not in help_text and "--print-config" in help_text


def test_each_default_is_shown_once_with_words_for_none(monkeypatch):
    help_text = " ".join(toy(monkeypatch).parser.format_help().split())
    assert "classes per video (default: 5)" in help_text
    assert "temporal views (default: the checkpoint's)" in help_text
    assert "two values (default: 0.9 0.999)" in help_text and "(default: off)" in help_text
    assert help_text.count("(default:") == 5 and "(default: None)" not in help_text
    assert "the model (required)" in help_text


@pytest.mark.parametrize("argv, says", [(["a", "--model", "m", "--top-k", "2.5"], "top_k: expected int, got '2.5'"),
                                        (["a", "--model", "m", "--device", "tpu"], "invalid choice: 'tpu'"),
                                        (["a"], "the following arguments are required: --model"),
                                        (["a", "--model", "m", "--json", "yes"], "unrecognized arguments: yes")])
def test_a_wrong_value_is_one_error_line_and_exit_2(monkeypatch, capsys, argv, says):
    with pytest.raises(SystemExit) as e:
        toy(monkeypatch).parse(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("cast-toy: error: ") and says in err


@pytest.mark.parametrize("argv0, prog", [("/venv/bin/cast-toy", "cast-toy"), ("workflows/toy.py", "toy.py"),
                                         ("/x/pytest/__main__.py", "cast-toy"), ("-c", "cast-toy")])
def test_the_program_name_is_what_the_user_typed(monkeypatch, argv0, prog):
    assert toy(monkeypatch, argv0).parser.prog == prog
    assert program_name("cast-toy", "/repo/workflows/toy.py") == prog


def test_a_field_without_help_is_refused_when_the_command_is_built():
    @dataclass
    class Bare:
        x: int = 1

    with pytest.raises(TypeError, match=r"fields without help: \['x'\]"):
        CommandLine(Bare, "cast-bare")


def test_layers_are_the_defaults_shown_and_the_sources_printed(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cast-toy"])
    command = CommandLine(Toy, "cast-toy", layers=[("recipe toy.yaml", {"top_k": 7})])
    assert "(default: 7)" in command.parser.format_help()
    parsed = command.parse(["a", "--model", "m", "--print-config"])
    assert parsed.print_config and parsed.values["top_k"] == 7 and parsed.sources["top_k"] == "recipe toy.yaml"
    lines = {line.split()[0]: line.split()[-1] for line in command.format_config(parsed).splitlines()}
    assert (lines["top_k"], lines["model"], lines["device"]) == ("toy.yaml", "flag", "default")


# -- the job command lines ----------------------------------------------------------------------------------
DOORS = ("batch_infer", "predict", "preprocess", "synthetic", "stamp_checkpoint", "balanced_measure", "register",
         "serve", "request", "reproduce", "pretrain_experts", "demo")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    import importlib

    from workflows.training.command import command_line

    return {**{door: importlib.import_module(f"workflows.{door}").command_line().parser for door in DOORS},
            **{f"train_{d}": command_line(d).parser for d in ("ssv2", "k400", "ek100")}}


def test_every_door_is_built_by_the_builder():
    """Every entry point in ``workflows/`` is one of the doors above (or a training door), and none builds
    an argparse parser of its own."""
    from tests.docs.markdown import ROOT

    doors = {p.stem for p in (ROOT / "workflows").glob("*.py")} - {"__init__"}
    assert doors == set(DOORS) | {"train_ssv2", "train_k400", "train_ek100"}
    for door in doors:
        assert "ArgumentParser(" not in (ROOT / "workflows" / f"{door}.py").read_text(), door


def test_every_job_command_line_has_help_on_every_flag_and_print_config(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    for name, parser in _parsers().items():
        actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert all(a.help for a in actions), (name, [a.dest for a in actions if not a.help])
        assert "--print-config" in parser.format_help(), name
        help_text = " ".join(parser.format_help().split())
        assert "(default: None)" not in help_text and "(default: (default" not in help_text, name
        assert "(default: )" not in help_text, name


@pytest.mark.parametrize("command", [*DOORS, "train_ssv2"])
def test_installed_command_names(monkeypatch, command):
    from tests.docs.markdown import console_scripts

    (prog,) = [name for name, module in console_scripts().items() if module == f"workflows.{command}"]
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{prog}"])
    assert _parsers()[command].prog == prog
    script = command + ".py"
    monkeypatch.setattr(sys, "argv", [f"workflows/{script}"])
    assert _parsers()[command].prog == script


def test_print_config_of_the_inference_and_preprocessing_commands(tmp_path, capsys):
    from workflows.batch_infer import main as batch_infer_main
    from workflows.predict import main as predict_main
    from workflows.preprocess import main as preprocess_main

    assert batch_infer_main(["--model", "m", "--input", "i", "--out", "o", "--top-k", "3", "--print-config"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["top_k"][1:] == ["3", "flag"] and lines["batch_size"][-1] == "default"
    assert predict_main(["v.mp4", "--model", "m", "--print-config"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["model"][1:] == ['"m"', "flag"] and lines["top_k"][1:] == ["5", "default"]
    assert preprocess_main(["--dataset", "ssv2", "--videos", "v", "--annotations", "a", "--split", "train",
                            "--out", "o", "--print-config"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["decode_device"][1:] == ['"auto"', "cast-preprocess"] and lines["split"][-1] == "flag"


def test_print_config_of_the_other_doors_touches_no_file(tmp_path, capsys):
    """``--print-config`` on files that do not exist: each value and its source, a lower layer's name
    (``--full``'s profile), the extra flags, lists typed as one comma separated value; nothing read."""
    from workflows import balanced_measure, register, reproduce, request

    def printed(main, argv):
        assert main([*argv, "--print-config"]) == 0
        return {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}

    lines = printed(reproduce.main, ["--full", "--variants", "cast,spatial,temporal", "--no-gate", "--num-cpus", "2"])
    assert lines["seeds"] == ["[0,", "1,", "2,", "3,", "4]", "--full"] and lines["gate"] == ["false", "flag"]
    assert lines["variants"][-1] == "flag" and lines["num_cpus"] == ["2", "flag"]
    assert printed(reproduce.main, ["--full", "--seeds", "7"])["seeds"] == ["[7]", "flag"]  # a flag wins
    missing = str(tmp_path / "no" / "such.json")
    lines = printed(balanced_measure.main, [missing, "--ek100-figures", "verb_top1,action_top1"])
    assert lines["ek100_figures"] == ['["verb_top1",', '"action_top1"]', "flag"] and lines["out"] == ["null", "default"]
    assert printed(register.main, [missing, "--dataset", "k400"])["dataset"] == ['"k400"', "flag"]
    assert printed(request.main, [missing, "-o", str(tmp_path / "r.json")])["out"][-1] == "flag"
    assert list(tmp_path.iterdir()) == []


def test_a_value_the_config_refuses_is_one_line_and_exit_2(capsys):
    from workflows import reproduce, serve

    assert serve.main(["models:/m@champion", "--port", "70000"]) == 2
    assert capsys.readouterr().err == "cast-serve: error: --port must be 1..65535, got 70000\n"
    assert serve.main(["path/to/checkpoint"]) == 2  # a folder: cast-register it first
    assert "not an MLflow model URI" in capsys.readouterr().err
    assert reproduce.main(["--seeds", "1,1"]) == 2
    assert capsys.readouterr().err.startswith("cast-reproduce: error: seeds must be distinct")
