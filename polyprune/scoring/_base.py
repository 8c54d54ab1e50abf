"""Private: the scorer contract, its base class and the registry (shared tools: ``_tools``).

A scorer answers "how much does each mask element of each maskable weight matter to the
objective?" for one unit. :class:`BaseScorer` does everything but the scores themselves: it
validates the request before any work (objective and unit, granularity, inputs), finds the
weights that can reach the unit from the traced graph, runs the model in eval mode with gradients
on (also inside ``torch.no_grad()`` or ``torch.inference_mode()``), and returns
:class:`~polyprune.masks.Scores` that are zero outside the region. A subclass implements one
method, :meth:`BaseScorer.compute`, and is registered under a name by its class statement.

A scorer is a :class:`~polyprune.methods.Method` whose :meth:`~BaseScorer.fit` is "score the
weights on the members, then cut the top ``keep``": it shares the one registry of methods, and
:func:`available` lists the scorers among them.

Scorers leave the model exactly as found: they run it in eval mode (each module's flag is
restored), take gradients with :func:`torch.autograd.grad` (no ``.grad`` is written and no
``requires_grad`` flag changes) and remove every hook and parametrization in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import _masking as mk
from .. import _validate as valid
from .._data import Images, as_images
from .._graph.regions import unit_regions
from .._graph.run import forward_until, layer_output_shape
from .._model import eval_mode, gradients_on, to_model
from .._progress import stage
from ..masks import Masks, Scores
from ..methods import FitJob, Method, method_class
from ..methods import available as available_methods
from ..targets import Objective, Unit, as_objective
from ._cut import path_cut
from ._tools import warn_if_all_zero

__all__ = [
    "BaseScorer",
    "Scorer",
    "ScoringJob",
    "available",
    "create",
]

#: A batch ``(N, C, H, W)``, or an iterable of batches (a batch may be an ``(images, ...)``
#: tuple, as a ``DataLoader`` yields: its first element is used).
Inputs = Tensor | Iterable[Any]


@dataclass
class ScoringJob:
    """One validated scoring request, handed to :meth:`BaseScorer.compute`.

    Attributes
    ----------
    model : nn.Module
        The model, in eval mode while the job runs.
    objective : Objective
        What to preserve; :meth:`forward` computes it on a batch.
    granularity : {"weight", "kernel", "filter"}
    shapes : dict of str to tuple
        Full shape of every weight to score (those that can reach the unit).
    regions : dict of str to Tensor
        Mask-shaped booleans: which elements can reach the unit (the rest score 0).
    keep : float or None
        The target kept fraction, for scorers that depend on it (FORCE).
    """

    model: nn.Module
    objective: Objective
    granularity: mk.Granularity
    shapes: dict[str, tuple[int, ...]]
    regions: dict[str, Tensor]
    batches: Images | None
    progress: bool
    keep: float | None = None

    @property
    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one score tensor per weight (by granularity)."""
        return {n: mk.mask_shape(s, self.granularity) for n, s in self.shapes.items()}

    def forward(self, x: Tensor) -> Tensor:
        """The objective on ``x`` (with its autograd graph); the forward stops at the layer."""
        layer = self.objective.unit.layer
        return self.objective(forward_until(self.model, x, [layer])[layer])

    def each_batch(self, desc: str) -> Iterator[Tensor]:
        """The image batches, on the model's device and dtype, with a progress bar when several."""
        if self.batches is None:
            raise RuntimeError("this scorer does not read images (uses_inputs = False)")
        show = self.progress and self.batches.length not in (None, 1)
        with stage(desc, self.batches.length, unit="img", show=show) as bar:
            for _, x in self.batches:
                n = int(x.shape[0])
                x = to_model(x, self.model)
                yield x.clone() if x.is_inference() else x
                bar.update(n)

    def weight(self, name: str) -> Tensor:
        """The weight called ``name`` (``"features.0.weight"``)."""
        module, attr = mk.owner(self.model, name)
        weight: Tensor = getattr(module, attr)
        return weight

    def finish(self, raw: Mapping[str, Tensor]) -> Scores:
        """Scores on the CPU, zero outside each region, checked finite and shaped."""
        out: dict[str, Tensor] = {}
        for name, shape in self.shapes.items():
            if name not in raw:
                raise ValueError(f"the scorer returned no scores for {name!r}")
            s = raw[name].detach().to(device="cpu", dtype=torch.float32)
            if tuple(s.shape) != mk.mask_shape(shape, self.granularity):
                raise ValueError(
                    f"scores for {name!r} have shape {tuple(s.shape)}, expected "
                    f"{mk.mask_shape(shape, self.granularity)} ({self.granularity} granularity)"
                )
            if not bool(torch.isfinite(s).all()):
                raise ValueError(
                    f"scores for {name!r} are NaN or infinite: the model's activations or "
                    "gradients are not finite for these inputs"
                )
            out[name] = torch.where(self.regions[name], s, torch.zeros(()))
        return Scores(
            out, self.granularity, weight_shapes=self.shapes, regions=self.regions,
            unit=self.objective.unit,
        )  # fmt: skip


