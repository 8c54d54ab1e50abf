"""Private: read one unit's activation on a batch, and validate image/membership inputs."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ._hooks import eval_mode, forward_until, model_dtype_device
from .targets import Unit, layer_output_shape

if TYPE_CHECKING:
    from .masks import Masks

__all__ = [
    "check_images",
    "check_members",
    "resolve_position",
    "unit_activation",
    "unit_activations",
]


def check_images(images: Any, name: str = "images") -> Tensor:
    """A 4-D floating-point tensor of finite values, or a ``ValueError``/``TypeError``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return images


def check_members(members: Any, n: int) -> Tensor:
    """A bool vector of length ``n`` with at least one member and one non-member."""
    if not isinstance(members, Tensor):
        try:
            members = torch.as_tensor(members)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"members must be a bool tensor aligned with images, got {type(members).__name__}"
            ) from exc
    if members.dtype != torch.bool:
        if members.is_floating_point() or members.is_complex():
            raise ValueError(f"members must be a bool tensor (or 0/1 ints), got {members.dtype}")
        if not bool(((members == 0) | (members == 1)).all()):
            raise ValueError("members must be a bool tensor (or 0/1 ints), got other values")
        members = members.bool()
    if members.dim() != 1 or members.shape[0] != n:
        raise ValueError(
            f"members must have shape ({n},), one flag per image, got {tuple(members.shape)}"
        )
    n_in = int(members.sum())
    if n_in == 0:
        raise ValueError("members has no member: the cluster to fit is empty")
    if n_in == n:
        raise ValueError(
            "members has no non-member: every image is in the cluster, so there is nothing to "
            "separate it from (add the other cluster's images, or non-top images, as negatives)"
        )
    flags: Tensor = members.detach().cpu()
    return flags


def resolve_position(
    model: nn.Module, unit: Unit, image_size: tuple[int, int], in_channels: int
) -> tuple[int, int] | None:
    """The unit's map position: ``unit.position`` or the map's center ``((H-1)//2, (W-1)//2)``.

    ``None`` for a layer without a spatial map (Linear). Raises ``ValueError`` when the given
    position is outside the layer's map for images of ``image_size``.
    """
    shape = layer_output_shape(model, unit.layer, image_size, in_channels)
    if len(shape) < 4:
        return None
    h, w = shape[-2], shape[-1]
    if unit.position is None:
        return ((h - 1) // 2, (w - 1) // 2)
    i, j = unit.position
    if i >= h or j >= w:
        raise ValueError(
            f"unit position {unit.position} is outside the {h}×{w} map of {unit.layer!r} for "
            f"{image_size[0]}×{image_size[1]} images (valid: i < {h}, j < {w})"
        )
    return (i, j)


def unit_activation(
    model: nn.Module, x: Tensor, unit: Unit, position: tuple[int, int] | None
) -> Tensor:
    """The unit's activation, shape (N,), with the forward stopped right after its layer."""
    out = forward_until(model, x, [unit.layer])[unit.layer]
    value: Tensor = (
        out[:, unit.channel] if position is None else out[:, unit.channel, position[0], position[1]]
    )
    return value


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
    dtype, device = model_dtype_device(model)
    size = (int(images.shape[2]), int(images.shape[3]))
    position = resolve_position(model, unit, size, int(images.shape[1]))
    applied: AbstractContextManager[Any] = masks.applied(model) if masks else nullcontext()
    with eval_mode(model), applied:
        out = [
            unit_activation(model, x.to(device, dtype), unit, position).float().cpu()
            for x in torch.split(images, batch_size)
        ]
    return torch.cat(out)
