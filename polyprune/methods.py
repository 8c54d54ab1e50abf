"""The method contract: one base class for every way of finding a subnetwork, and its registry.

A *method* turns one fitting job — a model, a unit, images and which of them are the cluster to
keep — into the masks of a subnetwork. :class:`Method` is the whole extension point: subclass it,
name it in the class statement and implement :meth:`Method.fit`::

    class Mine(Method, name="mine"):
        def fit(self, job: FitJob) -> Masks: ...

The name is then accepted by :func:`~polyprune.fit_subnetwork`, :func:`~polyprune.study` and
``polyprune study --methods`` (with ``--import`` for the module that defines it). Two families
ship with polyprune, both subclasses of :class:`Method`:

- the scorers (:class:`~polyprune.scoring.BaseScorer`: ActGrad, SNIP, FORCE, Magnitude,
  Random), whose ``fit`` scores the weights on the members and cuts the top ``keep``;
- Continuous Sparsification (:class:`~polyprune.sparsify.ContinuousSparsification`, ``"cs"``),
  which learns the masks and finds its own kept fraction.

**The kept fraction** ``keep`` has one precedence rule wherever it is given (``fit_subnetwork``,
``study``, the command line): an explicit ``keep=`` argument wins over the method instance's own
``keep``, which wins over :data:`DEFAULT_KEEP`. :attr:`FitJob.keep` holds the result; methods
that find their own kept fraction (CS) ignore it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from . import _glance
from . import _masking as mk
from . import _validate as valid
from ._data import as_images
from ._files import load_saved, save_torch
from ._graph.regions import unit_regions
from ._registry import Registry
from ._unit_io import unit_activations
from .masks import Masks
from .targets import Unit

__all__ = [
    "DEFAULT_KEEP",
    "FitJob",
    "Method",
    "available",
    "create",
    "method_class",
    "resolve_keep",
]

#: The kept fraction when neither the call nor the method instance gives one.
DEFAULT_KEEP = 0.05

_FORMAT = "polyprune.subnetwork/1"
_METHODS: Registry[type[Method]] = Registry("method")


@dataclass(frozen=True)
class FitJob:
    """One validated fitting request, handed to :meth:`Method.fit`.

    Attributes
    ----------
    model : nn.Module
        The model, in eval mode with autograd enabled while the job runs. A method must leave
        it exactly as found (parameters, buffers, ``requires_grad``, ``.grad``, hooks,
        parametrizations), also when it raises: take gradients with
        :func:`torch.autograd.grad`, or of mask logits only (the model's parameters frozen, as
        :class:`~polyprune.sparsify.ContinuousSparsifier` does).
    unit : Unit
        The unit, with its position resolved for these images.
    images : Tensor
        ``(N, C, H, W)``, as given (move batches to the model's device and dtype).
    members : Tensor
        ``(N,)`` bool: the cluster to keep (True) and the images to separate it from (False);
        both occur.
    granularity : {"weight", "kernel", "filter"}
        The shape of one mask element.
    keep : float
        The kept fraction in (0, 1] (explicit argument > the method's ``keep`` >
        :data:`DEFAULT_KEEP`); methods that find their own ignore it.
    batch_size : int
        Images per forward pass.
    seed : int
        Seeds any randomness of the fit.
    progress : bool
        Show progress bars.
    """

    model: nn.Module
    unit: Unit
    images: Tensor
    members: Tensor
    granularity: mk.Granularity
    keep: float
    batch_size: int = 32
    seed: int = 0
    progress: bool = True

    @cached_property
    def _reach(self) -> tuple[dict[str, tuple[int, ...]], dict[str, Tensor]]:
        return unit_regions(self.model, self.unit.layer, self.unit.channel, self.granularity)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The full shape of every maskable weight that can reach the unit, by name."""
        return self._reach[0]

    @property
    def regions(self) -> dict[str, Tensor]:
        """Mask-shaped booleans per weight of :attr:`shapes`: the elements that can reach the
        unit (in the unit's layer, only its channel's fan-in)."""
        return self._reach[1]

    def masks(self, masks: Mapping[str, Tensor]) -> Masks:
        """:class:`~polyprune.Masks` of ``masks`` (bool or 0/1, shaped by the granularity, keyed
        by names of :attr:`shapes`) with the weight shapes, regions and unit that make
        :meth:`Masks.kept_fraction <polyprune.Masks.kept_fraction>` count the weights that can
        reach the unit. A weight left out is not kept (an all-False mask)."""
        unknown = sorted(set(masks) - set(self.shapes))
        if unknown:
            raise ValueError(
                f"masks for {unknown}: not maskable weights that can reach {self.unit} "
                f"(those are {sorted(self.shapes)})"
            )
        full = {
            name: masks[name] if name in masks else torch.zeros(region.shape, dtype=torch.bool)
            for name, region in self.regions.items()
        }
        return Masks(
            full, self.granularity, weight_shapes=self.shapes, regions=self.regions,
            unit=self.unit,
        )  # fmt: skip


class Method:
    """The base of every method that fits a subnetwork: subclass it and implement :meth:`fit`.

    The class statement registers the method under ``name`` (``class Mine(Method,
    name="mine")``), so :func:`~polyprune.fit_subnetwork`, :func:`~polyprune.study` and the
    command line accept it by that name. :func:`available` lists the names, :func:`create`
    builds one.

    Parameters
    ----------
    progress : bool
        Show progress bars.

    Examples
    --------
    A method that finds its own kept fraction (kernel granularity): keep each kernel whose
    mean ``|w|`` is above its layer's mean.

    >>> import torch, polyprune as pp
    >>> class AboveMean(pp.Method, name="above_mean"):
    ...     def fit(self, job):
    ...         size = {n: job.model.get_parameter(n).abs().mean((2, 3)) for n in job.shapes}
    ...         return job.masks({n: s > s.mean() for n, s in size.items()})
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(4, 2, 3))
    >>> sub = pp.fit_subnetwork(model, pp.Unit("2", 1), torch.rand(4, 3, 9, 9),
    ...                         torch.arange(4) < 2, "above_mean")
    >>> sub.method, sorted(sub.masks), "above_mean" in pp.methods.available()
    ('above_mean', ['0.weight', '2.weight'], True)
    """

    #: The registry name (set by the class statement's ``name=``; the class name in lower case
    #: for an unregistered method).
    name: ClassVar[str] = ""
    #: The method's own kept fraction (None: the caller's ``keep`` or :data:`DEFAULT_KEEP`).
    keep: float | None = None

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__.lower()
        if name is not None:
            _METHODS.add(name, cls)

    def __init__(self, *, progress: bool = True) -> None:
        self.progress = bool(progress)

    def fit(self, job: FitJob) -> Masks | Subnetwork:
        """The subnetwork of one job: its :class:`~polyprune.Masks` (keyed by weight name,
        shaped by ``job.granularity``), or a whole :class:`Subnetwork` to return more (a
        training history, a calibration, a state)."""
        raise NotImplementedError(f"{type(self).__name__} must implement fit(job)")

    def for_cluster(self, seed: int, label: int) -> Method:
        """The method that fits cluster ``label`` of a study run with ``seed``.

        The base class returns ``self`` (a deterministic method needs no per-cluster copy);
        methods with randomness override this to draw independently per cluster.

        Examples
        --------
        >>> import polyprune as pp
        >>> method = pp.methods.create("snip")
        >>> method.for_cluster(seed=0, label=1) is method
        True
        """
        valid.seed("seed", seed)
        valid.integer("label", label, low=0)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def available() -> tuple[str, ...]:
    """The names of the registered methods, in registration order.

    Examples
    --------
    >>> import polyprune as pp
    >>> pp.methods.available()[:6]
    ('cs', 'actgrad', 'snip', 'force', 'magnitude', 'random')
    """
    return _METHODS.names()


def create(name: str, **options: Any) -> Method:
    """A new method of the class registered as ``name``, constructed with ``options``.

    Examples
    --------
    >>> import polyprune as pp
    >>> pp.methods.create("snip", keep=0.1)
    SNIP(keep=0.1, scope='global')
    """
    return _METHODS.get(name)(**options)


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (a ``ValueError`` listing the names otherwise)."""
    return _METHODS.get(name)


def check_method(argument: str, value: object, *, names: bool = True) -> Method:
    """``value`` if it is a :class:`Method` instance; else one error naming ``argument`` that
    lists the registered names (``names``: the caller also takes a name)."""
    registered = list(available())
    if isinstance(value, type):
        raise valid.ArgumentTypeError(
            f"{argument} is the class {value.__name__}; pass an instance ({value.__name__}())"
            + (f" or a name from {registered}" if names else "")
        )
    what = (
        f"a method name from {registered} or an instance of a polyprune.Method subclass (a "
        "scorer, ContinuousSparsification, ...)"
        if names
        else "an instance of a polyprune.Method subclass (pp.methods.create(name) builds one "
        f"from a registered name: {registered})"
    )
    return valid.instance(argument, value, Method, what)


def resolve_keep(keep: float | None, method: Method) -> float:
    """The kept fraction of a fit: ``keep`` if given, else ``method.keep``, else
    :data:`DEFAULT_KEEP` (checked to be in (0, 1]).

    Examples
    --------
    >>> import polyprune as pp
    >>> from polyprune.methods import resolve_keep
    >>> resolve_keep(0.2, pp.SNIP(keep=0.1)), resolve_keep(None, pp.SNIP(keep=0.1))
    (0.2, 0.1)
    >>> resolve_keep(None, pp.SNIP())
    0.05
    """
    check_method("method", method, names=False)
    if keep is not None:
        return mk.check_keep(keep)
    if method.keep is not None:
        return mk.check_keep(method.keep)
    return DEFAULT_KEEP


@dataclass
class Subnetwork:
    """The subnetwork fitted for one meaning (cluster) of a unit.

    Attributes
    ----------
    masks : Masks
        The hard masks (weight shapes, regions and unit set).
    unit : Unit
        The unit, with the position the fit used.
    method : str
        ``"cs"`` or the scorer's registry name (``"snip"``, ``"force"``, ...).
    history : dict of str to list of float
        Per epoch for CS (``loss``, ``objective``, ``penalty``, ``temperature``, ``kept_fraction``,
        ``lr``, ``seconds`` of training); empty for scorers.
    calibration : tuple of float or None
        ``(center, scale)`` of the BCE logit ``(a − center) / scale`` for CS with calibration.
    paper_kept_fraction : float or None
        The paper's count for CS (kept / all weights of the masked layers); see
        :meth:`ContinuousSparsifier.paper_kept_fraction`.
    state : dict or None
        For CS, the final logits and temperature (:meth:`ContinuousSparsifier.state_dict`):
        load them into a new sparsifier to inspect the soft masks.
    raw_masks : Masks or None
        The masks as the method produced them, before kernels on no input→unit path were
        dropped (``masks`` is ``raw_masks.effective(model)``); None when not recorded.
    """

    masks: Masks
    unit: Unit
    method: str
    history: dict[str, list[float]] = field(default_factory=dict)
    calibration: tuple[float, float] | None = None
    paper_kept_fraction: float | None = None
    state: dict[str, Any] | None = None
    raw_masks: Masks | None = None

    def __repr__(self) -> str:
        epochs = f", {len(self.history['loss'])} epochs" if self.history.get("loss") else ""
        return (
            f"Subnetwork({self.method} for {self.unit}: keeps {self.kept_fraction:.2%} "
            f"({self.masks.kept_weights()} of {self.masks.total_weights()} weights){epochs})"
        )

    def _repr_html_(self) -> str:
        return _glance.card("Subnetwork", repr(self)[11:-1], _glance.mask_layers(self.masks))

    @property
    def kept_fraction(self) -> float:
        """Kept effective weights / weights that can reach the unit (``docs/concepts.md``)."""
        return self.masks.kept_fraction()

    @torch.no_grad()
    def activations(self, model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
        """The unit's activation on ``images`` with the hard masks applied (model restored)."""
        valid.model("model", model)
        valid.integer("batch_size", batch_size, low=1)
        return unit_activations(model, self.unit, as_images(images), self.masks, batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers of tensors, strings and numbers (``torch.load(weights_only=True)``
        reads them back); :meth:`from_dict` rebuilds the subnetwork."""
        return {
            "format": _FORMAT, "masks": self.masks.to_dict(), "unit": self.unit.to_dict(),
            "method": self.method, "history": {k: list(v) for k, v in self.history.items()},
            "calibration": None if self.calibration is None else list(self.calibration),
            "paper_kept_fraction": self.paper_kept_fraction, "state": self.state,
            "raw_masks": None if self.raw_masks is None else self.raw_masks.to_dict(),
        }  # fmt: skip

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> Subnetwork:
        """The subnetwork of :meth:`to_dict`."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a polyprune subnetwork ({_FORMAT}): {data.get('format')!r}")
        calibration = data.get("calibration")
        raw = data.get("raw_masks")
        return cls(
            Masks.from_dict(data["masks"]), Unit.from_dict(data["unit"]), str(data["method"]),
            {k: [float(x) for x in v] for k, v in data.get("history", {}).items()},
            None if calibration is None else (float(calibration[0]), float(calibration[1])),
            data.get("paper_kept_fraction"), data.get("state"),
            None if raw is None else Masks.from_dict(raw),
        )  # fmt: skip

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write to ``path`` (loads with ``weights_only=True``: no code is unpickled).

        Atomic, and an existing file is replaced only with ``overwrite=True`` and only when it
        is a polyprune subnetwork, as for :meth:`Masks.save <polyprune.Masks.save>`.

        Examples
        --------
        >>> import tempfile, torch, polyprune as pp
        >>> net = pp.zoo.handbuilt()
        >>> sub = pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3,
        ...                         "snip", keep=0.1)
        >>> path = tempfile.mktemp(suffix=".pt")
        >>> sub.save(path)
        >>> pp.results.Subnetwork.load(path).masks.iou(sub.masks)
        1.0
        """
        valid.path("path", path)
        save_torch(self.to_dict(), path, "subnetwork", _FORMAT, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Subnetwork:
        """Read a subnetwork written by :meth:`save`; a bad file is a ``ValueError`` naming it."""
        valid.path("path", path)
        data = load_saved(path, "subnetwork")
        try:
            return cls.from_dict(data)
        except Exception as exc:  # from_dict refuses another format; a damaged one fails in it
            raise ValueError(
                f"{os.fspath(path)!r} is not a readable polyprune subnetwork: {exc}"
            ) from exc
