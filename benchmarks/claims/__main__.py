"""``python -m benchmarks.claims [--quick] [--out DIR] [--json FILE]``: see the package."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
