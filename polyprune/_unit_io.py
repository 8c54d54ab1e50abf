"""Private (engine): place a unit on the images at hand, and read it on many images.

The one way to read a unit: :func:`placed` resolves its position for images of a given size (the
map's center unless the unit has one), then :func:`unit_activation` runs the model up to the
unit's layer and reads that position (:func:`polyprune._graph.run.read_unit`).
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ._graph.run import (
    check_unit_layout,
    forward_until,
    layer_output_shape,
    read_unit,
    resolve_position,
)
from ._model import eval_mode, to_model

if TYPE_CHECKING:  # types only: this module sits below the core types
    from .masks import Masks
    from .targets import Unit

__all__ = ["place", "placed", "unit_activation", "unit_activations", "where"]


def placed(model: nn.Module, unit: Unit, sample: Tensor) -> Unit:
    """``unit`` with its position resolved for images like ``sample`` (a batch; one image runs).

    The position is ``unit.position`` (checked against the map) or the map's center
    ``((H - 1) // 2, (W - 1) // 2)``; ``None`` for a layer whose output is ``(N, C)``. Layers
    whose output is neither ``(N, C, H, W)`` nor ``(N, C)`` are refused.
    """
    shape = layer_output_shape(model, unit.layer, to_model(sample[:1], model))
    return place(model, unit, shape, (int(sample.shape[-2]), int(sample.shape[-1])))


def place(model: nn.Module, unit: Unit, shape: tuple[int, ...], size: tuple[int, int]) -> Unit:
    """:func:`placed` for a known output ``shape`` of ``unit.layer`` on images of ``size``."""
    check_unit_layout(model, unit.layer, shape)
    if not 0 <= unit.channel < shape[1]:
        raise ValueError(
            f"channel {unit.channel} is out of range for {unit.layer!r}, which has {shape[1]} "
            f"channels (valid: 0..{shape[1] - 1})"
        )
    if len(shape) == 2:
        if unit.position is not None:
            raise ValueError(
                f"{unit.layer!r} outputs vectors {shape}: it has no map, so a unit of it has no "
                f"position (got {unit.position})"
            )
        return dataclasses.replace(unit, position=None)
    i, j = resolve_position(unit.position, shape[2:], where(unit, size))
    return dataclasses.replace(unit, position=(i, j))


def where(unit: Unit, size: tuple[int, int]) -> str:
    """The layer and input size, as position errors name them."""
    return f"{unit.layer!r} for {size[0]}×{size[1]} images"


def unit_activation(model: nn.Module, x: Tensor, unit: Unit) -> Tensor:
    """The placed unit's activation, shape (N,), with the forward stopped right after its layer."""
    out = forward_until(model, x, [unit.layer])[unit.layer]
    return read_unit(out, unit.channel, unit.position)


@torch.no_grad()
def unit_activations(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    masks: Masks | None = None,
    batch_size: int = 256,
) -> Tensor:
    """The unit's activation on every image, shape (N,), float32 on the CPU.

    Batched, in eval mode, with ``masks`` applied when given; the model is restored after. The
    position is ``unit.position`` or the center of the unit's map for these images.
    """
    at = placed(model, unit, images)
    applied: AbstractContextManager[Any] = masks.applied(model) if masks else nullcontext()
    with eval_mode(model), applied:
        out = [
            unit_activation(model, to_model(x, model), at).float().cpu()
            for x in torch.split(images, batch_size)
        ]
    return torch.cat(out)
