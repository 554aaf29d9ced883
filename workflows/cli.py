"""What every command line of the project shares: renamed flags that keep their old spelling, one way to
report a user error."""

from __future__ import annotations

import argparse
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


def user_error(prog: str, err: object) -> int:
    """Report a user error the one way every command line does: one line ``<prog>: error: <what>`` on
    stderr (argparse's own shape for a wrong flag; a multi-line message is joined with "; "). Returns 2,
    the exit code of a user error."""
    first, *rest = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    print(" ".join([f"{prog}: error: {first}", "; ".join(rest)]).rstrip(), file=sys.stderr)
    return 2
