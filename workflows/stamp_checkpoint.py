"""Write the training/inference contract into a checkpoint that lacks it (one made before training wrote
it, or converted from the official weights): the dataset, label heads and evaluation views inference reads
from ``cast.json``'s ``extra`` (vocab.CONTRACT_KEYS). Views default to the dataset's recipe, as training's.

    cast-stamp-checkpoint path/to/checkpoint --dataset ssv2 [--preset tiny] [--test-clips 2 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cast_model.vocab import DATASETS, EVAL_VIEW_KEYS, SAMPLINGS
from workflows.cli.common import user_error


def recipe_contract(dataset: str, heads: tuple[str, ...] | list[str], preset: str | None = None,
                    **views: Any) -> dict[str, Any]:
    """The contract training would write for ``dataset`` (its recipe's evaluation views, ``views`` on top)."""
    from workflows.training.config import load_recipe

    recipe = load_recipe(dataset, preset)
    values = {k: recipe[k] for k in EVAL_VIEW_KEYS} | {k: v for k, v in views.items() if v is not None}
    return {"dataset": dataset, "heads": list(heads), **values}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cast-stamp-checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint folder (cast.json + model.safetensors)")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="the dataset the model was trained on")
    p.add_argument("--preset", default=None, help="the recipe preset it was trained with (its test views)")
    p.add_argument("--sampling", choices=SAMPLINGS, default=None, help="default: the recipe's")
    p.add_argument("--sampling-rate", type=int, default=None, help="default: the recipe's")
    p.add_argument("--test-clips", type=int, default=None, help="default: the recipe's")
    p.add_argument("--test-crops", type=int, choices=(1, 3), default=None, help="default: the recipe's")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The ``cast-stamp-checkpoint`` command."""
    a = parse_args(argv)
    from cast_model import CheckpointError
    from cast_model.checkpoint import read_checkpoint_meta, update_extra
    from workflows.training.config import TrainConfigError

    try:
        labels = read_checkpoint_meta(a.checkpoint).get("labels")
        if not labels:
            raise CheckpointError(f"{a.checkpoint}: the checkpoint has no label map (its heads)")
        contract = recipe_contract(a.dataset, tuple(labels), a.preset, sampling=a.sampling,
                                   sampling_rate=a.sampling_rate, test_clips=a.test_clips, test_crops=a.test_crops)
        update_extra(Path(a.checkpoint), contract)
    except (CheckpointError, TrainConfigError) as e:
        return user_error("stamp_checkpoint", e)
    print(f"{a.checkpoint}: {contract}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
