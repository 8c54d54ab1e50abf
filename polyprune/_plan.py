"""Private (methods): how a batch is cut before a unit is read — crop to the unit's exact
receptive field, or use whole images where no crop is needed or none can be derived.

The plan is made on the first batch without a run of its own: the field and the unit's
position come from the traced graph (:meth:`ReceptiveField.of`), and the first batch's own
forward checks the rest (the layer's layout and channels; that the model runs on crops). Only
a measured field costs a second forward on the first batch: the whole images, to compare.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._graph.field import ReceptiveFieldError
from ._graph.run import check_unit_layout, forward_until, read_unit, resolve_position, run_images
from ._model import to_model
from ._unit_io import place, where
from .receptive_field import ReceptiveField
from .targets import Unit

__all__ = ["Plan", "first_batch", "run_batch", "share_crops"]

Runs = dict[str, tuple[Tensor, Tensor]]  # layer -> (what the model saw, the layer's output)


@dataclass(frozen=True)
class Plan:
    """How every batch is cut: the field (None: whole images), the placed unit, and where the
    unit sits in the full image's map."""

    unit: Unit
    field: ReceptiveField | None
    at: tuple[int, int] | None

    def cut(self, batch: Tensor) -> tuple[Tensor, tuple[int, int] | None]:
        if self.field is None:
            return batch, self.at
        return self.field.crop(batch, self.at)


def _draft(
    model: nn.Module, unit: Unit, batch: Tensor, crop: bool | ReceptiveField
) -> tuple[Plan, str | None]:
    """The crop from the traced graph alone: a plan with a field and the unit's position in
    the full map, or whole images (position still unknown) and why no field could be derived."""
    whole = Plan(unit, None, None)
    if crop is False:
        return whole, None
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
            # the layer was checked by the public call: no second check per unit and batch
            field = ReceptiveField._derive(model, unit.layer, size, int(batch.shape[1]))
        except ReceptiveFieldError as exc:
            return whole, str(exc)
    position = resolve_position(unit.position, field.output_size, where(unit, size))
    at = (position[0], position[1])
    if field.output_size == (1, 1) or field.covers_input(at):
        return whole, None  # the unit sees the whole image: nothing to cut
    return Plan(unit, field, at), None


def first_batch(
    model: nn.Module, units: Sequence[Unit], batch: Tensor, crop: bool | ReceptiveField
) -> tuple[dict[str, Plan], dict[str, tuple[int, int] | None], Runs]:
    """Plan each unit's cut (one unit per layer) and run the first batch: the plans, where
    each unit sits in what the model sees, and each layer's run on this batch.

    A crop the model does not run on, or a measured field whose crop changes the activation,
    falls back to whole images with a warning, as does a layer with a map but no derivable
    field; the activations are exact either way, the crop only saves work.
    A model that does not run on the whole images themselves is refused here with one
    ``ValueError`` (:func:`run_images`), before any other batch is read.
    """
    drafts = {unit.layer: _draft(model, unit, batch, crop) for unit in units}
    runs: Runs = {}
    for names in share_crops({name: plan for name, (plan, _) in drafts.items()}):
        field = drafts[names[0]][0].field
        if field is None:
            runs.update(_run(model, batch, names, whole=True))
            continue
        x, _ = drafts[names[0]][0].cut(batch)
        try:
            runs.update(_run(model, x, names))
        except Exception as exc:  # the crop is the cause if the whole images run (below)
            whole, fallen = _run(model, batch, names, whole=True), names
            why = f"the model does not run on crops ({type(exc).__name__}: {exc})"
        else:
            if not field.measured:
                continue  # a derived field is exact by construction: the run was the check
            whole = _run(model, batch, names, whole=True)  # a measured one is checked on this batch
            fallen = [name for name in names if not _same(drafts[name][0], runs, whole)]
            why = "the measured field's crop changes the unit's activation"
        for name in fallen:
            warnings.warn(_whole_images(name, why), UserWarning, stacklevel=4)
            drafts[name], runs[name] = (Plan(drafts[name][0].unit, None, None), None), whole[name]
    size = (int(batch.shape[2]), int(batch.shape[3]))
    plans, seen_at = {}, {}
    for unit in units:
        (draft, why_not), (_, out) = drafts[unit.layer], runs[unit.layer]
        shape = (1, *out.shape[1:])  # as one image's output
        if draft.field is not None:
            check_unit_layout(model, unit.layer, shape)
            shape = (1, shape[1], *draft.field.output_size)  # the full image's map
        placed = place(model, unit, shape, size)
        if why_not is not None and len(shape) == 4:
            warnings.warn(_whole_images(unit.layer, why_not), UserWarning, stacklevel=4)
        plans[unit.layer] = plan = Plan(placed, draft.field, placed.position)
        seen_at[unit.layer] = plan.cut(batch[:1])[1]
    return plans, seen_at, runs


def run_batch(model: nn.Module, plans: Mapping[str, Plan], batch: Tensor) -> Runs:
    """Each layer's run on ``batch``, cut as planned; layers that share a crop share a forward."""
    runs: Runs = {}
    for names in share_crops(plans):
        runs.update(_run(model, plans[names[0]].cut(batch)[0], names))
    return runs


def share_crops(plans: Mapping[str, Plan]) -> list[list[str]]:
    """Layers grouped by the crop they need (whole images, or one crop box): one forward each."""
    groups: dict[object, list[str]] = {}
    for name, plan in plans.items():
        key = None if plan.field is None else plan.field.crop_box(plan.at)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _run(model: nn.Module, x: Tensor, names: list[str], whole: bool = False) -> Runs:
    """Each layer's run on ``x``; on ``whole`` images (the caller's own), a model that does not
    run on them is refused with one clear error (:func:`run_images`), on crops it raises as is."""
    outs = (run_images if whole else forward_until)(model, to_model(x, model), names)
    return {name: (x, outs[name]) for name in names}


def _same(draft: Plan, cropped: Runs, whole: Runs) -> bool:
    """Whether the unit's layer reads the same on the crops and the whole images (up to
    rounding)."""
    name = draft.unit.layer
    a = read_unit(cropped[name][1], None, draft.cut(whole[name][0][:1])[1])
    b = read_unit(whole[name][1], None, draft.at)
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())))


def _whole_images(layer: str, why: str) -> str:
    return (
        f"no exact receptive field for {layer!r}, so whole images are used instead of crops "
        f"(as with crop=False; the activations are exact either way): {why}"
    )
