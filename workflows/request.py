"""Write the JSON request for a served model (``cast-serve``) from video files, to send with
``curl -d @request.json``.

    cast-request clip.webm other.mp4 > request.json      # the videos' bytes (base64), column "video"
    cast-request --path /data/clip.mp4 s3://bucket/b.mp4 > request.json   # paths the server reads itself

A video inlined on the command line (``-d "$(base64 clip.webm)"``) exceeds the shell's argument limit for
any clip over ~96 KB; a file has no such limit. A file that cannot be read is one line and exit 2.
"""

from __future__ import annotations

import json
import sys

from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.inference.config import RequestConfig


def command_line() -> CommandLine:
    return CommandLine(RequestConfig, "cast-request", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    return command_line().run(argv, write_request)


def write_request(parsed: Parsed) -> int:
    """The job: read the videos (or take their paths), write the request to ``--out``."""
    cfg: RequestConfig = parsed.config
    from workflows.inference.pyfunc import request_body

    try:
        text = json.dumps(request_body(list(cfg.videos), by_path=cfg.path))
    except OSError as e:
        return user_error(parsed.prog, f"{e.filename}: {e.strerror}")
    if cfg.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(cfg.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
