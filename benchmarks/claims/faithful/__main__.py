"""``python -m benchmarks.claims.faithful``: see the package."""

from __future__ import annotations

from .run import main

if __name__ == "__main__":
    main()
