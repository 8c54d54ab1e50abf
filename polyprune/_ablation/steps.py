"""Private (methods): the steps of the chain after an ablated layer (what each does to a change)
and where a convolution reads its input (:mod:`polyprune._ablation.delta`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .._graph import rules
from .._graph.ops import lookup

__all__ = [
    "Step",
    "alike",
    "conv_step",
    "crop",
    "numeric",
    "out_size",
    "pointwise",
    "reads",
    "split",
    "windowed",
]

_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FORWARDS = {c.forward for c in _PLAIN_CONVS}


@dataclass(frozen=True)
class Step:
    node: fx.Node
    kind: str  # "alike" (channel-wise, the same for every channel), "conv", "unit" or "other"
    module: nn.Module | None = None


def alike(node: fx.Node, model: nn.Module) -> bool:
    """Whether ``node`` treats every channel alike and alone (no per-channel parameters)."""
    op = lookup(node, model)
    if op is None or op.channels != "keep":
        return False
    if node.op == "call_module":
        module = model.get_submodule(str(node.target))
        hooked = module._forward_hooks or module._forward_pre_hooks
        params = next(module.parameters(), None) is not None
        return not (hooked or params or next(module.buffers(), None) is not None)
    return True


def conv_step(module: nn.Module, hooks: int) -> bool:
    """A plain convolution (groups 1, zero padding) whose output only our ``hooks`` change."""
    return (  # a subclass may change the forward; a parametrized class keeps it
        isinstance(module, _PLAIN_CONVS)
        and type(module).forward in _FORWARDS
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not module._forward_pre_hooks
        and len(module._forward_hooks) <= hooks
    )


def pointwise(steps: list[Step], model: nn.Module) -> bool:
    """Whether every step keeps each position where it is (elementwise)."""
    ops = [lookup(s.node, model) for s in steps]
    return all(op is not None and op.spatial is rules.pointwise for op in ops)


def numeric(module: Any) -> bool:
    """Whether the conv ``module`` pads by numbers (not ``"same"``/``"valid"``), so that it can
    be computed on a window of its output map."""
    return not isinstance(getattr(module, "padding", ""), str)


def windowed(module: Any, position: tuple[int, ...] | None) -> bool:
    """Whether the conv ``module`` can be computed at ``position`` alone (numeric padding)."""
    return position is not None and numeric(module) and len(position) == len(module.kernel_size)


def reads(module: Any, ranges: list[tuple[int, int]], x: Tensor, offset: tuple[int, ...]) -> Tensor:
    """What the conv ``module`` reads of ``x`` ``(N, C, *part)`` (a part of its input map from
    ``offset`` on, beyond which the map ends or is not read) for its outputs ``ranges``,
    zero-padded as the conv pads: convolved with no padding, the outputs there."""
    pads: list[int] = []
    for dim, (first, last) in enumerate(ranges):
        stride, padding = module.stride[dim], module.padding[dim]
        span = (module.kernel_size[dim] - 1) * module.dilation[dim]
        lo = first * stride - padding - offset[dim]
        hi = last * stride - padding + span - offset[dim]
        size = x.shape[2 + dim]
        a = min(max(lo, 0), size)
        length = max(min(hi, size - 1) - a + 1, 0)
        x = x.narrow(2 + dim, a, length)
        pads = [a - lo, hi - a - length + 1, *pads]
    return F.pad(x, pads) if any(pads) else x


def out_size(module: Any, size: Any, padding: Any = None) -> list[int]:
    """The output map size of the conv ``module`` on an input map of ``size``."""
    padding = module.padding if padding is None else padding
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    return [
        (n + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
        for i, n in enumerate(size)
    ]


def crop(t: Tensor, region: list[tuple[int, int]]) -> Tensor:
    """``t`` ``(N, C, *map)`` on ``region`` (first, last per dimension)."""
    for dim, (first, last) in enumerate(region):
        t = t.narrow(2 + dim, first, last - first + 1)
    return t


def split(t: Tensor, k: int, n: int) -> Tensor:
    """``(K·N, ...)`` as ``(K, N, ...)``."""
    return t.reshape(k, n, *t.shape[1:])