def _input_ndim(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The batch rank, when every scored layer is a convolution with the same number of
    spatial dimensions (a CNN); otherwise None (any rank ≥ 2 is accepted)."""
    ranks = {len(getattr(mk.owner(model, name)[0], "kernel_size", ())) for name in shapes}
    return ranks.pop() + 2 if len(ranks) == 1 and 0 not in ranks else None


class BaseScorer(Method):
    """The base of every scorer: subclass it and implement :meth:`compute`.

    A :class:`~polyprune.methods.Method` whose :meth:`fit` scores the weights on the cluster's
    images and keeps the top ``keep``. The class statement registers the scorer under ``name``
    (``class Mine(BaseScorer, name="mine")``) in the one registry of methods, so
    :func:`~polyprune.fit_subnetwork`, :func:`polyprune.study` and the command line accept it
    by that name. ``polyprune.Scorer`` is this class.

    Parameters
    ----------
    keep : float, optional
        Kept fraction in (0, 1] of the subnetwork cut from the scores (what
        :func:`~polyprune.fit_subnetwork` uses when it is given none).
    scope, normalize
        How the subnetwork is cut (:meth:`Masks.from_scores
        <polyprune.masks.Masks.from_scores>`): ranked over all layers together (``"global"``)
        or per layer; raw scores or each layer's divided by its sum (``"layer"``).
    progress : bool
        Show progress bars.

    Examples
    --------
    A new scorer is one class (here: the squared SNIP score, registered as ``"snip2"``):

    >>> import torch, polyprune as pp
    >>> from polyprune.scoring import BaseScorer, mask_gradients, reduce_to
    >>> class SquaredSNIP(BaseScorer, name="snip2"):
    ...     def compute(self, job):
    ...         ones = {n: torch.ones(s) for n, s in job.mask_shapes.items()}
    ...         grads = mask_gradients(job, ones)
    ...         return {n: reduce_to(g.square(), job.granularity) for n, g in grads.items()}
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(4, 2, 3))
    >>> scores = pp.scoring.create("snip2").score(model, torch.rand(2, 3, 9, 9), pp.Unit("2", 1))
    >>> sorted(scores), "snip2" in pp.scoring.available()
    (['0.weight', '2.weight'], True)
    """

    #: Whether the scorer reads the images (Magnitude and Random do not).
    uses_inputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        keep: float | None = None,
        scope: Literal["global", "layer"] = "global",
        normalize: Literal["none", "layer"] = "none",
        progress: bool = True,
    ) -> None:
        mk.check_cut_options(scope, normalize)
        super().__init__(progress=progress)
        self.keep = None if keep is None else mk.check_keep(keep)
        self.scope: Literal["global", "layer"] = scope
        self.normalize: Literal["none", "layer"] = normalize

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        """The scores of one job: a tensor shaped ``job.mask_shapes[name]`` per weight.

        Called with the model in eval mode and gradients enabled; the returned scores are
        moved to the CPU, checked and zeroed outside the region by the caller.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute(job)")

    def score(
        self,
        model: nn.Module,
        inputs: Inputs | None,
        objective: Objective | Unit,
        *,
        granularity: str = "kernel",
        keep: float | None = None,
    ) -> Scores:
        """Score every mask element of the weights that can reach the objective's unit.

        Parameters
        ----------
        model : nn.Module
            Left exactly as found (run in eval mode; see the module docstring).
        inputs : Tensor or iterable of Tensor or None
            A batch ``(N, C, H, W)`` or an iterable of batches (a ``DataLoader``'s
            ``(images, labels)`` works); scores accumulate over all images. Ignored (may be
            ``None``) by scorers that do not read images.
        objective : Objective or Unit
            What to preserve; a :class:`~polyprune.targets.Unit` means its activation at
            its position, summed over the batch.
        granularity : {"weight", "kernel", "filter"}
        keep : float, optional
            Overrides the scorer's ``keep`` for this call (used by FORCE's schedule).

        Returns
        -------
        Scores
            A ``dict`` of weight name to scores, carrying granularity, weight shapes,
            regions and unit for :meth:`Masks.from_scores <polyprune.masks.Masks.from_scores>`.
        """
        target = self.keep if keep is None else mk.check_keep(keep)
        job = self._prepare(model, inputs, objective, granularity, target)
        with eval_mode(model), gradients_on():
            raw = self.compute(job)
        return job.finish(raw)

    def cut(
        self, scores: Mapping[str, Tensor], keep: float | None = None, *,
        model: nn.Module | None = None,
    ) -> Masks:  # fmt: skip
        """The subnetwork of ``scores`` at ``keep`` (default: the scorer's), with its scope.

        Without ``model``: the top ``keep`` of the scores (:meth:`Masks.from_scores
        <polyprune.masks.Masks.from_scores>`). With it (``scores`` from :meth:`score`), the
        *path-aware* cut that :meth:`fit` makes: the score threshold is lowered until the
        effective part of the mask (:meth:`Masks.effective
        <polyprune.masks.Masks.effective>`: kernels on a kept path from the input to the unit)
        keeps ``keep`` of the weights. The masks returned are the thresholded ones; their
        effective part is the subnetwork. The rule in full: :mod:`polyprune.scoring`.
        """
        target = self.keep if keep is None else keep
        if target is None:
            raise ValueError(
                f"{type(self).__name__} needs the kept fraction: "
                f"{type(self).__name__}(keep=0.05) or cut(scores, keep=0.05)"
            )
        if model is None:
            return Masks.from_scores(scores, target, self.scope, normalize=self.normalize)
        valid.model("model", model)
        if not isinstance(scores, Scores):
            raise TypeError(
                "the path-aware cut (model=...) needs the Scores of score(), which carry the "
                f"unit and weight shapes; got {type(scores).__name__}"
            )
        mk.check_keep(target)
        return path_cut(scores, target, self.scope, self.normalize, model, stacklevel=2)

    def fit(self, job: FitJob) -> Masks:
        """The subnetwork of a fitting job: :meth:`score` on the members (in batches of
        ``job.batch_size``, objective: the unit at its position), cut path-aware at
        ``job.keep`` with the scorer's ``scope`` and ``normalize`` (:meth:`cut` with the
        model): its effective part keeps ``job.keep`` of the weights."""
        batches = list(torch.split(job.images[job.members], job.batch_size))  # score moves them
        with eval_mode(job.model):
            scores = self.score(
                job.model, batches, job.unit, granularity=job.granularity, keep=job.keep
            )
        if not isinstance(scores, Scores) or not scores:
            raise ValueError(
                f"{type(self).__name__}.score returned {type(scores).__name__}, expected "
                "non-empty Scores (BaseScorer.score builds them: implement compute(job))"
            )
        warn_if_all_zero(scores, job.unit)
        masks = path_cut(scores, job.keep, self.scope, self.normalize, job.model, stacklevel=3)
        if masks.unit is None:
            masks.unit = job.unit
        return masks

    #: How many times :meth:`compute` reads the inputs (a one-shot iterator is kept in memory
    #: when it is read more than once).
    def passes(self) -> int:
        return 1

    def _prepare(
        self,
        model: nn.Module,
        inputs: Inputs | None,
        objective: Objective | Unit,
        granularity: str,
        keep: float | None,
    ) -> ScoringJob:
        """Validate a scoring request before any work (the model is not touched)."""
        valid.floating_model("model", model, finite=True)
        goal = as_objective(objective)
        gran = mk.check_granularity(granularity)
        goal.unit.validate(model)
        if any(parametrize.is_parametrized(m) for m in model.modules()):
            raise ValueError(
                "the model carries parametrizations (masks applied?); scorers need the plain "
                "model: score first, or remove them (Masks.remove / leave the `with` block)"
            )
        shapes, regions = unit_regions(model, goal.unit.layer, goal.unit.channel, gran)
        if not shapes:
            raise ValueError(
                f"no maskable (Conv/Linear) weight can reach {goal.unit}: nothing to score"
            )
        ndim = _input_ndim(model, shapes)
        batches, sample = None, None
        if self.uses_inputs:
            if inputs is None:
                raise ValueError("inputs is None: this scorer needs images (a tensor or batches)")
            batches = Images(
                inputs, batch_size=None, name="inputs", ndim=ndim, passes=self.passes(),
                indexed=False,
            )  # fmt: skip
            sample = batches.first_image()
        elif isinstance(inputs, Tensor):
            sample = as_images(inputs, "inputs", ndim=ndim)[:1]
        job = ScoringJob(model, goal, gran, shapes, regions, batches, self.progress, keep)
        self._check(job)
        if sample is not None:  # images the model cannot run: one ValueError before any work
            layer_output_shape(model, goal.unit.layer, to_model(sample, model))
        return job

    def _check(self, job: ScoringJob) -> None:
        """Refuse a job this scorer cannot do, before any forward pass (default: none)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keep={self.keep}, scope={self.scope!r})"


#: The name the design documents give the scorer base class (once a Protocol; now the class
#: itself, so ``isinstance(x, Scorer)`` means "x scores through BaseScorer").
Scorer = BaseScorer


def available() -> tuple[str, ...]:
    """The names of the registered scorers (the methods that are scorers), in registration
    order; :func:`polyprune.methods.available` lists every method.

    Examples
    --------
    >>> import polyprune as pp
    >>> pp.scoring.available()[:5]
    ('actgrad', 'snip', 'force', 'magnitude', 'random')
    """
    return tuple(n for n in available_methods() if issubclass(method_class(n), BaseScorer))


def create(name: str, **options: Any) -> BaseScorer:
    """A new scorer of the class registered as ``name``, constructed with ``options``."""
    valid.choice("name", name, available())
    scorer = method_class(name)(**options)
    assert isinstance(scorer, BaseScorer)
    return scorer
