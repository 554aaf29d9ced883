"""Every project command shown in the README and the docs, checked against the command itself: the
module exists and is a console script or a door in ``workflows/``, and every flag written is one its
``--help`` lists. (Once every job CLI has ``--print-config``, the values can be checked the same way.)"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
from functools import cache

import pytest

from .markdown import README, commands, console_scripts, pages

ALL = [c for page in pages() for c in commands(page)]


@cache
def help_text(module: str) -> str:
    """``--help`` of the module's ``main``, run in this process (one import per module, no subprocess)."""
    main = importlib.import_module(module).main
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
            main()
    finally:
        sys.argv = argv
    assert stop.value.code == 0, f"{module} --help exited {stop.value.code}"
    return out.getvalue()


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
