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
def _parsers() -> dict[str, argparse.ArgumentParser]:
    from workflows import batch_infer, predict, preprocess, synthetic
    from workflows.training.command import command_line

    return {"batch_infer": batch_infer.command_line().parser, "predict": predict.command_line().parser,
            "preprocess": preprocess.command_line().parser, "synthetic": synthetic.command_line().parser,
            **{f"train_{d}": command_line(d).parser for d in ("ssv2", "k400", "ek100")}}


def test_every_job_command_line_has_help_on_every_flag_and_print_config(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    for name, parser in _parsers().items():
        actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert all(a.help for a in actions), (name, [a.dest for a in actions if not a.help])
        if name != "synthetic":
            assert "--print-config" in parser.format_help(), name
        help_text = " ".join(parser.format_help().split())
        assert "(default: None)" not in help_text and "(default: (default" not in help_text, name


@pytest.mark.parametrize("command, prog", [("predict", "cast-predict"), ("batch_infer", "cast-batch-infer"),
                                           ("preprocess", "cast-preprocess"), ("train_ssv2", "cast-train-ssv2"),
                                           ("synthetic", "cast-synthetic")])
def test_installed_command_names(monkeypatch, command, prog):
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
