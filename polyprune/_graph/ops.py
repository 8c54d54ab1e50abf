"""Private (engine): THE op table — one entry per operation, read by every graph analysis.

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
from torch import nn

from . import resample, rules
from .field import Call, Field

__all__ = ["Channels", "Op", "Rule", "lookup", "lookup_module", "lookup_named"]

#: A receptive-field rule: the field of an operation's output from its :class:`~.field.Call`.
Rule = Callable[[Call], Field]


Channels = Literal["keep", "mask", "merge", "cat", "mix"]


@dataclass(frozen=True)
class Op:
    """One operation's entry: its receptive-field rule and its channel behaviour."""

    spatial: Rule
    channels: Channels


_KEEP = Op(rules.pointwise, "keep")
_MERGE = Op(rules.pointwise, "merge")
_MIX = Op(rules.pointwise, "mix")
_CAT = Op(rules.cat, "cat")
_GLOBAL = Op(rules.global_norm, "keep")  # statistics over the whole map, per channel
# layout operations regroup or move axes: the spatial field follows the axes; channels are
# followed all-to-all (a regrouped channel has no one source channel)
_LAYOUT = {
    name: Op(rule, "mix")
    for name, rule in (
        ("permute", rules.permute), ("transpose", rules.transpose), ("swapaxes", rules.transpose),
        ("unsqueeze", rules.unsqueeze), ("squeeze", rules.squeeze), ("view", rules.reshape),
        ("reshape", rules.reshape), ("flatten", rules.reshape), ("unflatten", rules.reshape),
        ("chunk", rules.split), ("split", rules.split), ("unbind", rules.split),
        ("getitem", rules.getitem),
    )
}  # fmt: skip

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
    nn.modules.conv._ConvNd: Op(rules.conv, "mask"),
    nn.Linear: Op(rules.linear, "mask"),
    **dict.fromkeys(_WINDOW_POOLS, Op(rules.module_pool, "keep")),
    **dict.fromkeys(_ADAPTIVE_POOLS, Op(rules.adaptive_pool, "keep")),
    **dict.fromkeys(_KEEP_MODULES, _KEEP),
    nn.LocalResponseNorm: _MIX,
    nn.Softmax2d: _MIX,
    nn.Softmax: Op(rules.softmax, "mix"),
    nn.LayerNorm: Op(rules.layer_norm, "mix"),
    nn.GroupNorm: Op(rules.global_norm, "mix"),
    nn.modules.instancenorm._InstanceNorm: _GLOBAL,
    nn.Flatten: Op(rules.reshape, "mix"),
    nn.Upsample: Op(resample.upsample, "keep"),
    nn.modules.padding._ConstantPadNd: Op(resample.pad, "keep"),
    nn.Unflatten: Op(rules.reshape, "mix"),
}  # fmt: skip

#: Modules and functions of other libraries, by qualified name (nothing imported for them).
NAMED: dict[str, Op] = {
    # per-sample dropout of a residual branch: identity in eval mode
    "torchvision.ops.stochastic_depth.StochasticDepth": _KEEP,
    "torchvision.ops.stochastic_depth.stochastic_depth": _KEEP,
    # timm's convolutions and pools with run-time "SAME" padding or weight standardization
    **dict.fromkeys(
        (f"timm.layers.{name}" for name in (
            "conv2d_same.Conv2dSame", "std_conv.StdConv2d", "std_conv.StdConv2dSame",
            "std_conv.ScaledStdConv2d", "std_conv.ScaledStdConv2dSame")),
        Op(rules.conv_same, "mask"),
    ),
    **dict.fromkeys(
        ("timm.layers.pool2d_same.MaxPool2dSame", "timm.layers.pool2d_same.AvgPool2dSame"),
        Op(rules.module_pool_same, "keep"),
    ),
}  # fmt: skip

#: Function object -> entry.
FUNCTIONS: dict[Any, Op] = {
    **dict.fromkeys(
        (torch.relu, torch.sigmoid, torch.tanh, torch.neg, torch.clamp, torch.abs, F.relu,
         F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.hardtanh, F.hardswish, F.hardsigmoid,
         F.sigmoid, F.tanh, F.dropout, F.dropout2d, F.batch_norm, operator.neg),
        _KEEP,
    ),
    **dict.fromkeys(
        (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
         operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
         torch.minimum),
        _MERGE,
    ),
    **dict.fromkeys(
        (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d),
        Op(rules.functional_pool, "keep"),
    ),
    **dict.fromkeys(
        (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
         F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d),
        Op(rules.adaptive_pool, "keep"),
    ),
    F.layer_norm: Op(rules.layer_norm, "mix"),
    F.interpolate: Op(resample.upsample, "keep"),
    F.pad: Op(resample.pad, "keep"),
    F.softmax: Op(rules.softmax, "mix"),
    torch.softmax: Op(rules.softmax, "mix"),
    torch.cat: _CAT,
    torch.stack: Op(rules.stack, "mix"),
    torch.concat: _CAT,
    torch.permute: _LAYOUT["permute"],
    torch.transpose: _LAYOUT["transpose"],
    torch.unsqueeze: _LAYOUT["unsqueeze"],
    torch.squeeze: _LAYOUT["squeeze"],
    torch.reshape: _LAYOUT["reshape"],
    torch.flatten: _LAYOUT["flatten"],
    torch.chunk: _LAYOUT["chunk"],
    torch.split: _LAYOUT["split"],
    torch.unbind: _LAYOUT["unbind"],
    **dict.fromkeys((torch.mean, torch.sum, torch.amax, torch.amin), Op(rules.reduce, "mix")),
    operator.getitem: _LAYOUT["getitem"],
}  # fmt: skip

#: Tensor method name -> entry.
METHODS: dict[str, Op] = {
    **dict.fromkeys(
        ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "neg", "clamp", "clamp_",
         "clamp_min", "abs", "contiguous", "clone", "detach", "float", "double", "half", "to",
         "type_as"),
        _KEEP,
    ),
    **dict.fromkeys(
        ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"), _MERGE
    ),
    "softmax": Op(rules.softmax, "mix"),
    **dict.fromkeys(("mean", "sum", "amax", "amin"), Op(rules.reduce, "mix")),
    **{name: op for name, op in _LAYOUT.items() if name != "getitem"},
}  # fmt: skip


def _named(obj: Any) -> Op | None:
    return NAMED.get(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")


def lookup_named(module: nn.Module) -> Op | None:
    """The entry of ``module``'s type among other libraries' modules (:data:`NAMED`), through
    its MRO: such a module is one node of the graph (its forward is not traced through)."""
    for cls in type(module).__mro__:
        op = _named(cls)
        if op is not None:
            return op
    return None


def lookup_module(module: nn.Module) -> Op | None:
    """The entry for ``module``'s type (or its nearest base class with one), or ``None``."""
    for cls in type(module).__mro__:
        op = MODULES.get(cls) or _named(cls)
        if op is not None:
            return op
    return None


def lookup(node: fx.Node, model: nn.Module) -> Op | None:
    """The entry for a ``call_module``/``call_function``/``call_method`` node, or ``None``."""
    if node.op == "call_module":
        return lookup_module(model.get_submodule(str(node.target)))
    if node.op == "call_function":
        return FUNCTIONS.get(node.target) or _named(node.target)
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
