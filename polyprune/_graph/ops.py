"""Private (kernel): THE op table — one entry per operation, read by every graph analysis.

Each operation a model's traced graph may contain has one :class:`Op` entry with

- ``spatial``: how it maps receptive fields (a rule ``(op, fields, inputs, output, where) ->
  Field``; see :mod:`.field`), read by the receptive-field interpreter (:mod:`.interpret`);
- ``channels``: how its output channels depend on its input channels, read by the effective-mask
  paths (:mod:`.paths`) and the mask regions (:mod:`.regions`):

  ``"keep"``   channel ``c`` of the output depends only on channel ``c`` of the input
               (activations, per-channel normalization, dropout, pooling, casts, copies);
  ``"mask"``   a Conv/Linear: channels mix through its weight, which polyprune can mask;
  ``"merge"``  element-wise arithmetic of several inputs, channel by channel (``+``, ``*``,
               ``max``...);
  ``"cat"``    concatenation (along channels, for the paths);
  ``"mix"``    every output channel may depend on every input channel, with no weight to mask
               (LocalResponseNorm, Softmax2d).

Entries are looked up by module type (through the MRO), by function object, or by method name
(:func:`lookup`). An operation with no entry is an error in every analysis: nothing is guessed.
To support a new operation, add its one entry here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .field import Field, ReceptiveFieldError

__all__ = ["Channels", "Op", "lookup", "lookup_module"]

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


def _linear(m: nn.Module, fields: list[Field], ins: list[Tensor], out: Tensor, where: str) -> Field:
    raise ReceptiveFieldError(
        f"{where}: a Linear layer on a map mixes its last dimension, which in (N, C, H, W) is "
        "a spatial one; there is no uniform receptive field to follow"
    )


Channels = Literal["keep", "mask", "merge", "cat", "mix"]


@dataclass(frozen=True)
class Op:
    """One operation's entry: its receptive-field rule and its channel behaviour."""

    spatial: Rule
    channels: Channels


_KEEP = Op(_pointwise, "keep")
_MERGE = Op(_pointwise, "merge")
_MIX = Op(_pointwise, "mix")
_CAT = Op(_cat, "cat")

_WINDOW_POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)  # fmt: skip
_ADAPTIVE_POOLS: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_KEEP_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
)  # fmt: skip

#: Module type -> entry (looked up through the MRO, so subclasses inherit their base's entry).
MODULES: dict[type[nn.Module], Op] = {
    nn.modules.conv._ConvNd: Op(_conv, "mask"),
    nn.Linear: Op(_linear, "mask"),
    **dict.fromkeys(_WINDOW_POOLS, Op(_pool, "keep")),
    **dict.fromkeys(_ADAPTIVE_POOLS, Op(_adaptive, "keep")),
    **dict.fromkeys(_KEEP_MODULES, _KEEP),
    nn.LocalResponseNorm: _MIX,
    nn.Softmax2d: _MIX,
}  # fmt: skip

#: Function object -> entry.
FUNCTIONS: dict[Any, Op] = {
    **dict.fromkeys(
        (torch.relu, torch.sigmoid, torch.tanh, torch.neg, torch.clamp, F.relu, F.relu6,
         F.leaky_relu, F.gelu, F.silu, F.elu, F.hardtanh, F.hardswish, F.sigmoid, F.tanh,
         F.dropout, F.dropout2d, operator.neg),
        _KEEP,
    ),
    **dict.fromkeys(
        (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
         operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
         torch.minimum),
        _MERGE,
    ),
    torch.cat: _CAT,
    torch.concat: _CAT,
}  # fmt: skip

#: Tensor method name -> entry.
METHODS: dict[str, Op] = {
    **dict.fromkeys(
        ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "neg", "clamp", "clamp_",
         "clamp_min", "contiguous", "clone", "detach", "float", "double", "half", "to",
         "type_as"),
        _KEEP,
    ),
    **dict.fromkeys(
        ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"), _MERGE
    ),
}  # fmt: skip


def lookup_module(module: nn.Module) -> Op | None:
    """The entry for ``module``'s type (or its nearest base class with one), or ``None``."""
    for cls in type(module).__mro__:
        op = MODULES.get(cls)
        if op is not None:
            return op
    return None


def lookup(node: fx.Node, model: nn.Module) -> Op | None:
    """The entry for a ``call_module``/``call_function``/``call_method`` node, or ``None``."""
    if node.op == "call_module":
        return lookup_module(model.get_submodule(str(node.target)))
    if node.op == "call_function":
        return FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return METHODS.get(str(node.target))
    return None


def describe(node: fx.Node, model: nn.Module) -> str:
    """``module 'features.0' (Conv2d)``, ``the method .view()``, ``the function add``."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(model.get_submodule(str(node.target))).__name__})"
    if node.op == "call_method":
        return f"the method .{node.target}()"
    return f"the function {getattr(node.target, '__name__', node.target)}"
