"""Private: the path-aware cut, which counts a scorer's kept fraction in kernels on a path.

The top ``keep`` of the scores rarely forms connected paths: on the demo's trained concepts model
the top 5 % of ActGrad's kernels held no complete path from the input to the unit, so the
effective mask (:meth:`Masks.effective <polyprune.masks.Masks.effective>`, which every fitted
subnetwork reports) kept nothing. The path-aware cut lowers the score threshold until the
*effective* part of the thresholded mask keeps ``keep`` of the weights.

**Rule.** The in-region elements are put in one order: best score first (``scope="global"``,
ties to the earlier weight, then the lower index, as :meth:`Masks.from_scores
<polyprune.masks.Masks.from_scores>`), or, for ``scope="layer"``, by the fraction of its own
layer kept before the element (each layer best first), so that a prefix cuts every layer at the
same fraction. A prefix of ``n`` elements is a thresholded mask; adding an element can only add
paths, so the weights its effective part keeps never decrease with ``n``. The cut is the
shortest prefix whose effective part keeps at least ``round(keep · T)`` of the region's ``T``
weights; when not even the whole region does (kernels on no path at all), the shortest whose
effective part keeps as many as the whole region's. When the plain cut
(:meth:`Masks.from_scores`) already reaches the target, it is returned unchanged. A binary
search over ``n``: about ``log2`` (in-region elements) effective-mask passes over the graph,
traced once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .. import _masking as mk
from .._graph.paths import KernelPaths
from ..masks import Masks, Scores

__all__ = ["path_cut"]


class _Ranking:
    """The in-region elements of ``scores`` in cut order, and the masks of its prefixes."""

    def __init__(self, scores: Scores, scope: str, normalize: str) -> None:
        self.names = list(scores)
        self.shapes = {n: tuple(s.shape) for n, s in scores.items()}
        self.inside = [scores.regions[n].reshape(-1) if n in scores.regions
                       else torch.ones(scores[n].numel(), dtype=torch.bool)
                       for n in self.names]  # fmt: skip
        flat, sizes, keys = [], [], []
        for name, inside in zip(self.names, self.inside, strict=True):
            s = scores[name].detach().float().cpu().reshape(-1)[inside]
            if normalize == "layer" and s.abs().sum() > 0:
                s = s / s.abs().sum()
            size = mk.element_sizes(scores.weight_shapes[name], scores.granularity)
            flat.append(s)
            sizes.append(torch.full((s.numel(),), size, dtype=torch.long))
            if scope == "layer":  # the fraction of the layer kept before each element
                before = torch.zeros(s.numel(), dtype=torch.float64)
                before[torch.argsort(-s, stable=True)] = torch.arange(s.numel()).double()
                keys.append(before / max(1, s.numel()))
        self.scores = torch.cat(flat)
        self.sizes = torch.cat(sizes)
        key = -self.scores.double() if scope == "global" else torch.cat(keys)
        self.order = torch.argsort(key, stable=True)
        self.weights = torch.cumsum(self.sizes[self.order], 0)
        self.offsets = [0]
        for s in flat:
            self.offsets.append(self.offsets[-1] + s.numel())

    def shortest(self, weights: int) -> int:
        """The length of the shortest prefix that holds at least ``weights`` weights."""
        return int(torch.searchsorted(self.weights, weights)) + 1

    def masks(self, n: int) -> dict[str, Tensor]:
        """The masks of the first ``n`` elements (True outside the region)."""
        chosen = torch.zeros(self.scores.numel(), dtype=torch.bool)
        chosen[self.order[:n]] = True
        out = {}
        for i, name in enumerate(self.names):
            mask = ~self.inside[i]
            mask[self.inside[i].nonzero().squeeze(1)] = chosen[
                self.offsets[i] : self.offsets[i + 1]
            ]
            out[name] = mask.reshape(self.shapes[name])
        return out

    def warn_zeros(self, masks: Mapping[str, Tensor], stacklevel: int) -> None:
        """Warn when kept in-region elements of ``masks`` score 0 (chosen by order)."""
        picked = torch.cat([masks[n].reshape(-1)[i] for n, i in zip(self.names, self.inside,
                                                                     strict=True)])  # fmt: skip
        mk.warn_zero_scores(self.scores, picked, stacklevel + 1)


def path_cut(
    scores: Scores, keep: float, scope: str, normalize: str, model: nn.Module, stacklevel: int
) -> Masks:
    """The thresholded masks of the path-aware cut of ``scores`` (module docstring); their
    effective part (``.effective(model)``) keeps at least ``keep`` of the region's weights.
    ``stacklevel``: of the warning about kept zero scores, as if the caller warned."""
    if scores.unit is None or set(scores.weight_shapes) != set(scores):
        raise ValueError(
            "the path-aware cut needs Scores that carry their unit and weight shapes (what a "
            "scorer's score() returns); cut a plain dict without the model"
        )
    with warnings.catch_warnings():  # about kept zero scores: said once, of the final cut
        warnings.simplefilter("ignore")
        plain = dict(Masks.from_scores(scores, keep, scope, normalize=normalize).items())  # type: ignore[arg-type]
    unit, gran = scores.unit, scores.granularity
    shapes, regions = scores.weight_shapes, scores.regions
    paths = KernelPaths(model, unit.layer, unit.channel)
    ranking = _Ranking(scores, scope, normalize)

    def effective(masks: dict[str, Tensor]) -> int:
        eff = paths.masks(masks, gran, shapes, regions)
        return sum(
            int((m & regions[n]).sum() if n in regions else m.sum())
            * mk.element_sizes(shapes[n], gran)
            for n, m in eff.items()
        )

    target = math.floor(keep * int(ranking.weights[-1]) + 0.5)
    if effective(plain) < target:
        high = ranking.scores.numel()
        goal = min(target, effective(ranking.masks(high)))
        low = ranking.shortest(goal) - 1  # too few weights to reach the goal at all
        while high - low > 1:  # invariant: prefix low falls short, prefix high reaches it
            middle = (low + high) // 2
            if effective(ranking.masks(middle)) >= goal:
                high = middle
            else:
                low = middle
        plain = ranking.masks(high)
    ranking.warn_zeros(plain, stacklevel + 2)
    return Masks(plain, gran, weight_shapes=shapes, regions=regions, unit=unit)
