"""What every command line of the project shares: one way to report a user error, quiet
download bars."""

from __future__ import annotations

import os
import sys


def quiet_download_bars() -> None:
    """MLflow draws a progress bar per artifact download: useful on a terminal, noise in a log or a pipe,
    where it lands before the command's own lines. Off unless stderr is a terminal; a value the user set
    in ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` wins. Call from a command's ``main`` only."""
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def user_error(prog: str, err: object) -> int:
    """Report a user error the one way every command line does: one line ``<prog>: error: <what>`` on
    stderr (argparse's own shape for a wrong flag; a multi-line message is joined with "; "). Returns 2,
    the exit code of a user error."""
    first, *rest = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    print(" ".join([f"{prog}: error: {first}", "; ".join(rest)]).rstrip(), file=sys.stderr)
    return 2
