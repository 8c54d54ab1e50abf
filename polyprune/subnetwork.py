"""fit_subnetwork: one sparse subnetwork per meaning of a unit, by any method, as a Subnetwork.

Continuous Sparsification (paper section 3.3) learns the masks; a scorer (``ActGrad``, ``SNIP``,
``FORCE``, ...) scores the weights on the cluster's images and keeps a fraction ``keep``. Both
return the same :class:`Subnetwork`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from . import _masking as mk
from ._cs_fit import check_cs, fit_cs
from ._hooks import eval_mode
from ._unit_io import check_images, check_members, resolve_position, unit_activations
from .masks import Masks, Scores
from .targets import Unit

__all__ = ["PAPER_SETTINGS", "Subnetwork", "fit_subnetwork"]

#: The paper's Continuous Sparsification settings (its code and text), for
#: ``fit_subnetwork(..., **PAPER_SETTINGS)``: SGD lr 0.1 (×0.1 at epochs 130 and 150),
#: 160 epochs, batch 32, λ = 1e-6 on the raw sum Σσ(t·m), raw activation as the BCE logit,
#: logits initialised at 0 (σ = ½), temperature 1 → 200. The paper's text says "momentum" but its
#: code uses none; momentum stays at our default 0.9 unless you pass ``momentum=0``.
PAPER_SETTINGS: Mapping[str, Any] = {
    "epochs": 160,
    "lr": 0.1,
    "milestones": (130, 150),
    "gamma": 0.1,
    "batch_size": 32,
    "lam": 1e-6,
    "penalty": "sum",
    "lr_scale": "none",
    "calibrate": False,
    "balance": False,
    "init": 0.5,
    "temperature": (1.0, 200.0),
}


@runtime_checkable
class _Scorer(Protocol):
    def score(
        self, model: nn.Module, inputs: Tensor, objective: Any, *, granularity: str
    ) -> Any: ...


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
        ``"cs"`` or the scorer's class name.
    history : dict of str to list of float
        Per epoch for CS (``loss``, ``bce``, ``penalty``, ``temperature``, ``kept_fraction``,
        ``lr``, ``seconds`` of training); empty for scorers.
    calibration : tuple of float or None
        ``(center, scale)`` of the BCE logit ``(a − center) / scale`` for CS with calibration.
    paper_kept_fraction : float or None
        The paper's count for CS (kept / all weights of the masked layers); see
        :meth:`ContinuousSparsifier.paper_kept_fraction`.
    state : dict or None
        For CS, the final logits and temperature (:meth:`ContinuousSparsifier.state_dict`):
        load them into a new sparsifier to inspect the soft masks.
    """

    masks: Masks
    unit: Unit
    method: str
    history: dict[str, list[float]] = field(default_factory=dict)
    calibration: tuple[float, float] | None = None
    paper_kept_fraction: float | None = None
    state: dict[str, Any] | None = None

    @property
    def kept_fraction(self) -> float:
        """Kept weights / weights that can reach the unit (DESIGN definition)."""
        return self.masks.kept_fraction()

    @torch.no_grad()
    def activations(self, model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
        """The unit's activation on ``images`` with the hard masks applied (model restored)."""
        return unit_activations(model, self.unit, check_images(images), self.masks, batch_size)


def fit_subnetwork(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    method: str | Any = "cs",
    *,
    keep: float | None = None,
    granularity: str = "kernel",
    epochs: int = 50,
    lam: float = 1.0,
    lr: float = 5e-3,
    lr_scale: str = "elements",
    momentum: float = 0.9,
    batch_size: int = 32,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    penalty: Literal["mean", "sum"] = "mean",
    calibrate: bool = True,
    balance: bool = True,
    init: float = 0.5,
    temperature: tuple[float, float] = (1.0, 200.0),
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
        ``(N, C, H, W)`` on any device (batches are moved to the model's).
    members : Tensor
        ``(N,)`` bool (or 0/1): the cluster to keep (True) and the images to separate it from
        (False). Both must occur.
    method : "cs" or a scorer
        ``"cs"``: Continuous Sparsification (below). A scorer (anything with
        ``score(model, inputs, objective, *, granularity)``, e.g. ``polyprune.scoring.FORCE()``)
        scores the weights on the members (in batches of ``batch_size``, objective: the unit at
        its position; ``keep`` is passed on when ``score`` takes it) and keeps the fraction
        ``keep`` with :meth:`Masks.from_scores` (with the scorer's ``scope``/``normalize``
        when it has them).
    keep : float, optional
        Kept fraction in (0, 1] for a scorer (required there; CS finds its own).
    granularity : {"kernel", "weight", "filter"}

    Other Parameters
    ----------------
    epochs : int
        CS epochs (≥ 2), each a pass over ``images`` in shuffled batches of ``batch_size``;
        the temperature goes from ``temperature[0]`` to ``temperature[1]`` exponentially,
        stepped after each epoch. Default 50 (the paper: 160).
    lam : float
        Weight of the sparsity penalty: loss = BCE + ``lam`` · penalty. Default 1.0 on the
        ``"mean"`` penalty.
    penalty : {"mean", "sum"}
        ``"mean"`` (default): mean mask value over the learned elements, in [0, 1], so ``lam``
        means the same for any network; ``"sum"``: the paper's raw Σσ(t·m) (its λ = 1e-6).
    lr, lr_scale, momentum, milestones, gamma
        SGD with momentum (default 0.9) on the logits; the learning rate is multiplied by
        ``gamma`` at each epoch in ``milestones`` (default: none). With
        ``lr_scale="elements"`` (default) each masked weight's logits use ``lr × (its number
        of learned mask elements)``: every element's share of the unit's activation is about
        1/(elements in its layer), so this makes logits move at the same speed in a 200-element
        layer and a 100,000-element one, and lets them cross zero decisively within the
        schedule (default ``lr`` 5e-3). ``lr_scale="none"`` uses ``lr`` for every logit (the
        paper's setting, with its ``lr`` 0.1).
    batch_size : int
        Default 32 (the paper's).
    calibrate : bool
        If true (default) the BCE logit is ``(a − c) / s − b``: ``s`` is the standard deviation
        of the dense model's activations over ``images`` and ``c`` the midpoint of their member
        and non-member means (both fixed), ``b`` a learned shift (lr 0.1) that lets the decision
        threshold follow the subnetwork's activations. The loss is then independent of the
        unit's activation scale, and a path that fires on members and non-members alike is
        dropped rather than kept to push members over a fixed threshold. The final ``c + s·b``
        and ``s`` are :attr:`Subnetwork.calibration`. If false, the raw activation is the logit
        (the paper's choice).
    balance : bool
        If true (default) members are weighted by (non-members / members) in the BCE, so both
        sides count equally whatever their sizes.
    init : float
        Initial mask value σ(t0·m0); default 0.5 (logits 0, the paper's: every mask undecided).
    temperature : (start, end)
        Default (1, 200), the paper's (:class:`ExponentialTemperature`).
    seed : int
        Seeds the batch order (runs are deterministic on a given device).
    progress : bool
        Show a tqdm bar over epochs.

    Returns
    -------
    Subnetwork

    Raises
    ------
    ValueError
        Before any forward pass, for any invalid argument (shapes, empty cluster, unknown
        method or layer, out-of-range numbers); a position outside the map after one probe.

    Notes
    -----
    ``PAPER_SETTINGS`` holds the paper's values (``fit_subnetwork(..., **PAPER_SETTINGS)``).

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> from polyprune.subnetwork import fit_subnetwork
    >>> _ = torch.manual_seed(0)
    >>> nn = torch.nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> images, members = torch.randn(8, 3, 9, 9), torch.arange(8) < 4
    >>> sub = fit_subnetwork(model, pp.Unit("2", 1), images, members, epochs=3, progress=False)
    >>> sub.method, sub.unit.position, sub.history["temperature"][-1]
    ('cs', (2, 2), 200.0)
    >>> 0.0 <= sub.kept_fraction <= 1.0
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(unit, Unit):
        raise TypeError(f"unit must be a polyprune.Unit, got {type(unit).__name__}")
    images = check_images(images)
    members = check_members(members, images.shape[0])
    mk.check_granularity(granularity)
    if isinstance(method, str):
        if method != "cs":
            raise ValueError(
                f"method must be 'cs' or a scorer instance (e.g. polyprune.FORCE()), got {method!r}"
            )
        settings = check_cs(
            epochs, lam, lr, momentum, batch_size, milestones, gamma, penalty, init, temperature,
            lr_scale, balance,
        )  # fmt: skip
    elif not isinstance(method, _Scorer):
        raise ValueError(
            "method must be 'cs' or a scorer with score(model, inputs, objective, *, "
            f"granularity), got {type(method).__name__}"
        )
    elif keep is None or isinstance(keep, bool) or not isinstance(keep, int | float):
        raise ValueError(
            f"keep (the kept fraction in (0, 1]) is required for a scorer, got {keep!r}"
        )
    elif not 0 < keep <= 1:
        raise ValueError(f"keep (the kept fraction) must be in (0, 1], got {keep!r}")
    unit.validate(model)
    pos = resolve_position(model, unit, _size(images), images.shape[1])
    placed = Unit(unit.layer, unit.channel, pos)
    if isinstance(method, str):
        res = fit_cs(
            model, placed, images, members, granularity, settings, bool(calibrate), seed, progress
        )
        return Subnetwork(
            res.masks,
            placed,
            "cs",
            res.history,
            res.calibration,
            res.paper_kept_fraction,
            res.state,
        )
    assert keep is not None
    return _fit_scorer(model, placed, images, members, method, float(keep), granularity, batch_size)


# -- private ---------------------------------------------------------------------------------


def _size(images: Tensor) -> tuple[int, int]:
    return (int(images.shape[-2]), int(images.shape[-1]))


def _fit_scorer(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    scorer: Any,
    keep: float,
    granularity: str,
    batch_size: int,
) -> Subnetwork:
    batches = list(torch.split(images[members], batch_size))  # the scorer moves them
    options = {"keep": keep} if _accepts(scorer.score, "keep") else {}
    with eval_mode(model):
        scores = scorer.score(model, batches, unit, granularity=granularity, **options)
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError(
            f"{type(scorer).__name__}.score returned {type(scores).__name__}, expected a non-empty "
            "Scores (weight name → tensor)"
        )
    if not getattr(scores, "regions", None):
        # a plain dict from a custom scorer: give it the unit's regions so counts follow DESIGN
        shapes, regions = mk.unit_regions(model, unit.layer, unit.channel, granularity)
        scores = Scores(
            dict(scores),
            granularity,
            weight_shapes={k: shapes[k] for k in scores if k in shapes},
            regions={k: regions[k] for k in scores if k in regions},
            unit=unit,
        )
    masks = Masks.from_scores(
        scores,
        keep,
        getattr(scorer, "scope", "global"),
        normalize=getattr(scorer, "normalize", "none"),
        granularity=granularity,
    )
    if masks.unit is None:
        masks.unit = unit
    return Subnetwork(masks, unit, type(scorer).__name__)


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
