"""polyprune: find polysemantic units in CNNs and cut out one sparse subnetwork per meaning.

The public API is listed in ``__all__``; everything else is private.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__: list[str] = ["__version__"]
