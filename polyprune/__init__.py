"""polyprune: find polysemantic units in CNNs and cut out one sparse subnetwork per meaning.

The public API is listed in ``__all__``; everything else is private.
"""

from __future__ import annotations

from .masks import Masks, Scores
from .receptive_field import Crop, ReceptiveField, ReceptiveFieldError
from .recording import ActivationRecorder, TopActivations, top_activating
from .targets import Unit

__version__ = "0.1.0.dev0"

__all__ = [
    "ActivationRecorder",
    "Crop",
    "Masks",
    "ReceptiveField",
    "ReceptiveFieldError",
    "Scores",
    "TopActivations",
    "Unit",
    "__version__",
    "top_activating",
]
