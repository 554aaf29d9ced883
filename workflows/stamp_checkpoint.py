"""Write the training/inference contract into a checkpoint that lacks it (one made before training wrote
it, or converted from the official weights): the dataset, label heads and evaluation views inference reads
from ``cast.json``'s ``extra`` (vocab.CONTRACT_KEYS). Views default to the dataset's recipe, as training's.

    cast-stamp-checkpoint path/to/checkpoint --dataset ssv2 [--preset tiny] [--test-clips 2 ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from workflows.cli.common import user_error
from workflows.cli.flags import CommandLine, Parsed
from workflows.inference.config import StampConfig


def command_line() -> CommandLine:
    return CommandLine(StampConfig, "cast-stamp-checkpoint", __file__, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """The ``cast-stamp-checkpoint`` command."""
    return command_line().run(argv, stamp)


def stamp(parsed: Parsed) -> int:
    """The job: the recipe's contract (the flags' views on top) written into the checkpoint's ``cast.json``."""
    cfg: StampConfig = parsed.config
    from cast_model import CheckpointError
    from cast_model.checkpoint import read_checkpoint_meta, update_extra
    from workflows.inference.released import recipe_contract
    from workflows.training.config import TrainConfigError

    try:
        labels = read_checkpoint_meta(cfg.checkpoint).get("labels")
        if not labels:
            raise CheckpointError(f"{cfg.checkpoint}: the checkpoint has no label map (its heads)")
        contract = recipe_contract(cfg.dataset, tuple(labels), cfg.preset, **cfg.views())
        update_extra(Path(cfg.checkpoint), contract)
    except (CheckpointError, TrainConfigError) as e:
        return user_error(parsed.prog, e)
    print(f"{cfg.checkpoint}: {contract}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
