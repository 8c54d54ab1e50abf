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

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import _masking as mk

if TYPE_CHECKING:
    from . import _Ablator as Ablator

__all__ = ["MaskedWeight"]


class MaskedWeight(nn.Module):
    """``w ↦ w · mask`` for the weight ``name`` of the ablation run ``run``, as a
    parametrization: the mask is the run's float mask for it where one stands in, else its kept
    kernels (in ``dtype`` on ``device``); the product is kept while they are unchanged."""

    def __init__(self, run: Ablator, name: str, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self._run, self._name, self._dtype, self._device = run, name, dtype, device
        self._kept: tuple[Any, Tensor] | None = None

    def _mask(self) -> Tensor:
        leaf = self._run._leaf.get(self._name)
        return (
            leaf if leaf is not None else self._run.kept[self._name].to(self._device, self._dtype)
        )

    def _key(self) -> tuple[int, int] | None:
        """What changes whenever the kept kernels do (None: a float mask stands in)."""
        run, name = self._run, self._name
        if not run.cache_weights or name in run._leaf:
            return None
        return id(run.kept[name]), run._changes[name]

    def forward(self, weight: Tensor) -> Tensor:
        key = self._key()
        if key is None or (weight.requires_grad and torch.is_grad_enabled()):
            return weight * mk.expand(self._mask(), weight.shape)
        full = (key, id(weight), weight._version, weight.dtype, weight.device)
        if self._kept is None or self._kept[0] != full:
            self._kept = (full, weight * mk.expand(self._mask(), weight.shape))
        return self._kept[1]
