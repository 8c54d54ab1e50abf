"""Saliency scorers (paper 3.2): how much each filter, kernel or weight matters to a unit.

Every scorer follows the :class:`Scorer` protocol,
``score(model, inputs, objective, *, granularity="kernel") -> dict[str, Tensor]``, and returns
:class:`~polyprune.masks.Scores` for :meth:`Masks.from_scores
<polyprune.masks.Masks.from_scores>`. Only the Conv/Linear weights that can reach the unit are
scored (found from the traced graph); in the unit's own layer only its channel's fan-in.

========================  =============================================================
:class:`ActGrad`          activation × gradient over the map (3.2.1)
:class:`SNIP`             ``|w · ∂f/∂w|`` averaged over the element (3.2.2)
:class:`FORCE`            SNIP on a progressively masked network (3.2.3)
:class:`Magnitude`        mean ``|w|`` (baseline, ignores the data)
:class:`Random`           seeded uniform scores (baseline)
========================  =============================================================
"""

from __future__ import annotations

from ._base import Scorer
from .actgrad import ActGrad
from .force import FORCE
from .magnitude import Magnitude
from .random import Random
from .snip import SNIP

__all__ = ["FORCE", "SNIP", "ActGrad", "Magnitude", "Random", "Scorer"]
