"""Private: the :class:`Scorer` protocol and the machinery every scorer shares.

A scorer answers "how much does each mask element of each maskable weight matter to the
objective?" for one unit. The shared steps live here: validate everything before any work
(objective and unit, granularity, inputs), find the weights that can reach the unit from the
traced graph (:func:`~polyprune._masking.unit_regions`), run forwards that stop right after the
unit's layer, and return :class:`~polyprune.masks.Scores` that are zero outside the region.

Scorers leave the model exactly as found: they run it in eval mode (each module's flag is
restored), take gradients with :func:`torch.autograd.grad` (no ``.grad`` is written and no
``requires_grad`` flag changes) and remove every hook and parametrization in ``finally``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from .. import _masking as mk
from .._hooks import eval_mode, forward_until, model_dtype_device
from ..masks import Scores
from ..targets import Objective, Unit, as_objective

__all__ = ["BaseScorer", "Batches", "Job", "Scorer", "mask_gradients", "reduce_to"]

#: A batch ``(N, C, H, W)``, or an iterable of batches (a batch may be an ``(images, ...)``
#: tuple, as a ``DataLoader`` yields: its first element is used).
Inputs = Tensor | Iterable[Any]


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores a model's maskable weights for one unit's objective.

    ``score`` returns a ``dict`` (a :class:`~polyprune.masks.Scores`) keyed by weight name
    (``"features.0.weight"``) with one non-negative score per mask element, shaped by
    ``granularity``: ``"weight"`` (like the weight), ``"kernel"`` (``(out, in)``) or
    ``"filter"`` (``(out,)``). Higher means more important.

    Examples
    --------
    >>> from polyprune.scoring import SNIP, Scorer
    >>> isinstance(SNIP(), Scorer)
    True
    """

    def score(
        self,
        model: nn.Module,
        inputs: Inputs,
        objective: Objective | Unit,
        *,
        granularity: str = "kernel",
    ) -> dict[str, Tensor]: ...


def _as_batch(item: Any, index: int, ndim: int | None = None) -> Tensor:
    if isinstance(item, tuple | list) and item and isinstance(item[0], Tensor):
        item = item[0]
    if not isinstance(item, Tensor):
        raise TypeError(
            f"batch {index} is a {type(item).__name__}; inputs must be a tensor (N, C, ...) or "
            "an iterable of such tensors (or of (images, ...) tuples)"
        )
    if item.dim() < 2 or item.shape[0] == 0 or item.numel() == 0:
        raise ValueError(
            f"batch {index} has shape {tuple(item.shape)}: a batch needs at least one image "
            "(N ≥ 1, shape (N, C, ...))"
        )
    if ndim is not None and item.dim() != ndim:
        raise ValueError(
            f"batch {index} has shape {tuple(item.shape)}, but the model's first layer needs "
            f"{ndim}-D batches (N, C, ...); for one image add a batch dimension, and pass a "
            "DataLoader rather than a Dataset"
        )
    if not item.is_floating_point():
        raise TypeError(f"batch {index} has dtype {item.dtype}; images must be floating point")
    if not bool(torch.isfinite(item).all()):
        raise ValueError(f"batch {index} contains NaN or infinite values")
    return item


class Batches:
    """Validated batches of images, iterable ``passes`` times.

    The first batch is checked on construction (so empty inputs fail before any work); a
    one-shot iterator (a generator) is read once lazily, or kept in memory when it must be
    read more than once.
    """

    _END: ClassVar[object] = object()

    def __init__(
        self,
        inputs: Inputs,
        *,
        passes: int = 1,
        model: nn.Module | None = None,
        ndim: int | None = None,
    ) -> None:
        self._ndim = ndim
        self._dtype: torch.dtype | None = None
        self._device: torch.device | None = None
        if model is not None:
            self._dtype, self._device = model_dtype_device(model)
        self._once: Iterator[Any] | None = None
        self._source: Iterable[Any] | None = None
        self.length: int | None = None
        if isinstance(inputs, Tensor):
            _as_batch(inputs, 0, ndim)
            self._source, self.length = [inputs], 1
            return
        if not isinstance(inputs, Iterable) or isinstance(inputs, str | bytes):
            raise TypeError(
                f"inputs must be a tensor or an iterable of batches, got {type(inputs).__name__}"
            )
        iterator = iter(inputs)
        if iterator is inputs and passes > 1:  # a generator read several times: keep it
            inputs = list(iterator)
            iterator = iter(inputs)
        first = next(iterator, self._END)
        if first is self._END:
            raise ValueError("inputs is empty: give at least one batch of images")
        _as_batch(first, 0, ndim)
        if iterator is inputs:
            self._once = itertools.chain([first], iterator)
        else:
            self._source = inputs
        self.length = len(inputs) if hasattr(inputs, "__len__") else None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Tensor]:
        if self._source is not None:
            items: Iterable[Any] = self._source
        elif self._once is not None:
            items, self._once = self._once, None
        else:
            raise RuntimeError("these inputs were a one-shot iterator and are used up")
        for index, item in enumerate(items):
            batch = _as_batch(item, index, self._ndim)
            yield batch.to(dtype=self._dtype, device=self._device)


