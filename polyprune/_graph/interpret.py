"""Private (kernel): propagate receptive fields over the traced graph, op by op (:mod:`.ops`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from .._model import eval_mode, model_dtype_device
from .field import Field, ReceptiveFieldError
from .ops import describe, lookup
from .trace import GraphError, trace_to

__all__ = ["propagate"]


class _Reached(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__("reached the target node")
        self.value = value


class _FieldInterpreter(fx.Interpreter):
    """Runs the graph on real tensors and propagates a :class:`Field` alongside each value."""

    def __init__(
        self, gm: fx.GraphModule, stop: fx.Node | None, placeholder_fields: list[Field | None]
    ) -> None:
        super().__init__(gm)
        self.fields: dict[fx.Node, Field | None] = {}
        self._stop = stop
        self._placeholders = iter(placeholder_fields)

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.fields[n] = self._field(n, value)
        if n is self._stop:
            raise _Reached(value)
        return value

    def _field(self, n: fx.Node, value: Any) -> Field | None:
        if n.op == "placeholder":
            return next(self._placeholders, None)
        if n.op == "output":
            fields = [self.fields[a] for a in n.all_input_nodes]
            return fields[0] if len(fields) == 1 else None
        inputs = [a for a in n.all_input_nodes if self.fields.get(a) is not None]
        if n.op == "get_attr" or not inputs or not isinstance(value, Tensor):
            return None
        where = f"node {n.name!r} ({describe(n, self.module)})"
        if value.dim() < 3:
            raise ReceptiveFieldError(
                f"{where} has no spatial dimensions (output shape {tuple(value.shape)}): after a "
                "flatten or linear layer every unit sees the whole input; choose an earlier layer"
            )
        in_fields = [self.fields[a] for a in inputs]
        in_values = [self.env[a] for a in inputs]
        target: Any = self.fetch_attr(str(n.target)) if n.op == "call_module" else n.target
        entry = lookup(n, self.module)
        if entry is None and n.op == "call_module" and next(target.children(), None) is not None:
            return _through_module(target, self, n)  # a container used as the layer
        if entry is None:
            raise ReceptiveFieldError(
                f"{where}: no receptive-field rule for this operation; polyprune does not guess. "
                "Use ReceptiveField.probe(...) to measure the field empirically"
            )
        return entry.spatial(
            target, [f for f in in_fields if f is not None], in_values, value, where
        )


def _through_module(module: nn.Module, outer: _FieldInterpreter, n: fx.Node) -> Field | None:
    """Propagate a field through a non-leaf module (e.g. a ResNet block used as the layer)."""
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:
        raise ReceptiveFieldError(f"cannot trace module {n.target!r}: {exc}") from exc
    args, _ = outer.fetch_args_kwargs_from_env(n)
    fields = [outer.fields.get(a) if isinstance(a, fx.Node) else None for a in n.args]
    inner = _FieldInterpreter(gm, None, fields)
    inner.run(*args)
    output = next(node for node in gm.graph.nodes if node.op == "output")
    return inner.fields[output]


def propagate(
    model: nn.Module, layer: str, size: tuple[int, int], channels: int
) -> tuple[Field, tuple[int, ...]]:
    """The field of ``layer``'s output for ``channels``×``size`` images, and that output's shape.

    Runs the traced graph once on a zero image (eval mode, no gradients, flags restored).
    """
    try:
        gm, node = trace_to(model, layer)
    except GraphError as exc:
        raise ReceptiveFieldError(str(exc)) from exc
    dtype, device = model_dtype_device(model)
    x = torch.zeros(1, channels, *size, dtype=dtype, device=device)
    interp = _FieldInterpreter(gm, node, [Field.identity(size)])
    out: Any = None
    with eval_mode(model), torch.no_grad():
        try:
            interp.run(x)
        except _Reached as reached:
            out = reached.value
        except ReceptiveFieldError as exc:  # drop torch.fx's "While executing ..." addendum
            message = str(exc.args[0]).split("\n\nWhile executing")[0]
            raise ReceptiveFieldError(message) from None
        except RuntimeError as exc:
            raise ValueError(
                f"{type(model).__name__} fails on a {channels}×{size[0]}×{size[1]} input before "
                f"reaching {layer!r} (input too small, or wrong in_channels?): {exc}"
            ) from exc
    field = interp.fields.get(node)
    if field is None or not isinstance(out, Tensor):
        raise ReceptiveFieldError(f"layer {layer!r} does not produce a 2-D map (N, C, H, W)")
    return field, tuple(out.shape)
