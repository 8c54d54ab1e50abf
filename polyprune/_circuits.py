"""Private (methods): how well a subnetwork recovers a known circuit (``pp.evaluation``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._graph.paths import kernel_view
from .masks import Masks

__all__ = ["CircuitScores", "circuit_scores"]


@dataclass(frozen=True)
class CircuitScores:
    """How well a subnetwork recovers a known circuit, counted in kernels ``(out, in)``.

    ``precision``: kept kernels that are in the circuit / kept kernels (0 when none is kept);
    ``recall``: circuit kernels kept / circuit kernels; ``f1``: their harmonic mean.
    """

    precision: float
    recall: float
    f1: float


def circuit_scores(masks: Masks, truth: Masks) -> CircuitScores:
    """Kernel precision, recall and F1 of ``masks`` against a known circuit ``truth``.

    Both are read as kernel connectivity (a kernel counts as kept when any of its weights is);
    only the kernels in ``truth``'s region (those that can reach the unit) count. ``truth``
    typically comes from :func:`polyprune.zoo.planted_network` or
    :func:`polyprune.zoo.handbuilt`.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> truth = pp.Masks({"w": torch.tensor([[True, True], [False, False]])}, "kernel")
    >>> found = pp.Masks({"w": torch.tensor([[True, False], [True, False]])}, "kernel")
    >>> pp.evaluation.circuit_scores(found, truth)
    CircuitScores(precision=0.5, recall=0.5, f1=0.5)
    """
    if set(truth) - set(masks):
        raise ValueError(
            f"masks has no mask for {sorted(set(truth) - set(masks))}, which the truth covers"
        )
    tp = fp = fn = 0
    for name, want_mask in truth.items():
        want = _kernels(truth, name, want_mask)
        got = _kernels(masks, name, masks[name])
        if got.shape != want.shape:
            raise ValueError(
                f"{name!r}: the masks have {tuple(got.shape)} kernels, the truth "
                f"{tuple(want.shape)}"
            )
        region = truth.regions.get(name)
        inside = _kernels(truth, name, region) if region is not None else torch.ones_like(want)
        got, want = got & inside, want & inside
        tp += int((got & want).sum())
        fp += int((got & ~want).sum())
        fn += int((~got & want).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return CircuitScores(precision, recall, f1)


def _kernels(masks: Masks, name: str, mask: Tensor) -> Tensor:
    """A mask as ``(out, in)`` kernel connectivity (a weight-granularity kernel: any weight)."""
    shape = masks.weight_shapes.get(name)
    if shape is None and masks.granularity == "filter":
        raise ValueError(f"filter masks need their weight shapes to be read as kernels ({name!r})")
    return kernel_view(mask, masks.granularity, shape or tuple(mask.shape))