@dataclass
class Job:
    """One validated scoring request: model, objective, regions, inputs."""

    model: nn.Module
    objective: Objective
    granularity: mk.Granularity
    shapes: dict[str, tuple[int, ...]]
    regions: dict[str, Tensor]
    batches: Batches | None
    progress: bool

    def forward(self, x: Tensor) -> Tensor:
        """The objective on ``x`` (with its autograd graph); the forward stops at the layer."""
        layer = self.objective.unit.layer
        return self.objective(forward_until(self.model, x, [layer])[layer])

    def each_batch(self, desc: str) -> Iterator[Tensor]:
        """The batches, with a progress bar when there are several."""
        if self.batches is None:
            raise RuntimeError("this scorer was prepared without inputs")
        show = self.progress and self.batches.length != 1
        yield from tqdm(self.batches, total=self.batches.length, disable=not show, desc=desc)

    def weight(self, name: str) -> Tensor:
        module, attr = mk.owner(self.model, name)
        weight: Tensor = getattr(module, attr)
        return weight

    def finish(self, raw: Mapping[str, Tensor]) -> Scores:
        """Scores on the CPU, zero outside each region, checked finite and shaped."""
        out: dict[str, Tensor] = {}
        for name, shape in self.shapes.items():
            s = raw[name].detach().to(device="cpu", dtype=torch.float32)
            if tuple(s.shape) != mk.mask_shape(shape, self.granularity):
                raise RuntimeError(f"internal: scores for {name!r} have shape {tuple(s.shape)}")
            if not bool(torch.isfinite(s).all()):
                raise ValueError(
                    f"scores for {name!r} are NaN or infinite: the model's activations or "
                    "gradients are not finite for these inputs"
                )
            out[name] = torch.where(self.regions[name], s, torch.zeros(()))
        return Scores(
            out,
            self.granularity,
            weight_shapes=self.shapes,
            regions=self.regions,
            unit=self.objective.unit,
        )


def prepare(
    model: nn.Module,
    inputs: Inputs | None,
    objective: Objective | Unit,
    granularity: str,
    *,
    passes: int = 1,
    progress: bool = False,
    uses_inputs: bool = True,
) -> Job:
    """Validate a scoring request before any work (the model is not touched)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    goal = as_objective(objective)
    gran = mk.check_granularity(granularity)
    goal.unit.validate(model)
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError(
            "the model carries parametrizations (masks applied?); scorers need the plain "
            "model: score first, or remove them (Masks.remove / leave the `with` block)"
        )
    shapes, regions = mk.unit_regions(model, goal.unit.layer, goal.unit.channel, gran)
    if not shapes:
        raise ValueError(
            f"no maskable (Conv/Linear) weight can reach {goal.unit}: nothing to score"
        )
    batches = None
    if uses_inputs:
        if inputs is None:
            raise ValueError("inputs is None: this scorer needs images (a tensor or batches)")
        batches = Batches(inputs, passes=passes, model=model, ndim=_input_ndim(model, shapes))
    elif isinstance(inputs, Tensor):
        _as_batch(inputs, 0, _input_ndim(model, shapes))
    return Job(model, goal, gran, shapes, regions, batches, progress)


def _input_ndim(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The batch rank, when every scored layer is a convolution with the same number of
    spatial dimensions (a CNN); otherwise None (not checked)."""
    ranks = {len(getattr(mk.owner(model, name)[0], "kernel_size", ())) for name in shapes}
    return ranks.pop() + 2 if len(ranks) == 1 and 0 not in ranks else None


class BaseScorer:
    """Shared :meth:`score`: validate, run in eval mode, return region-restricted Scores."""

    #: Whether the scorer reads the images (Magnitude and Random do not).
    uses_inputs: ClassVar[bool] = True

    def __init__(self, *, progress: bool = True) -> None:
        self.progress = bool(progress)

    def score(
        self,
        model: nn.Module,
        inputs: Inputs,
        objective: Objective | Unit,
        *,
        granularity: str = "kernel",
    ) -> Scores:
        """Score every mask element of the weights that can reach the objective's unit.

        Parameters
        ----------
        model : nn.Module
            Left exactly as found (run in eval mode; see the module docstring).
        inputs : Tensor or iterable of Tensor
            A batch ``(N, C, H, W)`` or an iterable of batches (a ``DataLoader``'s
            ``(images, labels)`` works); scores accumulate over all images.
        objective : Objective or Unit
            What to preserve; a :class:`~polyprune.targets.Unit` means its activation at
            its position, summed over the batch.
        granularity : {"weight", "kernel", "filter"}

        Returns
        -------
        Scores
            A ``dict`` of weight name to scores, carrying granularity, weight shapes,
            regions and unit for :meth:`Masks.from_scores <polyprune.masks.Masks.from_scores>`.
        """
        return self._run(model, inputs, objective, granularity, passes=1)

    def _run(
        self,
        model: nn.Module,
        inputs: Inputs,
        objective: Objective | Unit,
        granularity: str,
        *,
        passes: int,
        **options: Any,
    ) -> Scores:
        job = prepare(
            model, inputs, objective, granularity,
            passes=passes, progress=self.progress, uses_inputs=self.uses_inputs,
        )  # fmt: skip
        with eval_mode(model):
            raw = self._compute(job, **options)
        return job.finish(raw)

    def _compute(self, job: Job, **options: Any) -> Mapping[str, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def reduce_to(per_weight: Tensor, granularity: str) -> Tensor:
    """Average weight-shaped scores over each kernel (``kernel``) or filter (``filter``)."""
    if granularity == "weight":
        return per_weight
    keep = 2 if granularity == "kernel" else 1
    if per_weight.dim() <= keep:
        return per_weight
    return per_weight.flatten(keep).mean(keep)


def _expander(leaf: Tensor, shape: tuple[int, ...]) -> Callable[[], Tensor]:
    return lambda: mk.expand(leaf, shape)


def mask_gradients(
    job: Job, masks: Mapping[str, Tensor], desc: str = "gradients"
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
