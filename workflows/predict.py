"""What is in these videos? Each video's top-5 classes from a registered model or a local checkpoint.

    cast-predict clip.mp4 other.webm --model models:/cast-ssv2@champion
    cast-predict clip.mp4 --model path/to/checkpoint --json
    python workflows/predict.py ...          (the same, from a checkout)

The same decode, multi-view sampling and softmax averaging as batch inference and the served model
(``workflows.inference.classify``), in this process, without Ray.

Errors have one style: one line on stderr per thing that could not be used, ``cast-predict: WHAT: why``
(the program name as typed), and exit code 2. A video that cannot be used (missing, a directory or fifo
named like a video, a symlink loop, zero bytes, garbage, an absurd header...) is
``cast-predict: VIDEO: REASON: detail`` with the reject
reason batch inference gives it (``pipelines.schema.REJECT_REASONS``); it is still listed in the output
with that reason, and the other videos are predicted. A wrong flag or model is refused before any video
is read. Exit code 0: every video was predicted.
"""

from __future__ import annotations

import json
import sys

from cast_model.vocab import head_prefix, is_action
from workflows.cli.common import quiet_download_bars, user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.inference.config import InferConfigError, PredictConfig


def command_line() -> CommandLine:
    return CommandLine(PredictConfig, "cast-predict", __file__, description=__doc__)


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
    return command_line().run(argv, predict)


def predict(parsed: Parsed) -> int:
    """The job: load the model, classify ``parsed.config.videos``, print the table or JSON lines."""
    cfg: PredictConfig = parsed.config
    quiet_download_bars()
    from workflows.inference.classify import VideoClassifier, views_for
    from workflows.inference.model import resolve_model
    from workflows.inference.views import ViewFlags

    try:
        source = resolve_model(cfg.model)
        views = views_for(source, ViewFlags(cfg.test_clips, cfg.test_crops, cfg.sampling, cfg.sampling_rate))
        classifier = VideoClassifier.load(source, cfg.top_k, views, cfg.device, cfg.precision)
    except (InferConfigError, RuntimeError) as e:
        return user_error(parsed.prog, e)
    results = classifier.classify(list(cfg.videos))
    for r in results:
        if r["reason"]:
            print(f"{parsed.prog}: {r['video']}: {r['reason']}: {r['detail']}".splitlines()[0], file=sys.stderr)
    if cfg.json:
        for r in results:
            print(json.dumps(r | {"model": source.name, "model_version": source.version}))
    else:
        print(f"{source.name} v{source.version}: {views.clips} clip(s) x {views.crops} crop(s), {views.sampling}")
        print(format_table(results, source.heads))
    return 2 if any(r["reason"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
