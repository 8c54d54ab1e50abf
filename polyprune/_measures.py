"""Private: the measures :mod:`polyprune.evaluation` reports, each on plain activations or two
masks: :func:`separation` (AUROC and d′), :func:`overlap` (IoU against independence) and
:func:`faithfulness` (Pearson r, relative error, activation kept). Public as
``polyprune.evaluation.*``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from . import _stats
from . import _validate as valid
from ._masking import element_sizes
from .masks import Masks

__all__ = ["Overlap", "Separation", "faithfulness", "overlap", "separation"]


@dataclass(frozen=True)
class Separation:
    """How far apart two activation distributions are.

    ``auroc``: probability that a random member's activation exceeds a random non-member's
    (ties count ½); 0.5 is no separation, 1.0 perfect. ``dprime``: (μ₁ − μ₀) / √((σ₁² + σ₀²)/2).
    """

    auroc: float
    dprime: float
    n_members: int
    n_others: int


def separation(members: Tensor | NDArray[Any], others: Tensor | NDArray[Any]) -> Separation:
    """AUROC and d′ of ``members`` against ``others`` (1-D activations).

    Both must be non-empty and finite: a NaN or infinite activation has no rank and no
    distance, so it raises ``ValueError`` (the model or subnetwork computed NaN/inf).

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> a, b = torch.tensor([2.0, 3.0, 4.0]), torch.tensor([0.0, 1.0, 2.0])
    >>> s = pp.evaluation.separation(a, b)
    >>> round(s.auroc, 4), round(s.dprime, 4)
    (0.9444, 2.0)
    """
    a = valid.vector("members", members, finite=False, what="activations").double().numpy()
    b = valid.vector("others", others, finite=False, what="activations").double().numpy()
    for name, x in (("members", a), ("others", b)):
        if not np.isfinite(x).all():
            raise ValueError(
                f"{name} holds {int((~np.isfinite(x)).sum())} NaN or infinite activation(s) of "
                f"{x.size}: AUROC and d′ are undefined; the model (or subnetwork) computed them"
            )
    auroc, dprime = _stats.auroc_dprime(a, b)
    return Separation(auroc, dprime, int(a.size), int(b.size))


@dataclass(frozen=True)
class Overlap:
    """Overlap of two subnetworks against the independence hypothesis.

    ``iou`` (kept weights), ``expected_iou``: E[∩]/E[∪] if, in every layer, the second mask kept
    the same number of elements chosen independently of the first. ``p_value``: probability of
    an intersection at least as large as observed (in mask elements) under that hypothesis
    (exact convolution of per-layer hypergeometric laws; normal approximation above 10⁵ terms).
    """

    iou: float
    expected_iou: float
    intersection: int
    expected_intersection: float
    p_value: float


def overlap(a: Masks, b: Masks) -> Overlap:
    """Compare two subnetworks of one unit (same weights and granularity)."""
    valid.instance("a", a, Masks, "a polyprune.Masks")
    valid.instance("b", b, Masks, "a polyprune.Masks")
    iou = a.iou(b)  # also validates that the masks are comparable
    exp_inter_w = exp_union_w = 0.0
    layers = []
    for name, mask in a.items():
        region = a.regions.get(name, torch.ones_like(mask)).reshape(-1)
        ma, mb = mask.reshape(-1)[region], b[name].reshape(-1)[region]
        n, ka, kb, x = int(region.sum()), int(ma.sum()), int(mb.sum()), int((ma & mb).sum())
        size = element_sizes(a.weight_shapes[name], a.granularity) if name in a.weight_shapes else 1
        exp_inter_w += size * ka * kb / n if n else 0.0
        exp_union_w += size * (ka + kb) - (size * ka * kb / n if n else 0.0)
        layers.append((n, ka, kb, x))
    observed, expected, p = _stats.intersection_p_value(layers)
    return Overlap(
        iou=iou,
        expected_iou=exp_inter_w / exp_union_w if exp_union_w else float("nan"),
        intersection=observed,
        expected_intersection=expected,
        p_value=p,
    )


def faithfulness(subnetwork: Tensor, original: Tensor) -> tuple[float, float, float]:
    """``(pearson_r, relative_error, activation_kept)`` of 1-D activations on the same images.

    See :class:`ClusterEvaluation`; computed in float64, NaN where undefined.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> a = torch.tensor([1.0, 2.0, 3.0])
    >>> r, err, kept = pp.evaluation.faithfulness(a / 2, a)
    >>> round(r, 3), round(err, 3), round(kept, 3)
    (1.0, 0.5, 0.5)
    """
    a = valid.vector("subnetwork", subnetwork, what="activations").double()
    d = valid.vector("original", original, what="activations").double()
    if a.shape != d.shape:
        raise ValueError(
            f"original must hold one activation per image of subnetwork ({a.numel()}), "
            f"got {d.numel()}"
        )
    norm, mean = float(d.norm()), float(d.mean())
    error = float((a - d).norm()) / norm if norm > 0 else math.nan
    kept = float(a.mean()) / mean if mean != 0 else math.nan
    return _pearson(a, d), error, kept


def _pearson(a: Tensor, b: Tensor) -> float:
    """Pearson r in float64; NaN when either side is constant (r is undefined there)."""
    x, y = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else float("nan")
