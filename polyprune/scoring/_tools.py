"""Private: the machinery scorers share: gradients with respect to multiplicative masks, the
reduction of per-weight scores to a granularity, and the warning for all-zero scores."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .. import _masking as mk
from .. import _validate as valid
from ..masks import Scores
from ..targets import Unit

if TYPE_CHECKING:
    from ._base import ScoringJob

__all__ = ["mask_gradients", "reduce_to", "warn_if_all_zero"]


def reduce_to(per_weight: Tensor, granularity: str) -> Tensor:
    """Average weight-shaped scores over each kernel (``kernel``) or filter (``filter``).

    ``per_weight`` has a weight's shape: a Linear's ``(out, in)`` or a convolution's
    ``(out, in, *kernel)``.
    """
    mk.check_granularity(granularity)
    valid.instance("per_weight", per_weight, Tensor, "a weight-shaped tensor of scores")
    if per_weight.dim() < 2:
        raise ValueError(
            "per_weight must be weight-shaped, (out, in) or (out, in, *kernel), got shape "
            f"{tuple(per_weight.shape)}"
        )
    if granularity == "weight":
        return per_weight
    keep = 2 if granularity == "kernel" else 1
    if per_weight.dim() <= keep:
        return per_weight
    return per_weight.flatten(keep).mean(keep)


def _expander(leaf: Tensor, shape: tuple[int, ...]) -> Callable[[], Tensor]:
    return lambda: mk.expand(leaf, shape)


def mask_gradients(
    job: ScoringJob, masks: Mapping[str, Tensor], desc: str = "gradients"
) -> dict[str, Tensor]:
    """Σ over all images of ∂f/∂m, for multiplicative masks ``m`` on the named weights.

    Each weight ``w`` becomes ``w · m`` (``m`` broadcast over a kernel/filter) through a
    temporary parametrization, so ``∂f/∂m = Σ_element w · ∂f/∂(w·m)``: the gradient is taken
    at the masked network but scaled by the unmasked weights (a pruned element can score).
    With ``m = 1`` at weight granularity this is SNIP's ``w · ∂f/∂w``.
    """
    leaves: dict[str, Tensor] = {}
    for name, m in masks.items():
        weight = job.weight(name)
        leaves[name] = m.detach().to(device=weight.device, dtype=weight.dtype).requires_grad_()
    params = {
        name: mk.WeightMask(_expander(leaf, job.shapes[name])) for name, leaf in leaves.items()
    }
    totals = {name: torch.zeros_like(leaf) for name, leaf in leaves.items()}
    with mk.attach(job.model, params):
        for x in job.each_batch(desc):
            f = job.forward(x)
            if not f.requires_grad:
                continue
            grads = torch.autograd.grad(f, list(leaves.values()), allow_unused=True)
            for total, g in zip(totals.values(), grads, strict=True):
                if g is not None:
                    total += g
    return totals


def warn_if_all_zero(scores: Scores, unit: Unit) -> bool:
    """Warn (and return True) when every score in the region is 0: any cut is arbitrary."""
    if any(bool(s[scores.regions[n]].any()) for n, s in scores.items() if n in scores.regions):
        return False
    warnings.warn(
        f"every score for {unit} is 0 (the unit does not respond to any weight on these "
        "images: a dead or constant unit?); the subnetwork cut from them is arbitrary",
        UserWarning,
        stacklevel=3,
    )
    return True
