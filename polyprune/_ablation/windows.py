"""Private (methods): the part of each map of an ablation chain that the unit reads (its window),
so that the chain (:class:`~polyprune._ablation.delta.Chain`) runs on those parts only.

Where the unit's convolution is computed at the unit's position alone, it reads a window of its
input map; the step before it needs only what produces that window, and so on back to the ablated
layer's output. A step can run on a window of its input when its receptive-field rule
(:mod:`polyprune._graph.rules`, the one the crops use) says how its outputs read its input:

- ``"conv"``: a plain convolution of the chain, run at its output window on what it reads there,
  zero-padded as it pads (:func:`~polyprune._ablation.steps.reads`);
- ``"pointwise"``: each output position reads the same input position (ReLU, BatchNorm, ...): the
  same window;
- ``"valid"``: every output position ``j`` reads ``[j·s, j·s + size − 1]`` (a pooling with no
  padding): run on the input from the window's first tap, the outputs cut to the window.

A step with any other rule (padding of its own, adaptive or global windows, no rule) ends the
windows: it and every step before it run on whole maps, as before the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._graph.field import Call, Field
from .._graph.ops import lookup
from .steps import Step, numeric

__all__ = ["Window", "conv_reads", "cut", "step_reads"]

#: ``(first, last)`` per spatial dimension of a map.
Window = list[tuple[int, int]]


def conv_reads(module: Any, out: Window, size: Sequence[int]) -> Window:
    """What the conv ``module`` reads of an input map of ``size`` for its outputs ``out``,
    inside the map (the rest is padding)."""
    window = []
    for dim, (first, last) in enumerate(out):
        lo = first * module.stride[dim] - module.padding[dim]
        hi = last * module.stride[dim] - module.padding[dim]
        hi += (module.kernel_size[dim] - 1) * module.dilation[dim]
        window.append((max(lo, 0), min(hi, int(size[dim]) - 1)))
    return window


def step_reads(
    step: Step, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor,
    y: Tensor, out: Window,
) -> tuple[Window, str] | None:  # fmt: skip
    """The window of ``step``'s input ``x`` that its outputs ``out`` (of ``y``) read, and how the
    step runs there (module docstring); None where it cannot. ``args``/``kwargs``: the node's
    evaluated arguments on ``x``."""
    size = x.shape[2:]
    if step.kind in ("conv", "unit"):
        if not numeric(step.module):  # "same": no numeric window
            return None
        return conv_reads(step.module, out, size), "conv"
    op = lookup(step.node, model)
    if op is None:
        return None
    target = step.module if step.node.op == "call_module" else step.node.target
    call = Call(target, args, kwargs, [Field.identity(size)], [x], y, str(step.node.name),
                {"computed": False})  # fmt: skip
    try:
        field = op.spatial(call)
    except Exception:  # no rule for these arguments: whole maps from here back
        return None
    if field.whole or len(field.lo) != len(out):
        return None
    window, mode = [], "pointwise"
    for dim, (first, last) in enumerate(out):
        lo, hi = field.lo[dim], field.hi[dim]
        j = torch.arange(len(lo))
        s, k = field.stride[dim], field.size[dim]
        if torch.equal(lo, j) and torch.equal(hi, j):
            window.append((first, last))
            continue
        # uniform windows from the first position, no padding: j reads [j·s, j·s + k − 1]
        inside = (j * s + k - 1) < int(size[dim])
        if field.start[dim] != 0 or not torch.equal(lo, j * s):
            return None
        if not torch.equal(hi[inside], (j * s + k - 1)[inside]):
            return None
        mode = "valid"
        window.append((int(lo[first]), int(hi[last])))
    return window, mode


def cut(y: Tensor, out: Window) -> Tensor:
    """The first ``last − first + 1`` positions of ``y`` ``(N, C, *map)`` per dimension: a
    ``"valid"`` step's outputs on its input window (a ceil-mode pooling may add a partial one)."""
    for dim, (first, last) in enumerate(out):
        y = y.narrow(2 + dim, 0, last - first + 1)
    return y
