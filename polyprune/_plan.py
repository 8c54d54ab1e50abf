"""Private (methods): how a batch is cut before a unit is read — crop to the unit's exact
receptive field, or use whole images where no crop is needed or none can be derived."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._graph.field import ReceptiveFieldError
from ._graph.run import forward_until, read_unit
from ._model import to_model
from ._unit_io import placed
from .receptive_field import ReceptiveField
from .targets import Unit

__all__ = ["Plan", "forward", "whole_images"]


@dataclass(frozen=True)
class Plan:
    """How every batch is cut: the field (None: whole images), the placed unit, and where the
    unit sits in what the model sees."""

    unit: Unit
    field: ReceptiveField | None
    at: tuple[int, int] | None

    @classmethod
    def make(cls, model: nn.Module, unit: Unit, batch: Tensor, crop: bool | ReceptiveField) -> Plan:
        at = placed(model, unit, batch)  # the position in the full image's map, checked
        position = at.position
        if crop is False or position is None:
            return cls(at, None, position)
        size = (int(batch.shape[2]), int(batch.shape[3]))
        if isinstance(crop, ReceptiveField):
            field = crop
            if field.layer != unit.layer or field.input_size != size:
                raise ValueError(
                    f"crop is the field of {field.layer!r} at {field.input_size}, but the unit's "
                    f"layer is {unit.layer!r} and the images are {size}"
                )
        else:
            try:
                field = ReceptiveField.of(model, unit.layer, size, in_channels=int(batch.shape[1]))
            except ReceptiveFieldError as exc:
                whole_images(unit, str(exc))
                return cls(at, None, position)
        if field.output_size == (1, 1) or field.covers_input(position):
            return cls(at, None, position)  # the unit sees the whole image: nothing to cut
        plan = cls(at, field, position)
        try:  # some models accept only their own input size (a ViT asserts it): try one crop
            kept = plan._keeps_activation(model, batch[:1] if not field.measured else batch)
        except Exception as exc:  # the whole image ran (placed() above): the crop is the cause
            whole_images(unit, f"the model does not run on crops ({type(exc).__name__}: {exc})")
            return cls(at, None, position)
        if field.measured and not kept:
            whole_images(unit, "the measured field's crop changes the unit's activation")
            return cls(at, None, position)
        return plan

    def _keeps_activation(self, model: nn.Module, batch: Tensor) -> bool:
        """Whether the unit reads the same on this batch cropped and whole (up to rounding)."""
        x, crop_at = self.cut(batch)
        cropped = read_unit(forward(model, x, self.unit.layer), None, crop_at)
        if not self.field or not self.field.measured:
            return True  # derived fields are exact by construction: the run itself is the check
        whole = read_unit(forward(model, batch, self.unit.layer), None, self.at)
        scale = 1e-5 * float(whole.abs().max())
        return bool(torch.allclose(cropped, whole, rtol=1e-4, atol=scale))

    def cut(self, batch: Tensor) -> tuple[Tensor, tuple[int, int] | None]:
        if self.field is None:
            return batch, self.at
        return self.field.crop(batch, self.at)


def forward(model: nn.Module, x: Tensor, layer: str) -> Tensor:
    return forward_until(model, to_model(x, model), [layer])[layer]


def whole_images(unit: Unit, why: str) -> None:
    warnings.warn(
        f"no exact receptive field for {unit.layer!r}, so whole images are used instead of crops "
        f"(as with crop=False; the activations are exact either way): {why}",
        UserWarning,
        stacklevel=5,
    )
