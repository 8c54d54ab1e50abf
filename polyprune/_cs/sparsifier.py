"""Private (engine): Continuous Sparsification's learned sigmoid masks (paper section 3.3).

After Savarese et al., "Winning the Lottery with Continuous Sparsification" (2020). Every
maskable element (granularity ``weight``, ``kernel`` or ``filter``) of every Conv/Linear weight
that can reach a target :class:`~polyprune.Unit` gets a logit ``m``; the weight seen by the model
is ``w · σ(t·m)``, with ``t`` the *temperature*. Raising ``t`` during training pushes each mask
towards 0 or 1; the final subnetwork is the hard mask ``m > 0``.

The masks are attached through :mod:`torch.nn.utils.parametrize`, so the model's code is untouched,
and :meth:`ContinuousSparsifier.remove` (or leaving the ``with`` block) restores the model bit for
bit: the same ``Parameter`` objects, ``state_dict`` keys in the same order with the same values, the
same ``requires_grad`` flags, and no parametrizations left.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .. import _masking as mk
from .. import _validate as valid
from ..masks import Masks
from ..targets import Unit
from .soft_masks import (
    SigmoidMask,
    Temperature,
    init_logits,
    mask_targets,
)

__all__ = ["ContinuousSparsifier", "ExponentialTemperature"]


class ContinuousSparsifier:
    """Learnable masks ``σ(t·m)`` on every weight that can reach a unit, attached until removed.

    Parameters
    ----------
    model : nn.Module
        Any model; its class and code are left alone (parametrizations are used).
    up_to : Unit, optional
        Mask the weights that can reach this unit: every maskable weight upstream of
        ``up_to.layer`` and, in the layer producing the unit's channel, only that channel's fan-in
        (the region of docs/concepts.md). Elements outside the region are not learned and stay 1.
    modules : sequence of str, optional
        Instead of ``up_to``: names of Conv/Linear modules whose whole weights are masked.
    granularity : {"kernel", "weight", "filter"}
        One logit per kernel ``(out, in)``, per weight, or per output filter.
    init : float
        Initial mask value ``σ(t0·m0)`` in (0, 1) at the initial ``temperature`` ``t0``; every logit
        starts at ``m0 = logit(init) / t0``. The default 0.5 (``m0 = 0``) is the paper's and
        Savarese et al.'s: every mask starts undecided and the hard mask ``m > 0`` starts empty.
    init_noise : float
        Standard deviation of Gaussian noise added to the initial logits (0: none).
    temperature : float
        Initial temperature ``t0`` (> 0); change it later with :attr:`temperature` or a schedule
        such as :class:`ExponentialTemperature`.
    seed : int, optional
        Seed of the generator for ``init_noise`` (deterministic logits under a seed).

    Notes
    -----
    While attached, every parameter of ``model`` is frozen (``requires_grad=False``), so gradients
    flow only to the mask logits; the original flags come back on :meth:`remove`. The logits live
    in the parametrizations (they move with ``model.to(...)``) and survive :meth:`remove`, so
    :meth:`hard_masks` still works after the model has been restored.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> from polyprune.sparsify import ContinuousSparsifier
    >>> nn = torch.nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> with ContinuousSparsifier(model, up_to=pp.Unit("2", 1)) as cs:
    ...     cs.penalty().item()              # 3·4 + 4 kernels (channel 1's fan-in), each σ(0) = ½
    8.0
    >>> cs.hard_masks().kept_fraction()      # m > 0 is empty at m = 0
    0.0
    """

    def __init__(
        self,
        model: nn.Module,
        up_to: Unit | None = None,
        *,
        modules: Sequence[str] | None = None,
        granularity: str = "kernel",
        init: float = 0.5,
        init_noise: float = 0.0,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> None:
        valid.floating_model("model", model)
        self.granularity: mk.Granularity = mk.check_granularity(granularity)
        valid.number("temperature", temperature, low=0, low_open=True)
        valid.fraction("init", init, one=False, why=" (the initial mask value σ(t0·m0))")
        valid.number("init_noise", init_noise, low=0)
        if seed is not None:
            valid.seed("seed", seed)
        shapes, regions = mask_targets(model, up_to, modules, self.granularity)
        self.model = model
        self.unit = up_to
        self.weight_shapes = shapes
        self.regions = regions
        self._temp = Temperature(float(temperature))
        self._logits = init_logits(
            model, shapes, self.granularity, float(init), float(temperature), init_noise, seed
        )
        self._logits_list = list(self._logits.values())
        self._counts = {n: int(r.sum()) for n, r in regions.items()}
        self._parametrizations = self._make_parametrizations()
        self._attachment = mk.Attachment(model, self._parametrizations, freeze=True)
        # dropped without remove() (an exception in user code, `del`): the model is restored
        # when this object is collected; the callback holds the attachment, not the sparsifier
        self._finalizer = weakref.finalize(self, self._attachment.close)

    # -- attach / remove ---------------------------------------------------------------------
    def _make_parametrizations(self) -> dict[str, SigmoidMask]:
        params = dict(self.model.named_parameters())
        parametrizations = {}
        for name, logits in self._logits.items():
            region = self.regions[name]
            weight = params[name]
            parametrizations[name] = SigmoidMask(
                logits,
                weight.dim(),
                None if bool(region.all()) else region.to(weight.device),
                self._temp,
            )
        return parametrizations

    @property
    def attached(self) -> bool:
        """Whether the masks are currently applied to the model."""
        return self._attachment.attached

    def remove(self) -> nn.Module:
        """Take the masks off and restore the model exactly (a no-op when already removed).

        If a removal fails, the sparsifier stays :attr:`attached` and ``remove()`` can be
        called again; the model is also restored when the sparsifier is garbage-collected.
        """
        self._attachment.close()
        return self.model

    def __enter__(self) -> ContinuousSparsifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"ContinuousSparsifier({len(self._logits)} weights, granularity={self.granularity!r}, "
            f"temperature={self.temperature:.4g}, unit={self.unit}, attached={self.attached})"
        )

    # -- optimisation surface ----------------------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        """The mask logits, one tensor per masked weight (hand them to any optimizer)."""
        return iter(self._logits_list)

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(weight name, logits)`` pairs, in the model's parameter order."""
        return iter(self._logits.items())

    @property
    def temperature(self) -> float:
        """The current temperature ``t`` of ``σ(t·m)`` (settable, > 0)."""
        return self._temp.value

    @temperature.setter
    def temperature(self, value: float) -> None:
        valid.number("temperature", value, low=0, low_open=True)
        self._temp.value = float(value)

    @property
    def offset(self) -> float:
        """The offset ``b`` of every mask ``σ(t·m + b)`` (settable; default 0). A positive
        offset keeps the masks open while the logits ``m`` (and the hard mask ``m > 0``) are
        still undecided; CS fades it to 0 (:attr:`~polyprune.CSConfig.fade`)."""
        return self._temp.offset

    @offset.setter
    def offset(self, value: float) -> None:
        valid.number("offset", value)
        self._temp.offset = float(value)

    def num_elements(self, name: str | None = None) -> int:
        """Number of learned mask elements (in the region), of one masked weight or of all."""
        if name is None:
            return sum(self._counts.values())
        valid.choice("name", name, list(self._counts))
        return self._counts[name]

    def penalty(self, normalized: bool = False) -> Tensor:
        """The L0 proxy ``Σ σ(t·m)`` over the learned mask elements (differentiable).

        With ``normalized=True`` it is divided by :meth:`num_elements` (the mean mask value, in
        [0, 1]), so a penalty weight means the same thing for any network size.
        """
        mean = valid.flag("normalized", normalized)
        total = torch.zeros((), device=self._logits_list[0].device)
        for name, logits in self._logits.items():
            s = self._temp.gate(logits)
            region = self._parametrizations[name].region
            total = total + (s[region].sum() if region is not None else s.sum())
        return total / self.num_elements() if mean else total

    # -- reading the masks -------------------------------------------------------------------
    @torch.no_grad()
    def soft_masks(self) -> dict[str, Tensor]:
        """The current masks ``σ(t·m)`` (1 outside the region), detached, keyed by weight name."""
        return {n: p.mask().detach().clone() for n, p in self._parametrizations.items()}

    @torch.no_grad()
    def hard_masks(self) -> Masks:
        """The subnetwork ``m > 0`` (elements outside the region kept) as :class:`Masks`.

        Carries weight shapes, regions and the unit, so ``kept_fraction()`` follows the
        definition (kept / weights that can reach the unit).
        """
        masks = {
            n: (logits.detach() > 0).cpu() | ~self.regions[n] for n, logits in self._logits.items()
        }
        return Masks(
            masks,
            self.granularity,
            weight_shapes=self.weight_shapes,
            regions=self.regions,
            unit=self.unit,
        )

    def kept_fraction(self) -> float:
        """Kept fraction of the hard mask: kept / weights that can reach the unit."""
        return self.hard_masks().kept_fraction()

    def paper_kept_fraction(self) -> float:
        """The paper's count: kept weights / all weights of the masked layers.

        The paper's code masked all of AlexNet's convs and counted logits ``> 0`` over all of
        them, so the weights of the unit's layer that cannot reach the unit count as dropped.
        Always ≤ :meth:`kept_fraction`.
        """
        masks = self.hard_masks()
        total = sum(math.prod(s) for s in self.weight_shapes.values())
        return masks.kept_weights() / total if total else 0.0

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The logits (cloned) and the temperature."""
        return {
            "temperature": self.temperature,
            "logits": {n: p.detach().clone() for n, p in self._logits.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load logits and temperature saved by :meth:`state_dict` (shapes must match)."""
        valid.instance("state", state, Mapping, "a dict, as state_dict() returns")
        logits = state["logits"]
        if set(logits) != set(self._logits):
            raise ValueError(
                f"state has logits for {sorted(logits)}, "
                f"this sparsifier masks {sorted(self._logits)}"
            )
        with torch.no_grad():
            for name, p in self._logits.items():
                if tuple(logits[name].shape) != tuple(p.shape):
                    raise ValueError(
                        f"logits for {name!r} have shape {tuple(logits[name].shape)}, "
                        f"expected {tuple(p.shape)}"
                    )
                p.copy_(logits[name])
        self.temperature = float(state["temperature"])


