"""The old path of ``workflows/balanced_measure.py`` (the ``cast-balanced-measure`` command), kept for one
release so documented command lines keep working; it says so on stderr."""

import sys

from workflows.balanced_measure import main

if __name__ == "__main__":
    print("workflows/evaluate.py: warning: this path is deprecated, use workflows/balanced_measure.py",
          file=sys.stderr)
    sys.exit(main())
