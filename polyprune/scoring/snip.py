"""SNIP (paper 3.2.2): ``|w · ∂f/∂w|``, averaged over each kernel or filter."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._base import BaseScorer, ScoringJob
from ._tools import mask_gradients, reduce_to

__all__ = ["SNIP"]


class SNIP(BaseScorer, name="snip"):
    """Connection sensitivity: ``|w · ∂f/∂w|`` per weight, then the mean over the mask element.

    ``S(θ_j) = 1/(K_h K_w) Σ |w · ∂f/∂w|`` over kernel ``j`` (``granularity="kernel"``), over the
    whole filter for ``"filter"``, and per weight for ``"weight"``. The gradient is that of the
    objective summed over all images (so batching does not change the scores), taken through a
    multiplicative mask of ones: the weights themselves get no gradient.

    Constructed like every scorer (:class:`BaseScorer`): ``keep``, ``scope``, ``normalize``,
    ``progress``.

    Examples
    --------
    >>> import torch
    >>> from polyprune import Unit
    >>> from polyprune.scoring import SNIP
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(4, 2, 3))
    >>> scores = SNIP().score(model, torch.rand(8, 3, 9, 9), Unit("2", 1))
    >>> {name: tuple(s.shape) for name, s in scores.items()}
    {'0.weight': (4, 3), '2.weight': (2, 4)}
    >>> bool((scores["2.weight"][0] == 0).all())  # channel 0 of layer 2 cannot reach the unit
    True
    """

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        ones = {name: torch.ones(shape) for name, shape in job.shapes.items()}
        grads = mask_gradients(job, ones, desc="SNIP")
        return {name: reduce_to(g.abs(), job.granularity) for name, g in grads.items()}
