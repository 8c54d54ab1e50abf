"""Private (engine): which mask elements can reach a unit (the region of its subnetwork)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import Tensor, nn

from .._masking import check_granularity, check_untied, is_maskable, mask_shape
from .ops import lookup
from .trace import GraphError, reachable_from, trace_to

__all__ = [
    "channel_producer",
    "last_declared_channels",
    "layer_channels",
    "unit_regions",
]


def _producer(node: fx.Node, model: nn.Module) -> fx.Node | None:
    """Walk back from ``node`` through channel-wise ops to the maskable layer that makes it."""
    while True:
        if node.op == "call_module" and is_maskable(model.get_submodule(str(node.target))):
            return node
        op = lookup(node, model)
        if op is None or op.channels != "keep":
            return None
        tensors = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if len(tensors) != 1:
            return None
        node = tensors[0]


def channel_producer(model: nn.Module, layer: str) -> str | None:
    """The Conv/Linear module whose output channels are ``layer``'s (``layer`` itself, or the one
    behind channel-wise operations such as ReLU or BatchNorm); ``None`` if there is none."""
    _, node = trace_to(model, layer)
    producer = _producer(node, model)
    return None if producer is None else str(producer.target)


def unit_regions(
    model: nn.Module, layer: str, channel: int, granularity: str
) -> tuple[dict[str, tuple[int, ...]], dict[str, Tensor]]:
    """Weight shapes and regions (mask elements that can reach the unit) for a unit's subnetwork.

    Every maskable weight upstream of ``layer`` in the traced graph is in; the layer that
    produces the unit's channel (``layer`` itself, or the Conv/Linear behind channel-wise ops
    such as ReLU/BatchNorm when ``layer`` names one of those) contributes only the fan-in of
    ``channel``.
    """
    check_granularity(granularity)
    _, node = trace_to(model, layer)
    producer = _producer(node, model)
    restricted = f"{producer.target}.weight" if producer is not None else None
    shapes: dict[str, tuple[int, ...]] = {}
    regions: dict[str, Tensor] = {}
    params = dict(model.named_parameters())
    reachable = reachable_from(model, node)
    check_untied(model, reachable)
    for name in reachable:
        shape = tuple(params[name].shape)
        region = torch.ones(mask_shape(shape, granularity), dtype=torch.bool)
        if name == restricted:
            if not 0 <= channel < shape[0]:
                raise ValueError(
                    f"channel {channel} is out of range for {layer!r} ({shape[0]} channels)"
                )
            region.zero_()
            region[channel] = True
        shapes[name], regions[name] = shape, region
    return shapes, regions


#: Module attributes that state a layer's output channel count.
_CHANNEL_ATTRS = ("out_channels", "out_features", "num_features")


def _declared(module: nn.Module) -> int | None:
    """The output channel count ``module`` states itself (None: it states none)."""
    values = (getattr(module, attr, None) for attr in _CHANNEL_ATTRS)
    return next((v for v in values if isinstance(v, int)), None)


def layer_channels(model: nn.Module, layer: str) -> int | None:
    """The layer's channel count from its module, or the Conv/Linear behind it (None: unknown).
    ``layer`` is a checked name (``trace.check_layer``)."""
    declared = _declared(model.get_submodule(layer))
    if declared is not None:
        return declared
    try:
        producer = channel_producer(model, layer)
    except GraphError:
        return None
    return None if producer is None else layer_channels(model, producer)


def last_declared_channels(module: nn.Module) -> int | None:
    """The channel count the module, or else its last submodule that states one, declares.

    A hint of the layout of its output: a block whose last Linear/LayerNorm works on the last
    dimension (channels-last) declares the size of that dimension.
    """
    for sub in reversed(list(module.modules())):
        declared = _declared(sub)
        if declared is not None:
            return declared
        shape = getattr(sub, "normalized_shape", None)
        if isinstance(shape, tuple) and shape and isinstance(shape[-1], int):
            return shape[-1]
    return None
