"""FORCE (paper 3.2.3): SNIP recomputed on a progressively masked network."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .. import _masking as mk
from .. import _validate as valid
from .._progress import staged
from ..masks import Scores
from ..targets import Objective, Unit
from ._base import BaseScorer, Inputs, ScoringJob
from ._tools import mask_gradients

__all__ = ["FORCE"]


class FORCE(BaseScorer, name="force"):
    """Iterative SNIP: score, mask, re-score the masked network, on an exponential schedule.

    Round ``r`` (of ``rounds``) scores the network masked to the kept fraction
    ``keep ** (r / (rounds - 1))``: round 0 the dense network, the last round the network at
    ``keep`` itself. Each mask is chosen by :meth:`Masks.from_scores
    <polyprune.masks.Masks.from_scores>` (with this scorer's ``scope`` and ``normalize``)
    from the previous round's scores. The score of a mask element is ``|∂f/∂m|`` for a
    multiplicative mask ``m`` at the chosen granularity, i.e. ``|Σ w · ∂f/∂(w·m)|`` over the
    element's weights: the gradient at the masked network times the *unmasked* weights, so
    pruned elements keep a score and may come back. At ``"weight"`` granularity round 0 is
    exactly SNIP.

    :meth:`score` returns the last round's scores, so
    ``Masks.from_scores(scores, keep, scope, normalize=normalize)`` with the same arguments
    gives FORCE's final subnetwork.

    Parameters
    ----------
    rounds : int
        Number of scoring passes over the inputs (≥ 1; 1 scores the dense network only).
    **options
        ``keep`` (the target kept fraction, in (0, 1]; may instead be given to :meth:`score`),
        ``scope`` and ``normalize`` (passed to :meth:`Masks.from_scores
        <polyprune.masks.Masks.from_scores>` each round), ``progress``: see
        :class:`BaseScorer`.

    Examples
    --------
    >>> import torch
    >>> from polyprune import Masks, Unit
    >>> from polyprune.scoring import FORCE
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(8, 4, 3))
    >>> force = FORCE(rounds=3, keep=0.25, progress=False)
    >>> force.schedule()  # kept fraction of the mask each round scores under
    [1.0, 0.5, 0.25]
    >>> scores = force.score(model, torch.rand(4, 3, 9, 9), Unit("2", 0))
    >>> Masks.from_scores(scores, keep=0.25).kept_fraction()
    0.25
    """

    def __init__(self, rounds: int = 10, **options: Any) -> None:
        super().__init__(**options)
        valid.integer("rounds", rounds, low=1)
        self.rounds = rounds

    def passes(self) -> int:
        return self.rounds

    def schedule(self, keep: float | None = None) -> list[float]:
        """The kept fraction of the mask each round scores under: ``1`` down to ``keep``."""
        target = self._target(keep)
        if self.rounds == 1:
            return [1.0]
        return [target ** (r / (self.rounds - 1)) for r in range(self.rounds)]

    def _target(self, keep: float | None) -> float:
        target = keep if keep is not None else self.keep
        if target is None:
            raise ValueError(
                "FORCE needs the target kept fraction: FORCE(keep=0.05) or "
                "FORCE().score(..., keep=0.05)"
            )
        return mk.check_keep(target)

    def score(
        self,
        model: nn.Module,
        inputs: Inputs | None,
        objective: Objective | Unit,
        *,
        granularity: str = "kernel",
        keep: float | None = None,
    ) -> Scores:
        """Scores of the last round (see the class docstring); ``keep`` overrides the init's.

        The inputs are read once per round (a one-shot iterator is kept in memory).
        """
        self._target(keep)  # fails before any work without a kept fraction
        return super().score(model, inputs, objective, granularity=granularity, keep=keep)

    def _check(self, job: ScoringJob) -> None:
        self._select(job, self._zeros(job), self._target(job.keep))  # raises if keep leaves 0

    def _zeros(self, job: ScoringJob) -> dict[str, Tensor]:
        return {n: torch.zeros(mk.mask_shape(s, job.granularity)) for n, s in job.shapes.items()}

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        keep = self._target(job.keep)
        zeros = self._zeros(job)
        masks: Mapping[str, Tensor] = {n: torch.ones_like(z) for n, z in zeros.items()}
        scores: Mapping[str, Tensor] = zeros
        fractions = self.schedule(keep)
        rounds = staged(fractions, "FORCE", unit="round", show=self.progress)
        for r, fraction in enumerate(rounds):
            if r > 0:
                masks = self._select(job, scores, fraction)
            grads = mask_gradients(job, masks, desc=f"FORCE round {r + 1}")
            scores = {name: g.abs() for name, g in grads.items()}
        return scores

    def _select(
        self, job: ScoringJob, scores: Mapping[str, Tensor], fraction: float
    ) -> dict[str, Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zero-score ties mid-schedule
            chosen = self.cut(job.finish(scores), fraction)
        return {name: chosen[name].float() for name in chosen}

    def __repr__(self) -> str:
        return (
            f"FORCE(rounds={self.rounds}, keep={self.keep}, scope={self.scope!r}, "
            f"normalize={self.normalize!r})"
        )
