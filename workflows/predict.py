"""What is in these videos? Each video's top-5 classes from a registered model or a local checkpoint.

    python -m workflows.predict clip.mp4 other.webm --model models:/cast-ssv2@champion
    python -m workflows.predict clip.mp4 --model path/to/checkpoint --json

The same decode, multi-view sampling and softmax averaging as batch inference and the served model
(``workflows.inference.classify``), in this process, without Ray.

Errors have one style: one line on stderr per thing that could not be used, ``predict: WHAT: why``, and
exit code 2. A video that cannot be used (missing, a directory or fifo named like a video, a symlink
loop, zero bytes, garbage, an absurd header...) is ``predict: VIDEO: REASON: detail`` with the reject
reason batch inference gives it (``pipelines.schema.REJECT_REASONS``); it is still listed in the output
with that reason, and the other videos are predicted. A wrong flag or model is refused before any video
is read. Exit code 0: every video was predicted.
"""

from __future__ import annotations

import argparse
import json
import sys

from cast_model.precision import PRECISIONS
from cast_model.vocab import SAMPLINGS, head_prefix, is_action
from workflows.cli.common import quiet_download_bars, user_error
from workflows.inference.config import DEVICES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workflows.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any container PyAV or DALI reads)")
    p.add_argument("--model", required=True,
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN/model, or a local checkpoint folder")
    p.add_argument("--top-k", type=int, default=5, help="classes listed per video (per head)")
    p.add_argument("--json", action="store_true", help="one JSON object per video on stdout instead of a table")
    p.add_argument("--test-clips", type=int, default=None, metavar="N",
                   help="temporal views (default: the checkpoint's)")
    p.add_argument("--test-crops", type=int, choices=[1, 3], default=None,
                   help="spatial views (default: the checkpoint's)")
    p.add_argument("--sampling", choices=SAMPLINGS, default=None, help="default: the checkpoint's")
    p.add_argument("--sampling-rate", type=int, default=None, help="dense sampling stride")
    p.add_argument("--device", choices=DEVICES, default="auto", help="model device; auto: a GPU if there is one")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on GPUs and on CPUs where bf16 matmuls measure faster, else fp32")
    a = p.parse_args(argv)
    for flag in ("top_k", "test_clips", "sampling_rate"):
        value = getattr(a, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    # Videos are not checked here: each bad one is a reject with its reason (see the module doc).
    return a


def format_table(results: list[dict], heads: tuple[str, ...]) -> str:
    """Per video: its name, then one line per rank with class id, probability and name for each head
    (EK100: verb, noun and action)."""
    prefixes = [head_prefix(h) for h in heads] + (["action_"] if is_action(heads) else [])
    lines = []
    for r in results:
        lines.append(r["video"])
        if r["reason"]:
            lines.append(f"  rejected: {r['reason']}: {r['detail']}")
            continue
        for p in prefixes:
            if p:
                lines.append(f"  {p[:-1]}")
            ids = r.get(f"{p}top_ids") or [f"{v}/{n}" for v, n in zip(r["action_top_verb_ids"],
                                                                      r["action_top_noun_ids"])]
            for rank, (i, prob, name) in enumerate(zip(ids, r[f"{p}top_probs"], r[f"{p}top_names"]), 1):
                lines.append(f"  {rank:>2}  {str(i):>9}  {prob:7.2%}  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    quiet_download_bars()
    from workflows.inference.classify import VideoClassifier, views_for
    from workflows.inference.config import InferConfigError
    from workflows.inference.model import resolve_model
    from workflows.inference.views import ViewFlags

    try:
        source = resolve_model(a.model)
        views = views_for(source, ViewFlags(a.test_clips, a.test_crops, a.sampling, a.sampling_rate))
        classifier = VideoClassifier.load(source, a.top_k, views, a.device, a.precision)
    except (InferConfigError, RuntimeError) as e:
        return user_error("predict", e)
    results = classifier.classify(a.videos)
    for r in results:
        if r["reason"]:
            print(f"predict: {r['video']}: {r['reason']}: {r['detail']}".splitlines()[0], file=sys.stderr)
    if a.json:
        for r in results:
            print(json.dumps(r | {"model": source.name, "model_version": source.version}))
    else:
        print(f"{source.name} v{source.version}: {views.clips} clip(s) x {views.crops} crop(s), {views.sampling}")
        print(format_table(results, source.heads))
    return 2 if any(r["reason"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
