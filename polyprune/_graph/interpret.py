"""Private (engine): propagate receptive fields over the traced graph, op by op (:mod:`.ops`).

Values that are tuples or lists of maps (``x.chunk(2, 1)``, a list of features passed to a
DenseNet layer) carry a tuple of fields, one per element, so no field is ever dropped on the way:
an operation whose inputs have fields either has a rule or is an error.
"""

from __future__ import annotations

import operator
from dataclasses import replace
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from .._model import eval_mode, model_dtype_device
from .field import Call, Field, ReceptiveFieldError
from .ops import describe, lookup
from .run import does_not_run
from .trace import GraphError, trace_to

__all__ = ["propagate"]

#: What a value of the graph carries: a field (a map), fields (a tuple/list of maps), or None.
Carried = Field | tuple[Any, ...] | None


class _Reached(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__("reached the target node")
        self.value = value


def _has_field(carried: Carried) -> bool:
    if isinstance(carried, tuple):
        return any(_has_field(c) for c in carried)
    return carried is not None


class _FieldInterpreter(fx.Interpreter):
    """Runs the graph on real tensors and propagates fields alongside each value."""

    def __init__(self, gm: fx.GraphModule, stop: fx.Node, image: Field) -> None:
        super().__init__(gm)
        self.fields: dict[fx.Node, Carried] = {}
        self._stop = stop
        self._image: Field | None = image

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.fields[n] = self._field(n, value)
        if n is self._stop:
            raise _Reached(value)
        return value

    def _carried(self, arg: Any) -> Carried:
        if isinstance(arg, fx.Node):
            return self.fields.get(arg)
        if isinstance(arg, list | tuple):
            inner = tuple(self._carried(a) for a in arg)
            return inner if _has_field(inner) else None
        return None

    def _field(self, n: fx.Node, value: Any) -> Carried:
        if n.op == "placeholder":
            image, self._image = self._image, None  # the first input is the image
            return image
        if n.op in ("get_attr", "output"):
            return None
        carried = [self._carried(a) for a in (*n.args, *n.kwargs.values())]
        if not any(_has_field(c) for c in carried):
            return None  # a constant: computed from parameters or literals only
        if not _holds_tensor(value):
            return None  # metadata of a map (its .size(), .dim(), .shape): no pixels
        where = f"node {n.name!r} ({describe(n, self.module)})"
        if n.op == "call_function" and n.target is operator.getitem:
            source = carried[0]
            if isinstance(source, tuple):  # an element (or a slice) of a tuple/list of maps
                picked: Carried = source[n.args[1]]  # type: ignore[index]
                return picked
        gates = _fields_in(carried)
        if all(f.pooled for f in gates):  # values with no spatial axes left: whatever the
            return _as_value(_merge_pooled(gates), value)  # operation, it sees their pixels only
        entry = lookup(n, self.module)
        if entry is None:
            raise ReceptiveFieldError(
                f"{where}: no receptive-field rule for this operation; polyprune does not guess "
                "(an exact crop needs one: add it to polyprune's op table, or measure the field "
                "with ReceptiveField.measure)"
            )
        raw = (*n.args, *n.kwargs.values())
        computed = any(c is None and _has_node(a) for c, a in zip(carried, raw, strict=True))
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        pairs = _flat_pairs(carried, [*args, *kwargs.values()])
        call = Call(
            self.fetch_attr(str(n.target)) if n.op == "call_module" else n.target,
            tuple(args), dict(kwargs), [f for f, _ in pairs], [t for _, t in pairs], value, where,
            {"computed": computed},
        )  # fmt: skip
        return _as_value(entry.spatial(call), value)


def _as_value(result: Field, value: Any) -> Carried:
    if isinstance(value, tuple | list):  # chunk / split / unbind: every piece alike
        return tuple(result for _ in value)
    return result


def _fields_in(carried: list[Carried]) -> list[Field]:
    """Every field the arguments carry, lists of maps flattened."""
    out: list[Field] = []
    for c in carried:
        out += _fields_in(list(c)) if isinstance(c, tuple) else [c] if c is not None else []
    return out


def _merge_pooled(fields: list[Field]) -> Field:
    """One pooled field for values that are all pooled: the union of their spans."""
    axes = range(len(fields[0].size))
    return replace(
        fields[0],
        lo=tuple(torch.stack([f.lo[i] for f in fields]).amin(0) for i in axes),
        hi=tuple(torch.stack([f.hi[i] for f in fields]).amax(0) for i in axes),
        whole=any(f.whole for f in fields),
        anchored=any(f.anchored for f in fields),
    )


def _has_node(arg: Any) -> bool:
    """Whether an argument was computed in the graph (from a map's size, say), not a literal."""
    if isinstance(arg, list | tuple):
        return any(_has_node(a) for a in arg)
    return isinstance(arg, fx.Node)


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    return isinstance(value, list | tuple) and any(_holds_tensor(v) for v in value)


def _flat_pairs(carried: list[Carried], values: list[Any]) -> list[tuple[Field, Tensor]]:
    """The (field, tensor) pairs of the arguments, lists of maps (torch.cat's) flattened."""
    pairs: list[tuple[Field, Tensor]] = []
    for c, v in zip(carried, values, strict=True):
        if isinstance(c, Field) and isinstance(v, Tensor):
            pairs.append((c, v))
        elif isinstance(c, tuple) and isinstance(v, list | tuple):
            pairs += _flat_pairs(list(c), list(v))
    return pairs


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
    interp = _FieldInterpreter(gm, node, Field.identity(size))
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
            what = "the input_size and in_channels of the images"
            raise does_not_run(model, (channels, *size), [layer], exc, what) from exc
    field = interp.fields.get(node)
    if (
        isinstance(field, Field) and field.pooled and isinstance(out, Tensor)
        and out.dim() >= 2 + len(field.size)
    ):  # fmt: skip
        field = field.spread(tuple(range(out.dim() - len(field.size), out.dim())), out.shape)
    if not isinstance(field, Field) or not isinstance(out, Tensor):
        raise ReceptiveFieldError(f"layer {layer!r} does not produce a 2-D map (N, C, H, W)")
    return field, tuple(out.shape)
