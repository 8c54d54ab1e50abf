"""Issue 15's table: CS's objectives on planted networks with untuned seeds and settings, and on
the trained zoo models; writes ``docs/faithfulness.md``.

Usage, from the repository root::

    python benchmarks/faithful.py            # full run (~35 min, one core)
    python -m benchmarks.faithful --quick    # one setting and seed, 3 epochs (seconds)

The experiment is :mod:`benchmarks.claims.faithful`: it builds its cases and runs its pipeline
with the claims benchmark's code (``benchmarks/claims/cases.py``, ``run.py``), so this file is a
launcher. Run as a file, ``benchmarks/`` is no package: the launcher puts the repository root
on ``sys.path`` and imports the experiment by name.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """Run :func:`benchmarks.claims.faithful.main` with ``argv`` (default: the command line)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.import_module("benchmarks.claims.faithful").main(argv)


if __name__ == "__main__":
    main()
