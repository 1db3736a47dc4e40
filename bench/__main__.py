"""``python -m bench``: the benchmark suite's entry point (see :mod:`bench.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The suite imports the end-to-end harness from ``tests``, which is not an installed package.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
