"""Private (methods): an ablation run's masked weights, computed once per state of its kept
kernels.

Under :meth:`~polyprune._ablation._Ablator.masked` every read of a masked weight (each layer's
forward, each contribution map, each step of the chained path) is a parametrization that
multiplies the weight by its kernel mask. Between two removals the mask does not change, so the
product is kept and given back until the run's kept kernels of that weight change
(:meth:`~polyprune._ablation._Ablator.remove` and ``restore`` count the changes), the weight
itself changes, or a float mask stands in for the kept kernels (first-order estimates, unmasked
contributions): those are computed every time, as are reads that build an autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import _masking as mk

__all__ = ["MaskedWeight"]


class MaskedWeight(nn.Module):
    """``w ↦ w · mask`` as a parametrization, the product kept while ``key()`` is unchanged.

    ``mask()``: the mask now (kernel or element shaped, broadcast over the weight); ``key()``:
    a value that changes whenever ``mask()`` would (None: do not keep the product).
    """

    def __init__(self, mask: Callable[[], Tensor], key: Callable[[], Any]) -> None:
        super().__init__()
        self._mask, self._key = mask, key
        self._kept: tuple[Any, Tensor] | None = None

    def forward(self, weight: Tensor) -> Tensor:
        key = self._key()
        if key is None or (weight.requires_grad and torch.is_grad_enabled()):
            return weight * mk.expand(self._mask(), weight.shape)
        key = (key, id(weight), weight._version, weight.dtype, weight.device)
        if self._kept is None or self._kept[0] != key:
            self._kept = (key, weight * mk.expand(self._mask(), weight.shape))
        return self._kept[1]
