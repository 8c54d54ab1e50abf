"""Saliency scorers (paper 3.2): how much each filter, kernel or weight matters to a unit.

Every scorer is a :class:`BaseScorer` (``Scorer`` is the same class): a
:class:`~polyprune.methods.Method` with
``score(model, inputs, objective, *, granularity="kernel") -> Scores``, carrying the
``keep``/``scope``/``normalize`` with which its subnetwork is cut (:meth:`BaseScorer.cut`,
:meth:`Masks.from_scores <polyprune.masks.Masks.from_scores>`). Only the Conv/Linear weights
that can reach the unit are scored (found from the traced graph); in the unit's own layer only
its channel's fan-in.

**The path-aware cut.** A fitted subnetwork reports its *effective* masks (kernels on a kept path
from the input to the unit, :meth:`Masks.effective <polyprune.masks.Masks.effective>`), and the
top ``keep`` of the scores rarely forms such paths: on the demo's trained concepts model the top
5 % of ActGrad's and of SNIP's kernels held none, so the subnetwork kept nothing. So a scorer's
:meth:`~BaseScorer.fit` (and :meth:`BaseScorer.cut` given the model) lowers the score threshold
until the effective masks keep ``keep`` of the weights: the in-region elements are ranked (best
score first; with ``scope="layer"``, by the fraction of their own layer kept before them, so
every layer is cut at the same fraction) and the cut is the shortest prefix of the ranking whose
effective part keeps at least ``round(keep × weights)`` (when not even all of them do, the
shortest that keeps as many as all of them). When the plain cut (:meth:`Masks.from_scores
<polyprune.masks.Masks.from_scores>`) already does, it is the cut. Adding a kernel only adds
paths, so a binary search finds the prefix in about ``log2`` (elements) passes over the traced
graph. The effective kept fraction is then ``keep``, or a little above where one more kernel
completes several paths at once; the thresholded masks are the subnetwork's ``raw_masks``.

To add a scorer, subclass :class:`BaseScorer`, implement :meth:`BaseScorer.compute`, and give it
a name in the class statement (``class Mine(BaseScorer, name="mine")``): it joins the one
registry of methods (:mod:`polyprune.methods`), :func:`available` then lists it, :func:`create`
builds it, and :func:`polyprune.fit_subnetwork`, :func:`polyprune.study` and
``polyprune study --methods`` accept it by name. A method that is not a scorer (it learns or
searches the masks itself) subclasses :class:`polyprune.Method` instead.

========================  =============================================================
:class:`ActGrad`          activation × gradient over the map (3.2.1)
:class:`SNIP`             ``|w · ∂f/∂w|`` averaged over the element (3.2.2)
:class:`FORCE`            SNIP on a progressively masked network (3.2.3)
:class:`Magnitude`        mean ``|w|`` (baseline, ignores the data)
:class:`Random`           seeded uniform scores (baseline)
:class:`Attribution`      ``|(a_with − a_without) · ∂f/∂a|`` per kernel (EAP, one backward)
========================  =============================================================
"""

from __future__ import annotations

from ._base import (
    BaseScorer,
    Scorer,
    ScoringJob,
    available,
    create,
)
from ._tools import mask_gradients, reduce_to
from .actgrad import ActGrad

from .snip import SNIP  # isort: skip  (registration order: the paper's order)
from .force import FORCE  # isort: skip
from .magnitude import Magnitude  # isort: skip
from .random import Random  # isort: skip
from .attribution import Attribution  # isort: skip

__all__ = [
    "FORCE",
    "SNIP",
    "ActGrad",
    "Attribution",
    "BaseScorer",
    "Magnitude",
    "Random",
    "Scorer",
    "ScoringJob",
    "available",
    "create",
    "mask_gradients",
    "reduce_to",
]
