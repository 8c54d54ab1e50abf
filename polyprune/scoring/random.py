"""Random baseline: uniform scores from a seeded generator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .. import _masking as mk
from .. import _validate as valid
from ._base import BaseScorer, ScoringJob

__all__ = ["Random"]


class Random(BaseScorer, name="random"):
    """Independent uniform ``[0, 1)`` scores per mask element; the same ``seed``, the same scores.

    Scores are drawn on the CPU from ``torch.Generator().manual_seed(seed)``, one weight after
    the other in ``model.named_parameters()`` order, so they depend only on the seed, the
    granularity and the weight shapes (not on the images, which may be ``None``). Elements
    outside the unit's region score 0.

    Parameters
    ----------
    seed : int
    **options
        ``keep``, ``scope``, ``normalize``, ``progress``: see :class:`BaseScorer`.

    Examples
    --------
    >>> import torch
    >>> from polyprune import Unit
    >>> from polyprune.scoring import Random
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 3))
    >>> a = Random(seed=3).score(model, None, Unit("1", 0))
    >>> b = Random(seed=3).score(model, None, Unit("1", 0))
    >>> all(torch.equal(a[k], b[k]) for k in a)
    True
    """

    uses_inputs = False

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(**options)
        valid.seed("seed", seed)
        self.seed = seed

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return {
            name: torch.rand(mk.mask_shape(shape, job.granularity), generator=generator)
            for name, shape in job.shapes.items()
        }

    def for_cluster(self, seed: int, label: int) -> Random:
        """An independent draw per cluster: seed ``self.seed + 1000 · seed + label``, wrapped
        into ``[0, 2**63 - 1]`` so that any valid seeds give a valid one.

        One shared seed would give every cluster the same mask and a meaningless overlap.
        """
        valid.seed("seed", seed)
        valid.integer("label", label, low=0)
        return Random(
            valid.wrap_seed(self.seed + 1000 * seed + label), keep=self.keep, scope=self.scope,
            normalize=self.normalize, progress=self.progress,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Random(seed={self.seed}, keep={self.keep}, scope={self.scope!r})"