@runtime_checkable
class _HasTemperature(Protocol):
    temperature: float


class ExponentialTemperature:
    """Raise a sparsifier's temperature exponentially from ``start`` to ``end`` over ``steps``.

    Shaped like a torch LR scheduler: construction sets the temperature to ``start``; each
    :meth:`step` multiplies it by ``(end/start) ** (1/(steps-1))`` so that it is exactly ``end``
    after ``steps - 1`` steps (one per epoch, after each epoch, for ``steps`` epochs: the paper's
    ``×200^(1/(n-1))``), and stays at ``end`` after that. Values are computed in closed form,
    ``start · (end/start) ** (k/(steps-1))``, so no rounding error accumulates.

    Parameters
    ----------
    sparsifier : ContinuousSparsifier
        Anything with a settable ``temperature`` attribute.
    start, end : float
        First and final temperature (> 0). ``end < start`` anneals downwards.
    steps : int
        Number of temperature values used (≥ 2), e.g. the number of epochs.

    Examples
    --------
    >>> import torch
    >>> from polyprune.sparsify import ContinuousSparsifier, ExponentialTemperature
    >>> cs = ContinuousSparsifier(torch.nn.Sequential(torch.nn.Linear(2, 2)), modules=["0"])
    >>> temp = ExponentialTemperature(cs, start=1.0, end=100.0, steps=3)
    >>> [temp.last_value, temp.step(), temp.step(), temp.step()]
    [1.0, 10.0, 100.0, 100.0]
    >>> cs.temperature
    100.0
    >>> _ = cs.remove()
    """

    def __init__(
        self, sparsifier: Any, start: float = 1.0, end: float = 200.0, steps: int = 160
    ) -> None:
        valid.instance(
            "sparsifier",
            sparsifier,
            (_HasTemperature,),
            "a ContinuousSparsifier (or anything with a settable temperature attribute)",
        )
        valid.number("start", start, low=0, low_open=True)
        valid.number("end", end, low=0, low_open=True)
        valid.integer("steps", steps, low=2, why=" (the number of temperatures, e.g. epochs)")
        self.sparsifier = sparsifier
        self.start = float(start)
        self.end = float(end)
        self.steps = steps
        self.last_step = 0
        self._apply()

    @property
    def factor(self) -> float:
        """The multiplier applied by each step, ``(end/start) ** (1/(steps-1))``."""
        return float((self.end / self.start) ** (1.0 / (self.steps - 1)))

    @property
    def last_value(self) -> float:
        """The temperature set by the latest step (``start`` before any step)."""
        return self.value_at(self.last_step)

    def value_at(self, step: int) -> float:
        """The temperature after ``step`` steps."""
        valid.integer("step", step, low=0)
        if step >= self.steps - 1:
            return self.end
        return float(self.start * (self.end / self.start) ** (step / (self.steps - 1)))

    def _apply(self) -> None:
        self.sparsifier.temperature = self.last_value

    def step(self) -> float:
        """Advance one step, set the sparsifier's temperature, and return it."""
        self.last_step += 1
        self._apply()
        return self.last_value

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings and position (not the sparsifier)."""
        return {
            "start": self.start,
            "end": self.end,
            "steps": self.steps,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a schedule saved by :meth:`state_dict` and set the sparsifier's temperature."""
        valid.instance("state", state, Mapping, "a dict, as state_dict() returns")
        self.start, self.end = float(state["start"]), float(state["end"])
        self.steps, self.last_step = int(state["steps"]), int(state["last_step"])
        self._apply()

    def __repr__(self) -> str:
        return (
            f"ExponentialTemperature(start={self.start}, end={self.end}, steps={self.steps}, "
            f"last_step={self.last_step}, last_value={self.last_value:.6g})"
        )
