"""Private (methods): how well a subnetwork recovers a known circuit (``pp.evaluation``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import _stats
from . import _validate as valid
from ._graph.paths import kernel_view
from .masks import Masks

__all__ = ["CircuitScores", "circuit_scores"]


@dataclass(frozen=True)
class CircuitScores:
    """How well a subnetwork recovers a known circuit, counted in kernels ``(out, in)``.

    ``precision``: kept kernels that are in the circuit / kept kernels (0 when none is kept);
    ``recall``: circuit kernels kept / circuit kernels; ``f1``: their harmonic mean;
    ``roc_auc``: threshold-free, from the method's continuous scores (NaN without scores): the
    probability that a random circuit kernel scores above a random other kernel of the region
    (ties count ½), the area under the ROC curve of kernel recovery over every threshold.
    """

    precision: float
    recall: float
    f1: float
    roc_auc: float = math.nan


def circuit_scores(
    masks: Masks, truth: Masks, scores: Mapping[str, Tensor] | None = None
) -> CircuitScores:
    """Kernel precision, recall and F1 of ``masks`` against a known circuit ``truth``, and the
    kernel-recovery ROC AUC of the continuous ``scores`` behind them.

    Both masks are read as kernel connectivity (a kernel counts as kept when any of its weights
    is); only the kernels in ``truth``'s region (those that can reach the unit) count. ``truth``
    typically comes from :func:`polyprune.zoo.planted_network` or
    :func:`polyprune.zoo.handbuilt`.

    ``scores`` (optional; higher = more important): one score per kernel ``(out, in)``, or per
    weight (a kernel scores its largest weight's), keyed like ``truth``: a scorer's
    :class:`~polyprune.masks.Scores`, Continuous Sparsification's final mask logits
    (``sub.state["logits"]``), ablation's effect sizes. Positives are the circuit's kernels,
    negatives every other kernel of the region.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> truth = pp.Masks({"w": torch.tensor([[True, True], [False, False]])}, "kernel")
    >>> found = pp.Masks({"w": torch.tensor([[True, False], [True, False]])}, "kernel")
    >>> pp.evaluation.circuit_scores(found, truth)
    CircuitScores(precision=0.5, recall=0.5, f1=0.5, roc_auc=nan)
    >>> scores = {"w": torch.tensor([[0.9, 0.2], [0.4, 0.1]])}  # one negative above a positive
    >>> pp.evaluation.circuit_scores(found, truth, scores).roc_auc
    0.75
    """
    valid.instance("masks", masks, Masks, "a polyprune.Masks (a Subnetwork's .masks)")
    valid.instance("truth", truth, Masks, "a polyprune.Masks (a Subnetwork's .masks)")
    if set(truth) - set(masks):
        raise ValueError(
            f"masks has no mask for {sorted(set(truth) - set(masks))}, which the truth covers"
        )
    tp = fp = fn = 0
    for name, want, inside in _truth_kernels(truth):
        got = _kernels(masks, name, masks[name])
        if got.shape != want.shape:
            raise ValueError(
                f"{name!r}: the masks have {tuple(got.shape)} kernels, the truth "
                f"{tuple(want.shape)}"
            )
        got, want = got & inside, want & inside
        tp += int((got & want).sum())
        fp += int((got & ~want).sum())
        fn += int((~got & want).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = math.nan if scores is None else roc_auc(scores, truth)
    return CircuitScores(precision, recall, f1, auc)


def roc_auc(scores: Mapping[str, Tensor], truth: Masks) -> float:
    """Kernel-recovery ROC AUC of ``scores`` against ``truth`` (see :func:`circuit_scores`);
    NaN when the region has no circuit kernel or nothing else."""
    missing = sorted(set(truth) - set(scores))
    if missing:
        raise ValueError(f"scores has no scores for {missing}, which the truth covers")
    pos: list[Tensor] = []
    neg: list[Tensor] = []
    for name, want, inside in _truth_kernels(truth):
        s = scores[name].detach().float().cpu()
        if s.dim() > 2:
            s = s.reshape(s.shape[0], s.shape[1], -1).amax(2)
        if s.shape != want.shape:
            raise ValueError(
                f"scores for {name!r} have shape {tuple(s.shape)}; expected kernel scores "
                f"{tuple(want.shape)} (or per weight)"
            )
        pos.append(s[want & inside])
        neg.append(s[~want & inside])
    a, b = torch.cat(pos).double().numpy(), torch.cat(neg).double().numpy()
    if not a.size or not b.size:
        return math.nan
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores are NaN or infinite")
    return _stats.auroc_dprime(a, b)[0]


def _truth_kernels(truth: Masks) -> Iterator[tuple[str, Tensor, Tensor]]:
    """``(name, circuit kernels, region kernels)`` for each layer ``truth`` covers; a layer
    without a region counts every kernel as inside."""
    for name, want_mask in truth.items():
        want = _kernels(truth, name, want_mask)
        region = truth.regions.get(name)
        inside = _kernels(truth, name, region) if region is not None else torch.ones_like(want)
        yield name, want, inside


def _kernels(masks: Masks, name: str, mask: Tensor) -> Tensor:
    """A mask as ``(out, in)`` kernel connectivity (a weight-granularity kernel: any weight)."""
    shape = masks.weight_shapes.get(name)
    if shape is None and masks.granularity == "filter":
        raise ValueError(f"filter masks need their weight shapes to be read as kernels ({name!r})")
    return kernel_view(mask, masks.granularity, shape or tuple(mask.shape))
