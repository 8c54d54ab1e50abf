"""Private (engine): the soft-mask parametrization of ContinuousSparsifier, and its set-up."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import _masking as mk
from .._graph.regions import unit_regions
from ..targets import Unit

__all__ = [
    "SigmoidMask",
    "Temperature",
    "init_logits",
    "mask_targets",
]


class Temperature:
    """The temperature shared by one sparsifier's parametrizations (a plain float, no graph),
    and the offset ``b`` added to every ``t·m`` (0 unless a fit fades its starting masks in)."""

    __slots__ = ("offset", "value")

    def __init__(self, value: float, offset: float = 0.0) -> None:
        self.value = value
        self.offset = offset

    def gate(self, logits: Tensor) -> Tensor:
        """``σ(t·m + b)``."""
        z = logits * self.value
        return torch.sigmoid(z + self.offset if self.offset else z)


class SigmoidMask(nn.Module):
    """Parametrization ``w ↦ w · σ(t·m)`` with ``m`` broadcast over the trailing weight dims.

    Each forward computes the masked weight once: one sigmoid over the (small) mask and one
    broadcast multiply, never an expanded copy of the mask. Elements outside ``region`` keep a
    mask of exactly 1 (their logits get no gradient).
    """

    def __init__(
        self, logits: nn.Parameter, weight_dim: int, region: Tensor | None, temp: Temperature
    ) -> None:
        super().__init__()
        self.logits = logits
        self._view = (*logits.shape, *(1,) * (weight_dim - logits.dim()))
        self._temp = temp
        self.region: Tensor | None
        self.register_buffer("region", region, persistent=False)

    def mask(self) -> Tensor:
        m = self._temp.gate(self.logits)
        if self.region is not None:
            m = torch.where(self.region, m, 1.0)
        return m

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask().view(self._view)


def mask_targets(
    model: nn.Module, unit: Unit | None, modules: Sequence[str] | None, granularity: str
) -> tuple[dict[str, tuple[int, ...]], dict[str, Tensor]]:
    """Weight shapes and regions of what to mask: a unit's subnetwork, or whole modules."""
    if (unit is None) == (modules is None):
        raise ValueError("give exactly one of up_to=Unit(...) or modules=[module names]")
    busy = [n for n, m in model.named_modules() if parametrize.is_parametrized(m, "weight")]
    if busy:
        raise ValueError(
            f"the weights of {busy} already carry a parametrization (masks applied, or another "
            "tool's); remove it before attaching a ContinuousSparsifier"
        )
    if unit is not None:
        if not isinstance(unit, Unit):
            raise TypeError(f"up_to must be a polyprune.Unit, got {type(unit).__name__}")
        unit.validate(model)
        shapes, regions = unit_regions(model, unit.layer, unit.channel, granularity)
        if not shapes:
            raise ValueError(f"no Conv/Linear weight can reach {unit.layer!r}: nothing to mask")
        return shapes, regions
    assert modules is not None
    if isinstance(modules, str) or not modules:
        raise ValueError(f"modules must be a non-empty list of module names, got {modules!r}")
    names = [f"{m}.weight" if m else "weight" for m in modules]
    if len(set(names)) != len(names):
        raise ValueError(f"modules lists a module twice: {list(modules)}")
    shapes, regions = {}, {}
    for name in names:
        module, attr = mk.owner(model, name)
        shape = tuple(getattr(module, attr).shape)
        shapes[name] = shape
        regions[name] = torch.ones(mk.mask_shape(shape, granularity), dtype=torch.bool)
    return shapes, regions


def init_logits(
    model: nn.Module,
    shapes: Mapping[str, tuple[int, ...]],
    granularity: str,
    init: float,
    t0: float,
    noise: float,
    seed: int | None,
) -> dict[str, nn.Parameter]:
    """One logit tensor per weight at ``logit(init) / t0`` (+ seeded noise), in model order."""
    params = dict(model.named_parameters())
    m0 = math.log(init / (1.0 - init)) / t0
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = {}
    for name, shape in shapes.items():
        weight = params[name]
        value = torch.full(mk.mask_shape(shape, granularity), m0, dtype=torch.float64)
        if noise > 0:
            value += noise * torch.randn(value.shape, generator=gen, dtype=torch.float64)
        out[name] = nn.Parameter(value.to(device=weight.device, dtype=weight.dtype))
    return out
