"""Magnitude baseline: the mean absolute weight of each mask element."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ._base import BaseScorer, ScoringJob
from ._tools import reduce_to

__all__ = ["Magnitude"]


class Magnitude(BaseScorer, name="magnitude"):
    """Score each element by its mean ``|w|`` (over the kernel / filter); ignores the data.

    The images are not used (``inputs`` may be ``None``); the objective only selects the
    unit, hence which weights can reach it (elements outside that region score 0).

    Examples
    --------
    >>> import torch
    >>> from polyprune import Unit
    >>> from polyprune.scoring import Magnitude
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 3))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.fill_(-0.5)
    >>> Magnitude().score(model, None, Unit("1", 0))["0.weight"]
    tensor([[0.5000],
            [0.5000]])
    """

    uses_inputs = False

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        return {
            name: reduce_to(job.weight(name).detach().abs(), job.granularity) for name in job.shapes
        }
