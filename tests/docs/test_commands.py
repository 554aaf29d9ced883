"""Every project command shown in the README and the docs, checked against the command itself: the
module exists and is a console script or a door in ``workflows/``, every flag written is one its
``--help`` lists, and the command as written, with ``--print-config`` appended, parses: every value is
one the command takes (exit 0) and each flag written is printed as set by a flag. ``--print-config``
reads no file the command names, so the paths shown need not exist; all of it runs in this process."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
from functools import cache

import pytest

from .markdown import README, ROOT, commands, console_scripts, pages

ALL = [c for page in pages() for c in commands(page)]
DOORS = {f"workflows.{p.stem}" for p in (ROOT / "workflows").glob("*.py")} - {"workflows.__init__"}


def run_main(module: str, args: tuple[str, ...]) -> tuple[int, str, str]:
    """The module's ``main`` run in this process on ``args`` (as ``sys.argv``, no subprocess): exit code
    (returned or raised, as argparse's ``--help`` does), stdout, stderr."""
    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [module, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main()
            except SystemExit as stop:
                code = stop.code
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@cache
def help_text(module: str) -> str:
    """``--help`` of the module's ``main`` (one run per module)."""
    code, out, err = run_main(module, ("--help",))
    assert code == 0, f"{module} --help exited {code}: {err}"
    return out


def test_the_readme_shows_one_command_per_stage():
    shown = {c.module for c in commands(README)}
    scripts = console_scripts()
    for stage in ("cast-synthetic", "cast-preprocess", "cast-train-ssv2", "cast-batch-infer", "cast-predict",
                  "cast-serve", "cast-register"):
        assert scripts[stage] in shown, f"the README shows no {stage} command"


@pytest.mark.parametrize("cmd", ALL, ids=lambda c: f"{c.page}:{c.line[:60]}")
def test_the_flags_shown_are_the_commands_flags(cmd):
    listed = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", help_text(cmd.module)))
    unknown = sorted(cmd.flags() - listed)
    assert not unknown, f"{cmd.page}: `{cmd.line}` passes {unknown}, which {cmd.module} --help does not list"


@pytest.mark.parametrize("cmd", [c for c in ALL if c.module in DOORS], ids=lambda c: f"{c.page}:{c.line[:60]}")
def test_the_values_shown_parse(cmd, tmp_path, monkeypatch):
    """The command as written plus ``--print-config``: exit 0, one line per setting, and every flag
    written printed with the source ``flag``. Run in an empty folder: the relative paths shown do not
    exist there, and ``--print-config`` must not need them."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(cmd.module, (*cmd.args, "--print-config"))
    assert code == 0, f"{cmd.page}: `{cmd.line} --print-config` exited {code}: {err.strip()}"
    sources = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.strip()}
    for written in cmd.flags():
        name = written.removeprefix("--").removeprefix("no-").replace("-", "_")
        assert sources.get(name) == "flag", f"{cmd.page}: `{cmd.line}`: {written} is not printed as set by a flag"
    assert list(tmp_path.iterdir()) == [], f"`{cmd.line} --print-config` wrote {list(tmp_path.iterdir())}"
