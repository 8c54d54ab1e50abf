"""Private (engine): a receptive field, as three integers per spatial dimension plus exact spans.

A receptive field of a feature map is kept per spatial dimension as three integers in input
pixels: ``size`` (bounding box of the pixels one map position can see), ``stride`` (distance in
pixels between neighbouring map positions) and ``start`` (first pixel seen by position 0; negative
where the field reaches into padding), plus the exact first/last pixel of every map position
(see :class:`Field`). A window operation with kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d`` maps ``(size, stride, start)`` to
``(size + d*(k-1)*stride, stride*s, start - p*stride)``.

A field also knows where the spatial axes are in its tensor (``dims``: ``(2, 3)`` for an
``(N, C, H, W)`` map, ``(1, 2)`` for a channels-last ``(N, H, W, C)`` one), and whether every
position depends on the whole image (``whole``: after a map is pooled to one value and broadcast
back over it, as in squeeze-and-excitation gating, or normalized over all its positions).

Two more facts decide where an exact crop may be cut. ``lattice``: the crop's top-left must lie
on multiples of it in input pixels, so that every map upstream is cut at one of its own
positions; it is the stride unless a map was upsampled (then the coarsest stride upstream).
``anchored``: some padding upstream was computed from its map's size at run time (TensorFlow's
"SAME" with a stride), so the crop must also end a multiple of ``lattice`` before the image's
bottom/right edge: every map of the crop then has the full map's size modulo its stride, and is
padded alike. A field with ``dims == ()`` is *pooled*: its map was reduced to one position
(a squeeze-excitation or split-attention gate) and then reshaped so that no spatial axes remain;
it holds one span per spatial dimension and meets maps as a broadcast value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from math import lcm
from typing import Any

import torch
from torch import Tensor

from .trace import GraphError

__all__ = ["Call", "Field", "ReceptiveFieldError"]


class ReceptiveFieldError(GraphError):
    """The receptive field of a layer is undefined, non-uniform, or cannot be derived."""


_EMPTY = 1 << 40  # sentinel bound of a position that sees only padding


@dataclass(frozen=True, eq=False)
class Field:
    """Receptive field of a map, one entry per spatial dimension, in input pixels.

    ``size``/``stride``/``start`` describe the uniform field (padding included). ``lo``/``hi``
    hold, for every position of the map, the first and last input pixel it actually depends on
    (exact at borders, where windows reach into padding or floor-mode drops rows); a position
    that sees only padding has ``lo > hi``. ``dims`` are the tensor dimensions of the spatial
    axes; ``whole`` means every position depends on every pixel of the image.
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    start: tuple[int, ...]
    lo: tuple[Tensor, ...]
    hi: tuple[Tensor, ...]
    dims: tuple[int, ...]
    whole: bool = False
    period: tuple[int, ...] = ()
    anchored: bool = False

    @staticmethod
    def identity(sizes: Sequence[int]) -> Field:
        """The field of the input image ``(N, C, *sizes)`` itself: every pixel sees itself."""
        n = len(sizes)
        spans = tuple(torch.arange(s) for s in sizes)
        return Field((1,) * n, (1,) * n, (0,) * n, spans, spans, tuple(range(2, 2 + n)))

    @property
    def lattice(self) -> tuple[int, ...]:
        """Where a crop of this field must start (multiples of it, in input pixels)."""
        return self.period or self.stride

    @property
    def pooled(self) -> bool:
        """The map was reduced to one position and its spatial axes reshaped away."""
        return not self.dims

    def pool(self) -> Field:
        """This field of a 1×1 map, with no spatial axes (see :attr:`pooled`)."""
        spans = (t.amin().reshape(1) for t in self.lo), (t.amax().reshape(1) for t in self.hi)
        return replace(self, lo=tuple(spans[0]), hi=tuple(spans[1]), dims=())

    def spread(self, dims: Sequence[int], shape: Sequence[int]) -> Field:
        """A pooled field given spatial axes ``dims`` again (of a tensor of ``shape``): every
        position holds its one span."""
        spans = (
            tuple(t.expand(int(shape[d])).clone() for t, d in zip(self.lo, dims, strict=True)),
            tuple(t.expand(int(shape[d])).clone() for t, d in zip(self.hi, dims, strict=True)),
        )
        return replace(self, lo=spans[0], hi=spans[1], dims=tuple(dims))

    def moved(self, dims: Sequence[int]) -> Field:
        """The same field with its spatial axes at ``dims`` of a reshaped/permuted tensor."""
        return replace(self, dims=tuple(int(d) for d in dims))

    def spatial_shape(self, t: Tensor) -> tuple[int, ...]:
        return tuple(int(t.shape[d]) for d in self.dims)

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
        strides = tuple(self.stride[i] * stride[i] for i in dims)
        return Field(
            tuple(self.size[i] + dilation[i] * (kernel[i] - 1) * self.stride[i] for i in dims),
            strides,
            tuple(self.start[i] - padding[i] * self.stride[i] for i in dims),
            tuple(lo),
            tuple(hi),
            self.dims,
            self.whole,
            tuple(lcm(a, b) for a, b in zip(self.lattice, strides, strict=True)),
            self.anchored,
        )

    def union(self, others: Sequence[Field], out_sizes: Sequence[int], where: str) -> Field:
        """The field of an element-wise combination of maps with these fields.

        A map of size 1 along an axis broadcast over a larger one (a pooled gate) contributes its
        one span to every position. Maps of full size must be spaced alike (same stride).
        """
        fields = [self, *others]
        axes = range(len(out_sizes))
        full = [
            f for f in fields
            if not f.pooled and all(f.lo[i].numel() == out_sizes[i] for i in axes)
        ]  # fmt: skip
        if not full:
            raise ReceptiveFieldError(f"{where}: only broadcast maps meet here")
        first = full[0]
        for other in full[1:]:
            if other.stride != first.stride:
                raise ReceptiveFieldError(
                    f"{where}: maps with strides {first.stride} and {other.stride} meet here, so "
                    "one output position sees differently spaced inputs; the receptive field is "
                    "not uniform"
                )
        dims = range(len(out_sizes))
        lo = tuple(
            torch.stack([f.lo[i].expand(out_sizes[i]) for f in fields]).amin(0) for i in dims
        )
        hi = tuple(
            torch.stack([f.hi[i].expand(out_sizes[i]) for f in fields]).amax(0) for i in dims
        )
        start = tuple(min(f.start[i] for f in full) for i in dims)
        end = tuple(max(f.start[i] + f.size[i] for f in full) for i in dims)
        size = tuple(e - s for s, e in zip(start, end, strict=True))
        broadcast = len(full) < len(fields)
        whole = any(f.whole for f in fields)
        if broadcast and not whole:
            whole = all(
                bool((lo[i] == first.lo[i].min()).all() and (hi[i] == first.hi[i].max()).all())
                for i in dims
            )
            if not whole:
                raise ReceptiveFieldError(
                    f"{where}: a broadcast map that sees only part of the image meets a map "
                    "here; the receptive field is not uniform"
                )
        period = tuple(lcm(*(f.lattice[i] for f in full)) for i in dims)
        anchored = any(f.anchored for f in fields)
        return Field(size, first.stride, start, lo, hi, first.dims, whole, period, anchored)

    def global_(self) -> Field:
        """Every position depends on every pixel this map depends on (a global operation)."""
        dims = range(len(self.size))
        lo = tuple(torch.full_like(self.lo[i], int(self.lo[i].min())) for i in dims)
        hi = tuple(torch.full_like(self.hi[i], int(self.hi[i].max())) for i in dims)
        return replace(self, lo=lo, hi=hi, whole=True)


@dataclass
class Call:
    """One operation of the graph, as a receptive-field rule sees it.

    ``target`` is the module, function or method name; ``args``/``kwargs`` the evaluated
    arguments; ``fields`` the fields of the tensor inputs that have one, ``inputs`` those
    tensors; ``output`` the result; ``where`` names the node for error messages; ``extra``
    holds ``computed``: whether an argument other than the maps was computed in the graph (a
    padding amount from a map's size, say) rather than written as a literal.
    """

    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    fields: list[Field]
    inputs: list[Tensor]
    output: Any
    where: str
    extra: dict[str, Any] = field(default_factory=dict)

    def only(self) -> Field:
        if len(self.fields) != 1:
            raise ReceptiveFieldError(
                f"{self.where}: expected one spatial input, got {len(self.fields)}"
            )
        return self.fields[0]

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Argument ``name`` (positional ``index``, counting the input tensor as 0)."""
        if name in self.kwargs:
            return self.kwargs[name]
        return self.args[index] if index < len(self.args) else default
