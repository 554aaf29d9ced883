"""What every command line of the project shares: renamed flags that keep their old spelling, one way to
report a user error."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence


class DeprecatedAlias(argparse.Action):
    """A ``store`` action whose option strings listed in ``deprecated`` still work for one release, with a
    one-line warning naming the new spelling (the first option string)::

        p.add_argument("--test-clips", "--num-clips", dest="num_clips", type=int,
                       action=DeprecatedAlias, deprecated=("--num-clips",))
    """

    def __init__(self, option_strings: Sequence[str], dest: str, deprecated: Sequence[str] = (), **kwargs: Any):
        unknown = set(deprecated) - set(option_strings)
        if unknown:
            raise ValueError(f"deprecated spellings {sorted(unknown)} are not option strings of {dest}")
        self.deprecated = tuple(deprecated)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string in self.deprecated:
            print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.option_strings[0]}",
                  file=sys.stderr)
        setattr(namespace, self.dest, values)


def quiet_download_bars() -> None:
    """MLflow draws a progress bar per artifact download: useful on a terminal, noise in a log or a pipe,
    where it lands before the command's own lines. Off unless stderr is a terminal; a value the user set
    in ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` wins. Call from a command's ``main`` only."""
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def bool_values_as_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> list[str]:
    """One shape for boolean settings in every command line: ``--x`` / ``--no-x``
    (``argparse.BooleanOptionalAction``). The old typed spelling ``--x true|false`` (training's) is
    rewritten to it for one release, with a one-line warning; a value that is no boolean is a flag error.
    For parsers without positional arguments (a value after a boolean flag is taken as its value)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {o for a in parser._actions if isinstance(a, argparse.BooleanOptionalAction)
             for o in a.option_strings if not o.startswith("--no-")}
    out: list[str] = []
    i = 0
    while i < len(argv):
        name, eq, text = argv[i].partition("=")
        if name in flags and (eq or (i + 1 < len(argv) and not argv[i + 1].startswith("-"))):
            if not eq:
                i, text = i + 1, argv[i + 1]
            try:
                value = _bool_text(text)
            except argparse.ArgumentTypeError:
                parser.error(f"{name[2:].replace('-', '_')}: expected bool (use {name} or --no-{name[2:]}), "
                             f"got {text!r}")
            new = name if value else f"--no-{name[2:]}"
            print(f"{parser.prog}: warning: {name} {text} is deprecated, use {new}", file=sys.stderr)
            out.append(new)
        else:
            out.append(argv[i])
        i += 1
    return out


def _bool_text(text: str) -> bool:
    value = text.lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes", "on")


def user_error(prog: str, err: object) -> int:
    """Report a user error the one way every command line does: one line ``<prog>: error: <what>`` on
    stderr (argparse's own shape for a wrong flag; a multi-line message is joined with "; "). Returns 2,
    the exit code of a user error."""
    first, *rest = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    print(" ".join([f"{prog}: error: {first}", "; ".join(rest)]).rstrip(), file=sys.stderr)
    return 2
