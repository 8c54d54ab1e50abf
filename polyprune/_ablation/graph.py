"""Private (methods): what ablation needs of the traced graph: the order in which to visit the
weights, whether a layer dominates the unit, each kernel's contribution map, and the unit's
activation computed from a dominating layer's input onwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .._graph.run import read_unit
from .._graph.trace import trace_to, upstream
from .._unit_io import unit_activation
from ..targets import Unit

__all__ = ["FromLayer", "contributions", "dominates", "order"]

_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def order(model: nn.Module, layer: str, names: list[str]) -> list[str]:
    """The maskable weights ``names`` from the unit back to the input (reverse graph order)."""
    _, target = trace_to(model, layer)
    seen = [f"{n.target}.weight" for n in upstream(target) if n.op == "call_module"]
    ordered = [n for n in seen if n in names]
    return list(reversed(ordered)) + [n for n in names if n not in ordered]


def dominates(model: nn.Module, layer: str, module: str) -> bool:
    """Whether every path from the input to ``layer``'s output runs through ``module``."""
    _, target = trace_to(model, layer)
    nodes = set(upstream(target))
    cut = [n for n in nodes if n.op == "call_module" and n.target == module]
    if len(cut) != 1:
        return False
    stack = [n for n in nodes if n.op == "placeholder"]
    seen: set[Any] = set()
    while stack:
        n = stack.pop()
        if n in seen or n is cut[0]:
            continue
        seen.add(n)
        stack.extend(u for u in n.users if u in nodes)
    return target not in seen


def contributions(
    module: nn.Module, x: Tensor, rows: Tensor, cols: Tensor, weight: Tensor | None = None
) -> Tensor:
    """``w_oi ∗ x_i`` for the kernels ``(rows[k], cols[k])``: ``(N, K, *map)`` (channels at 1);
    ``w`` is ``weight`` if given (e.g. the unmasked weight), else the module's."""
    if weight is None:
        weight = module.weight  # type: ignore[assignment]
    assert weight is not None
    if isinstance(module, nn.Linear):
        c = x[..., cols] * weight[rows, cols]
        return c.movedim(-1, 1)
    assert isinstance(module, nn.modules.conv._ConvNd)
    out, fan_in = weight.shape[:2]
    groups = int(module.groups)
    channels = (rows // (out // groups)) * fan_in + cols
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding: Any = 0
    else:
        padding = module.padding
    kernels = weight[rows, cols].unsqueeze(1)
    conv = _CONV[weight.dim() - 2]
    return conv(x[:, channels], kernels, None, module.stride, padding, module.dilation, len(rows))


class FromLayer:
    """The unit's activation computed from a layer's input onwards: while the layer is
    ablated its input does not change, so it is computed once per image batch and each
    evaluation runs only the graph after it. ``ok``: whether that is possible (the layer is
    called once, and nothing after it reads the graph before it but that input)."""

    def __init__(self, model: nn.Module, unit: Unit, module: str) -> None:
        gm, self.target = trace_to(model, unit.layer)
        nodes = upstream(self.target)
        calls = [n for n in nodes if n.op == "call_module" and n.target == module]
        source = calls[0].args[0] if len(calls) == 1 and calls[0].args else None
        self.ok = isinstance(source, fx.Node)
        if not isinstance(source, fx.Node):
            return
        self.input: fx.Node = source
        before = set(upstream(self.input))
        self.rest = [n for n in nodes if n not in before]
        reads = {a for n in self.rest for a in n.all_input_nodes if a in before}
        self.ok = reads == {self.input}  # nothing after it reads the graph before it
        self.interpreter = fx.Interpreter(gm)  # calls the model's own modules (masks, hooks)
        self.module, self.unit = model.get_submodule(module), unit

    def inputs(self, model: nn.Module, batches: list[Tensor]) -> list[Tensor]:
        """The layer's input on each batch (one forward pass each, stopped at the unit)."""
        seen: list[Tensor] = []
        handle = self.module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
        try:
            for x in batches:
                unit_activation(model, x, self.unit)
        finally:
            handle.remove()
        return seen

    def activation(self, x: Tensor) -> Tensor:
        env: dict[fx.Node, Any] = {self.input: x}
        self.interpreter.env = env
        try:
            for node in self.rest:
                env[node] = self.interpreter.run_node(node)
            return read_unit(env[self.target], self.unit.channel, self.unit.position)
        finally:
            self.interpreter.env = {}
