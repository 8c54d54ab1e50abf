"""Attribution patching (EAP, Syed et al. 2023): the first-order effect of removing each kernel."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._base import BaseScorer, ScoringJob
from ._tools import mask_gradients

__all__ = ["Attribution"]


class Attribution(BaseScorer, name="attribution"):
    """Edge attribution patching: ``|(a_with − a_without) · ∂f/∂a|`` per kernel, one backward pass.

    A kernel ``(o, i)`` adds ``w_oi ∗ x_i`` to its layer's output channel ``o``; removing it
    (ablating to zero) changes that channel by ``−w_oi ∗ x_i``. To first order the objective ``f``
    (the unit's activation summed over the images) changes by ``−Σ_map (w_oi ∗ x_i) · ∂f/∂z_o``,
    which is ``−∂f/∂m_oi`` for a multiplicative mask ``m`` of ones on the kernel. The score is its
    absolute value, summed over the images *before* the absolute value (effects that cancel across
    images cancel, as in EAP): one forward and one backward pass per batch. Unlike
    :class:`SNIP`, which averages ``|w · ∂f/∂w|`` weight by weight, the sum over a kernel's weights
    is signed, so a kernel whose weights cancel scores 0. The prediction is exact where the
    network is linear along the kernel's paths (every unit on them active and staying so).

    At ``"weight"`` granularity each weight is its own element (``|Σ_images w · ∂f/∂w|``); at
    ``"filter"``, a filter's effect is that of removing all its kernels together.

    Constructed like every scorer (:class:`BaseScorer`): ``keep``, ``scope``, ``normalize``,
    ``progress``.

    Examples
    --------
    A linear two-layer network with integer weights: the score of each kernel is exactly how much
    the unit drops when the kernel is removed.

    >>> import torch
    >>> from polyprune import Unit
    >>> from polyprune.scoring import Attribution
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1, bias=False),
    ...                             torch.nn.Conv2d(2, 1, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([[1., 2.], [3., -1.]]).reshape(2, 2, 1, 1))
    ...     _ = model[1].weight.copy_(torch.tensor([[2., 1.]]).reshape(1, 2, 1, 1))
    >>> x = torch.ones(1, 2, 1, 1)  # f = 2·(1 + 2) + 1·(3 − 1) = 8
    >>> scores = Attribution().score(model, x, Unit("1", 0))
    >>> scores["0.weight"].tolist(), scores["1.weight"].tolist()
    ([[2.0, 4.0], [3.0, 1.0]], [[6.0, 2.0]])
    """

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        ones = {name: torch.ones(shape) for name, shape in job.mask_shapes.items()}
        grads = mask_gradients(job, ones, desc="attribution")
        return {name: g.abs() for name, g in grads.items()}
