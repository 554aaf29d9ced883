"""Fine-tune CAST on ssv2 (recipe: configs/ssv2.yaml). See workflows/training/launch.py.

    python workflows/train_ssv2.py --shards OUT --val-shards OUT --preset tiny --num-workers 2
    ray job submit --working-dir . -- python workflows/train_ssv2.py --shards ... --num-workers 8
"""

import sys

from workflows.training import launch


def main(argv: list[str] | None = None) -> int:
    """The ``cast-train-ssv2`` command."""
    return launch.main("ssv2", argv)


if __name__ == "__main__":
    sys.exit(main())
