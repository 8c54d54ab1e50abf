"""Private (kernel): a receptive field, as three integers per spatial dimension plus exact spans.

A receptive field of a feature map is kept per spatial dimension as three integers in input
pixels: ``size`` (bounding box of the pixels one map position can see), ``stride`` (distance in
pixels between neighbouring map positions) and ``start`` (first pixel seen by position 0; negative
where the field reaches into padding), plus the exact first/last pixel of every map position
(see :class:`Field`). A window operation with kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d`` maps ``(size, stride, start)`` to
``(size + d*(k-1)*stride, stride*s, start - p*stride)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .trace import GraphError

__all__ = ["Field", "ReceptiveFieldError"]


class ReceptiveFieldError(GraphError):
    """The receptive field of a layer is undefined, non-uniform, or cannot be derived."""


_EMPTY = 1 << 40  # sentinel bound of a position that sees only padding


@dataclass(frozen=True, eq=False)
class Field:
    """Receptive field of a map, one entry per spatial dimension, in input pixels.

    ``size``/``stride``/``start`` describe the uniform field (padding included). ``lo``/``hi``
    hold, for every position of the map, the first and last input pixel it actually depends on
    (exact at borders, where windows reach into padding or floor-mode drops rows); a position
    that sees only padding has ``lo > hi``.
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    start: tuple[int, ...]
    lo: tuple[Tensor, ...]
    hi: tuple[Tensor, ...]

    @staticmethod
    def identity(sizes: Sequence[int]) -> Field:
        n = len(sizes)
        spans = tuple(torch.arange(s) for s in sizes)
        return Field((1,) * n, (1,) * n, (0,) * n, spans, spans)

    def window(
        self,
        kernel: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        out_sizes: Sequence[int],
    ) -> Field:
        dims = range(len(self.size))
        lo, hi = [], []
        for i in dims:
            taps = (
                torch.arange(out_sizes[i])[:, None] * stride[i]
                - padding[i]
                + dilation[i] * torch.arange(kernel[i])[None, :]
            )
            valid = (taps >= 0) & (taps < self.lo[i].numel())
            safe = taps.clamp(0, self.lo[i].numel() - 1)
            lo.append(torch.where(valid, self.lo[i][safe], _EMPTY).amin(dim=1))
            hi.append(torch.where(valid, self.hi[i][safe], -_EMPTY).amax(dim=1))
        return Field(
            tuple(self.size[i] + dilation[i] * (kernel[i] - 1) * self.stride[i] for i in dims),
            tuple(self.stride[i] * stride[i] for i in dims),
            tuple(self.start[i] - padding[i] * self.stride[i] for i in dims),
            tuple(lo),
            tuple(hi),
        )
