"""fit_subnetwork: one sparse subnetwork per meaning of a unit, by any method, as a Subnetwork.

Continuous Sparsification (paper section 3.3) learns the masks; a scorer (``ActGrad``, ``SNIP``,
``FORCE``, ...) scores the weights on the cluster's images and keeps a fraction ``keep``. Both
return the same :class:`Subnetwork`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import _masking as mk
from . import _validate as valid
from ._cs.config import CSConfig
from ._cs.fit import fit_cs
from ._data import as_images, check_members
from ._files import load_saved, save_torch
from ._model import eval_mode
from ._unit_io import placed, unit_activations
from .masks import Masks, Scores
from .scoring._base import Scorer, available, create
from .scoring._tools import warn_if_all_zero
from .targets import Unit

__all__ = ["Subnetwork", "fit_subnetwork", "methods", "resolve_method"]

_FORMAT = "polyprune.subnetwork/1"


def methods() -> tuple[str, ...]:
    """Every method name :func:`fit_subnetwork` and :func:`~polyprune.study` accept: ``"cs"``
    (Continuous Sparsification) and the registered scorers (:func:`polyprune.scoring.available`).

    Examples
    --------
    >>> from polyprune.subnetwork import methods
    >>> methods()[:4]
    ('cs', 'actgrad', 'snip', 'force')
    """
    return ("cs", *available())


def resolve_method(
    spec: str | Scorer, *, keep: float | None = None, progress: bool = True
) -> tuple[str, str | Scorer]:
    """``(name, method)`` for a method name or a scorer instance (validated, before any work).

    A name builds a new scorer of the registered class (with ``keep`` and ``progress``);
    ``"cs"`` stays ``"cs"``. An instance is returned as it is, named by its registry name.
    """
    if isinstance(spec, str):
        name = spec.lower()
        if name == "cs":
            return "cs", "cs"
        if name not in available():
            raise ValueError(f"unknown method {spec!r}; valid: {list(methods())} or a scorer")
        return name, create(name, keep=keep, progress=progress)
    if isinstance(spec, type):
        raise TypeError(
            f"method is the class {spec.__name__}; pass an instance ({spec.__name__}()) or a "
            f"name from {list(methods())}"
        )
    if not isinstance(spec, Scorer):
        raise ValueError(
            "method must be 'cs', a scorer name or a scorer instance (with score(model, inputs, "
            f"objective, *, granularity, keep) and keep/scope/normalize), got {type(spec).__name__}"
        )
    return getattr(spec, "name", "") or type(spec).__name__.lower(), spec


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

    @property
    def kept_fraction(self) -> float:
        """Kept effective weights / weights that can reach the unit (``docs/concepts.md``)."""
        return self.masks.kept_fraction()

    @torch.no_grad()
    def activations(self, model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
        """The unit's activation on ``images`` with the hard masks applied (model restored)."""
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
        save_torch(self.to_dict(), path, "subnetwork", _FORMAT, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Subnetwork:
        """Read a subnetwork written by :meth:`save`; a bad file is a ``ValueError`` naming it."""
        data = load_saved(path, "subnetwork")
        try:
            return cls.from_dict(data)
        except Exception as exc:  # from_dict refuses another format; a damaged one fails in it
            raise ValueError(
                f"{os.fspath(path)!r} is not a readable polyprune subnetwork: {exc}"
            ) from exc


def fit_subnetwork(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    method: str | Scorer = "cs",
    *,
    keep: float | None = None,
    granularity: str = "kernel",
    config: CSConfig | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> Subnetwork:
    """Fit the subnetwork of ``unit`` that keeps it firing for ``members`` and not for the rest.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode; left exactly as found (also when fitting raises).
    unit : Unit
        The unit; its position is ``unit.position`` or the center ``((H-1)//2, (W-1)//2)`` of
        its layer's map for these images (which are typically receptive-field crops).
    images : Tensor
        ``(N, C, H, W)`` on any device (batches are moved to the model's device and dtype).
    members : Tensor
        ``(N,)`` bool (or 0/1): the cluster to keep (True) and the images to separate it from
        (False). Both must occur.
    method : str or Scorer
        ``"cs"`` (default): Continuous Sparsification with ``config``, which finds its own kept
        fraction. A scorer name (``"actgrad"``, ``"snip"``, ``"force"``, ``"magnitude"``,
        ``"random"``, or any registered one: :func:`methods`) or instance scores the weights on
        the members (objective: the unit at its position) and keeps the fraction ``keep``,
        cut with the scorer's ``scope`` and ``normalize``.
    keep : float, optional
        Kept fraction in (0, 1] for a scorer (default: the scorer's own ``keep``; one of the
        two is required). Not used by CS.
    granularity : {"kernel", "weight", "filter"}
    config : CSConfig, optional
        The Continuous Sparsification settings (default ``CSConfig()``; the paper's:
        ``CSConfig.paper()``).
    batch_size : int
        Images per forward pass of a scorer (memory only: the scores are sums over images).
        CS steps over batches of ``config.batch_size``.
    seed : int
        Seeds CS's batch order (runs are deterministic on a given device).
    progress : bool
        Show progress bars.

    Returns
    -------
    Subnetwork
        Its ``masks`` are *effective* (DESIGN "Effective weights"): whatever the method, a kept
        kernel is reported, counted in the kept fraction and saved only if it lies on a kept
        path from the input to the unit (:meth:`Masks.effective`); so a scorer's kept fraction
        can be below ``keep``. The method's own masks are ``raw_masks``.

    Raises
    ------
    ValueError
        Before any forward pass, for any invalid argument (shapes, empty cluster, unknown
        method or layer, out-of-range numbers); a position outside the map after one probe.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> _ = torch.manual_seed(0)
    >>> nn = torch.nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> images, members = torch.randn(8, 3, 9, 9), torch.arange(8) < 4
    >>> sub = pp.fit_subnetwork(model, pp.Unit("2", 1), images, members,
    ...                         config=pp.CSConfig(epochs=3), progress=False)
    >>> sub.method, sub.unit.position, sub.history["temperature"][-1]
    ('cs', (2, 2), 200.0)
    >>> snip = pp.fit_subnetwork(model, pp.Unit("2", 1), images, members, "snip", keep=0.5)
    >>> snip.method, round(snip.raw_masks.kept_fraction(), 2), round(snip.kept_fraction, 2)
    ('snip', 0.5, 0.31)
    """
    valid.floating_model("model", model)
    if not isinstance(unit, Unit):
        raise TypeError(f"unit must be a polyprune.Unit, got {type(unit).__name__}")
    images = as_images(images)
    members = check_members(members, images.shape[0])
    mk.check_granularity(granularity)
    name, how = resolve_method(method, keep=keep, progress=progress)
    if isinstance(how, str):
        if config is None:
            config = CSConfig()
        elif not isinstance(config, CSConfig):
            raise TypeError(f"config must be a polyprune.CSConfig, got {type(config).__name__}")
    else:
        given = keep if keep is not None else how.keep
        if given is None:
            raise ValueError(
                f"keep (the kept fraction in (0, 1]) is required for the scorer {name!r}, got None"
            )
        target = mk.check_keep(given)
    valid.integer("batch_size", batch_size, low=1)
    valid.seed("seed", seed)
    unit.validate(model)
    at = placed(model, unit, images)
    if isinstance(how, str):
        assert config is not None
        res = fit_cs(model, at, images, members, granularity, config, seed, progress)
        sub = Subnetwork(
            res.masks, at, "cs", res.history, res.calibration, res.paper_kept_fraction, res.state
        )
    else:
        sub = _fit_scorer(model, at, images, members, name, how, target, granularity, batch_size)
    return _effective(sub, model)


# -- private ---------------------------------------------------------------------------------


def _effective(sub: Subnetwork, model: nn.Module) -> Subnetwork:
    """The rule for every method (DESIGN "Effective weights"): report, count and save only the
    kernels on a kept input→unit path; the method's own masks stay in ``raw_masks``."""
    sub.raw_masks = sub.masks
    sub.masks = sub.masks.effective(model, sub.unit)
    return sub


def _fit_scorer(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    name: str,
    scorer: Scorer,
    keep: float,
    granularity: str,
    batch_size: int,
) -> Subnetwork:
    batches = list(torch.split(images[members], batch_size))  # the scorer moves them
    with eval_mode(model):
        scores = scorer.score(model, batches, unit, granularity=granularity, keep=keep)
    if not isinstance(scores, Scores) or not scores:
        raise ValueError(
            f"{type(scorer).__name__}.score returned {type(scores).__name__}, expected non-empty "
            "Scores (subclass polyprune.scoring.BaseScorer, whose score() builds them)"
        )
    warn_if_all_zero(scores, unit)
    masks = Masks.from_scores(scores, keep, scorer.scope, normalize=scorer.normalize)
    if masks.unit is None:
        masks.unit = unit
    return Subnetwork(masks, unit, name)
