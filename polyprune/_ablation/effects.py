"""Private (methods): one zero-ablation run over a given subnetwork, and each kept kernel's
removal effect in it (:func:`removal_effects`, public as
:func:`polyprune.ablation.removal_effects`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._cs.loss import both
from ..targets import Unit
from . import ObjectiveFn
from . import _Ablator as Ablator
from .graph import dominates

__all__ = ["removal_effects", "removals", "subnetwork_run"]


def removal_effects(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    kernels: dict[str, Tensor],
    *,
    objective: ObjectiveFn = both,
    batch_size: int = 256,
    max_batch: int = 2048,
    effects: bool = True,
) -> tuple[float, dict[str, Tensor]]:
    """The objective of the subnetwork ``kernels`` (kept ``(out, in)`` per weight; missing: all)
    and, per kept kernel of the region, how much removing it alone changes the objective (0
    elsewhere). Batched as :func:`ablate`; the model is left as found."""
    run = subnetwork_run(model, unit, images, members, kernels, objective, batch_size, max_batch)
    return removals(run, max(1, max_batch // run.batch_size), effects)


def removals(
    run: Ablator, per_forward: int, effects: bool = True
) -> tuple[float, dict[str, Tensor]]:
    """:func:`removal_effects` on ``run``'s kept kernels (into ``run.effects``, returned);
    ``per_forward`` candidates per pass."""
    with run.masked():
        base = run.current()
        for name in run.shapes if effects else ():
            run._expand = dominates(run.model, run.unit.layer, name.rpartition(".")[0])
            run.start(name.rpartition(".")[0])
            candidates = (run.kept[name] & run.regions[name]).nonzero()
            for chunk in torch.split(candidates, per_forward):
                if len(chunk):
                    rows, cols = chunk[:, 0], chunk[:, 1]
                    run.effects[name][rows, cols] = (
                        run.try_removals(name, rows, cols) - base
                    ).float()
        run.start(None)
    return base, run.effects


def subnetwork_run(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    kernels: dict[str, Tensor],
    objective: ObjectiveFn,
    batch_size: int,
    max_batch: int,
) -> Ablator:
    """A zero-ablation run whose kept kernels are the subnetwork ``kernels`` (missing: all)."""
    run = Ablator(model, unit, images, members, objective, False,
                  min(batch_size, images.shape[0]), max_batch)  # fmt: skip
    for name, kept in kernels.items():
        if name in run.kept:
            run.kept[name] = kept.to(torch.bool).clone()
    return run
