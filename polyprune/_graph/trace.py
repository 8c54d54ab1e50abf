"""Private (engine): the model's graph, traced with :mod:`torch.fx`, up to one named module.

Everything that needs to know *which computations feed a layer* (receptive fields, which
parameters can reach a unit) goes through :func:`trace_to`, so the question "what is upstream"
is answered from the data flow, never from module registration order.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import torch.fx as fx
from torch import nn

from .. import _validate as valid
from .._masking import check_plain_weight, is_maskable

__all__ = [
    "GraphError",
    "check_layer",
    "reachable_parameters",
    "trace_to",
    "upstream",
]


class GraphError(ValueError):
    """The model's graph cannot answer the question asked (untraceable, or unsupported op)."""


def check_layer(model: nn.Module, layer: str, name: str = "layer") -> nn.Module:
    """Return the submodule called ``layer``, or raise a ``ValueError`` naming close valid names
    (``name``: the argument that named it)."""
    valid.model("model", model)
    if not isinstance(layer, str):
        raise valid.ArgumentTypeError(
            f"{name} must be a module name (str), got {type(layer).__name__}"
        )
    modules: dict[str, nn.Module] = dict(model.named_modules())
    modules.pop("", None)
    if layer in modules:
        return modules[layer]
    close = difflib.get_close_matches(layer, list(modules), n=5, cutoff=0.5)
    hint = f"closest: {close}" if close else f"valid names include: {list(modules)[:12]}"
    where = "" if name == "layer" else f" (in {name})"
    raise ValueError(
        f"unknown layer {layer!r}{where} in {type(model).__name__}; use a name from "
        f"model.named_modules(), {hint}"
    )


class _Marking(fx.Tracer):
    """A tracer that records the output of every call of the module ``layer``.

    With ``leaf=False`` the layer is traced through like any module (its output is then the
    node its forward returns, so a container such as a ResNet block or a DenseNet layer needs no
    special case); with ``leaf=True`` it appears as one ``call_module`` node.
    """

    def __init__(self, layer: str, leaf: bool) -> None:
        super().__init__()
        self._layer, self._leaf = layer, leaf
        self._opaque: set[str] = set()
        self.outputs: list[Any] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from .ops import lookup_named  # the op table's rules import this module

        if module_qualified_name in self._opaque or lookup_named(m) is not None:
            return True  # untraceable, or another library's module with its own op entry
        if self._leaf and module_qualified_name == self._layer:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:  # fmt: skip
        path = self.path_of_module(m)
        stack, calls, marked = dict(self.module_stack), dict(self.num_calls), len(self.outputs)
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            # a submodule fx cannot trace through (control flow on a shape, as timm's VGG
            # head) becomes one opaque node: fine downstream of the layer, and upstream an op
            # with no entry is refused like any other; the layer itself must stay traceable
            if not path or path == self._layer or self._layer.startswith(path + "."):
                raise
            self.module_stack.clear()
            self.module_stack.update(stack)
            self.num_calls, self.outputs[marked:] = calls, []
            self._opaque.add(path)
            out = super().call_module(m, forward, args, kwargs)
        if self.path_of_module(m) == self._layer:
            self.outputs.append(out)
        return out


def trace_to(model: nn.Module, layer: str) -> tuple[fx.GraphModule, fx.Node]:
    """Trace ``model``; return the graph and the node of ``layer``'s output.

    The layer is traced through when its code allows (a container's output is the node its
    forward returns), else kept as one leaf node.

    ``layer`` is checked by the public call that asks (``check_layer``, once), not here.

    Raises
    ------
    GraphError
        If the model cannot be traced symbolically (data-dependent control flow, ...), or
        ``layer`` is called more than once (a shared module has no single position in the
        graph), never (also: no module of that name), or returns something other than one
        tensor.
    """
    last: Exception | None = None
    for leaf in (False, True):
        tracer = _Marking(layer, leaf)
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises many exception types for untraceable code
            last = exc
            continue
        break
    else:
        assert last is not None
        raise GraphError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(last).__name__}: {last}). "
            "polyprune needs the data flow up to the layer; use ReceptiveField.measure(...) to "
            "measure a unit's receptive field empirically instead"
        ) from last
    gm = fx.GraphModule(tracer.root, graph)
    if not tracer.outputs:
        raise GraphError(f"layer {layer!r} is never called in {type(model).__name__}.forward")
    if len(tracer.outputs) > 1:
        raise GraphError(
            f"layer {layer!r} is called {len(tracer.outputs)} times in the forward; a unit needs a "
            "module that is called once (give the repeated computation its own module)"
        )
    out = tracer.outputs[0]
    if not isinstance(out, fx.Proxy):
        raise GraphError(f"layer {layer!r} does not return a tensor ({type(out).__name__})")
    return gm, out.node  # GraphModule keeps the traced graph itself, nodes and all


def upstream(node: fx.Node) -> list[fx.Node]:
    """All nodes ``node`` depends on (itself included), in graph order."""
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return [n for n in node.graph.nodes if n in seen]


def _owner(model: nn.Module, qualified: str) -> nn.Module:
    owner_name, _, _ = qualified.rpartition(".")
    return model.get_submodule(owner_name) if owner_name else model


def reachable_parameters(model: nn.Module, layer: str) -> list[str]:
    """Names of the maskable weights (``"features.0.weight"``...) that can reach ``layer``.

    Found from the traced data flow: a weight is listed when its module's output is an
    ancestor of the layer's output (or the layer itself, or inside it). Returned in
    ``model.named_parameters()`` order.
    """
    return reachable_from(model, trace_to(model, layer)[1])


def reachable_from(model: nn.Module, node: fx.Node) -> list[str]:
    """:func:`reachable_parameters` for a node of a graph already traced with :func:`trace_to`."""
    names: set[str] = set()
    for n in upstream(node):
        if n.op == "call_module":
            sub = model.get_submodule(str(n.target))
            names.update(f"{qual}.weight" for qual in _maskable_names(sub, str(n.target)))
        elif n.op == "get_attr":
            owner = _owner(model, str(n.target))
            if is_maskable(owner) and str(n.target).endswith(".weight"):
                names.add(str(n.target))
    order = [name for name, _ in model.named_parameters()]
    return [name for name in order if name in names]


def _maskable_names(module: nn.Module, prefix: str) -> Iterable[str]:
    for name, sub in module.named_modules(prefix=prefix):
        check_plain_weight(sub, name)
        if is_maskable(sub):
            yield name
