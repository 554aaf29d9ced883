"""Write the JSON request for a served model (``cast-serve``) from video files, to send with
``curl -d @request.json``.

    cast-request clip.webm other.mp4 > request.json      # the videos' bytes (base64), column "video"
    cast-request --path /data/clip.mp4 s3://bucket/b.mp4 > request.json   # paths the server reads itself

A video inlined on the command line (``-d "$(base64 clip.webm)"``) exceeds the shell's argument limit for
any clip over ~96 KB; a file has no such limit. A file that cannot be read is one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from workflows.cli.common import user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cast-request", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (or, with --path, paths/URIs)")
    p.add_argument("--path", action="store_true",
                   help="send the paths/URIs (column 'path', read by the server) instead of the files' bytes")
    p.add_argument("-o", "--out", default="-", help="file to write the request to ('-': stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from workflows.inference.pyfunc import request_body

    try:
        text = json.dumps(request_body(a.videos, by_path=a.path))
    except OSError as e:
        return user_error("cast-request", f"{e.filename}: {e.strerror}")
    if a.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
