"""Private: how each operation maps receptive fields, as a small registry.

A receptive field of a feature map is kept per spatial dimension as three integers in input
pixels: ``size`` (bounding box of the pixels one map position can see), ``stride`` (distance in
pixels between neighbouring map positions) and ``start`` (first pixel seen by position 0; negative
where the field reaches into padding), plus the exact first/last pixel of every map position
(see :class:`Field`). A window operation with kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d`` maps ``(size, stride, start)`` to
``(size + d*(k-1)*stride, stride*s, start - p*stride)``.

Rules are looked up by module type (through the MRO), by function object, or by method name. An
operation with no rule is an error: the receptive field is never guessed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._graph import GraphError


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


# (operation, input fields of tensor arguments, input tensors, output) -> output field
Rule = Callable[[Any, list[Field], list[Tensor], Tensor, str], Field]


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    out = tuple(int(v) for v in value)
    if len(out) != n:
        raise ReceptiveFieldError(f"expected {n} values, got {value!r}")
    return out


def _spatial(t: Tensor) -> int:
    return t.dim() - 2


def _only(fields: list[Field], where: str) -> Field:
    if len(fields) != 1:
        raise ReceptiveFieldError(f"{where}: expected one spatial input, got {len(fields)}")
    return fields[0]


def _conv(m: nn.Module, fields: list[Field], ins: list[Tensor], out: Tensor, where: str) -> Field:
    assert isinstance(m, nn.modules.conv._ConvNd)
    f = _only(fields, where)
    n = len(m.kernel_size)
    if m.padding_mode != "zeros":
        raise ReceptiveFieldError(
            f"{where}: padding_mode={m.padding_mode!r} copies pixels from inside the image into "
            "the border, so receptive fields are not uniform there; only 'zeros' is supported"
        )
    kernel, dilation = _tuple(m.kernel_size, n), _tuple(m.dilation, n)
    if isinstance(m.padding, str):  # "valid" or "same" (stride 1): PyTorch pads total//2 first
        padding = tuple(
            0 if m.padding == "valid" else (d * (k - 1)) // 2
            for k, d in zip(kernel, dilation, strict=True)
        )
    else:
        padding = _tuple(m.padding, n)
    return f.window(kernel, _tuple(m.stride, n), padding, dilation, out.shape[2:])


def _pool(m: nn.Module, fields: list[Field], ins: list[Tensor], out: Tensor, where: str) -> Field:
    f = _only(fields, where)
    n = _spatial(out)
    kernel = _tuple(m.kernel_size, n)
    stride = _tuple(m.stride if m.stride else m.kernel_size, n)
    dilation = _tuple(getattr(m, "dilation", 1), n)
    return f.window(kernel, stride, _tuple(m.padding, n), dilation, out.shape[2:])


def _adaptive(
    m: nn.Module, fields: list[Field], ins: list[Tensor], out: Tensor, where: str
) -> Field:
    f = _only(fields, where)
    in_size, out_size = ins[0].shape[2:], out.shape[2:]
    if any(i % o for i, o in zip(in_size, out_size, strict=True)):
        raise ReceptiveFieldError(
            f"{where}: adaptive pooling from {tuple(in_size)} to {tuple(out_size)} uses windows "
            "of unequal size, so the receptive field is not uniform; choose an input size at "
            "which the map divides evenly"
        )
    kernel = tuple(i // o for i, o in zip(in_size, out_size, strict=True))
    return f.window(kernel, kernel, (0,) * len(kernel), (1,) * len(kernel), out.shape[2:])


def _pointwise(op: Any, fields: list[Field], ins: list[Tensor], out: Tensor, where: str) -> Field:
    """Element-wise (spatially) operations; several inputs are merged by union of their fields."""
    shapes = {tuple(t.shape[2:]) for t in ins if t.dim() >= 3}
    if len(shapes) > 1 or (shapes and tuple(out.shape[2:]) not in shapes):
        raise ReceptiveFieldError(f"{where}: combines maps of different sizes {sorted(shapes)}")
    first = fields[0]
    for other in fields[1:]:
        if other.stride != first.stride:
            raise ReceptiveFieldError(
                f"{where}: maps with strides {first.stride} and {other.stride} meet here, so one "
                "output position sees differently spaced inputs; the receptive field is not uniform"
            )
    if len(fields) == 1:
        return first
    dims = range(len(first.start))
    start = tuple(min(f.start[i] for f in fields) for i in dims)
    end = tuple(max(f.start[i] + f.size[i] for f in fields) for i in dims)
    lo = tuple(torch.stack([f.lo[i] for f in fields]).amin(dim=0) for i in dims)
    hi = tuple(torch.stack([f.hi[i] for f in fields]).amax(dim=0) for i in dims)
    return Field(tuple(e - s for s, e in zip(start, end, strict=True)), first.stride, start, lo, hi)


def _cat(op: Any, fields: list[Field], ins: list[Tensor], out: Tensor, where: str) -> Field:
    # concatenation along channels is a union; along a spatial dim it shifts positions
    if any(t.dim() >= 3 and t.shape[2:] != out.shape[2:] for t in ins):
        raise ReceptiveFieldError(
            f"{where}: concatenation along a spatial dimension is not supported"
        )
    return _pointwise(op, fields, ins, out, where)


_POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Softmax2d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LocalResponseNorm,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
)  # fmt: skip

#: Operations that act on each channel on its own (a unit's channel depends only on the same
#: channel of their input). LocalResponseNorm and Softmax2d mix channels, so they are not here.
CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = tuple(
    m for m in _POINTWISE_MODULES if m not in (nn.LocalResponseNorm, nn.Softmax2d)
)
CHANNELWISE_FUNCTIONS = frozenset(
    (torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu,
     F.elu, F.hardtanh, F.hardswish, F.sigmoid, F.tanh, F.dropout, F.dropout2d)
)  # fmt: skip
CHANNELWISE_METHODS = frozenset(
    ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone", "float")
)

_WINDOW_POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)  # fmt: skip
_ADAPTIVE_POOLS: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
#: Pooling layers: each channel on its own, like ``CHANNELWISE_MODULES``, but the field changes.
POOL_MODULES = (*_WINDOW_POOLS, *_ADAPTIVE_POOLS)

MODULE_RULES: dict[type[nn.Module], Rule] = {
    nn.modules.conv._ConvNd: _conv,
    **dict.fromkeys(_WINDOW_POOLS, _pool),
    **dict.fromkeys(_ADAPTIVE_POOLS, _adaptive),
    **dict.fromkeys(_POINTWISE_MODULES, _pointwise),
}  # fmt: skip

# Pointwise for the field: the channel-wise ops, and element-wise arithmetic between tensors.
FUNCTION_RULES: dict[Any, Rule] = {
    **dict.fromkeys(
        (
            *CHANNELWISE_FUNCTIONS,
            operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
            operator.iadd, operator.imul, torch.add, torch.sub, torch.mul, torch.div,
            torch.clamp, torch.neg,
        ),
        _pointwise,
    ),
    torch.cat: _cat,
    torch.concat: _cat,
}  # fmt: skip

METHOD_RULES: dict[str, Rule] = dict.fromkeys(
    (
        *CHANNELWISE_METHODS,
        "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "clamp", "clamp_",
        "clamp_min", "double", "half", "to", "type_as", "detach",
    ),
    _pointwise,
)  # fmt: skip


def module_rule(module: nn.Module) -> Rule | None:
    """The rule for ``module``'s type (or a base class), or ``None``."""
    for cls in type(module).__mro__:
        rule = MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


__all__ = [
    "CHANNELWISE_FUNCTIONS",
    "CHANNELWISE_METHODS",
    "CHANNELWISE_MODULES",
    "FUNCTION_RULES",
    "METHOD_RULES",
    "MODULE_RULES",
    "POOL_MODULES",
    "Field",
    "ReceptiveFieldError",
    "module_rule",
]
