"""Private (engine): the settings of a Continuous Sparsification fit, validated once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .. import _validate as valid
from .loss import loss_class, losses

__all__ = ["CSConfig"]

#: The largest learning rate: the mask logits start near 0 and σ(t·m) saturates within a few
#: units, so a larger step is no longer learning (and lr × elements overflowed float32 in SGD).
_LR_MAX = 1e6
_LR_WHY = " (a larger step saturates every mask at once)"


@dataclass(frozen=True)
class CSConfig:
    """How :func:`~polyprune.fit_subnetwork` learns a subnetwork by Continuous Sparsification.

    Every weight is seen as ``w · σ(t·m + b)``. With ``fade > 0`` (default) every logit ``m``
    starts at 0 (undecided) and the offset ``b`` at ``logit(init)``, so every mask starts at
    ``init``; ``b`` falls linearly to 0 over the first ``fade × epochs`` epochs (epoch ``k``:
    ``b = logit(init) · max(0, 1 − k / (fade · epochs))``). With ``fade = 0``, ``b = 0`` and
    ``m`` starts at ``logit(init) / temperature[0]`` (the paper's, with ``init = 0.5``). Each
    epoch is a pass over the images in shuffled batches of ``batch_size``, with SGD (``lr``,
    ``momentum``) on the loss ``objective + lam · penalty``; after each epoch the temperature is
    multiplied by ``(end/start) ** (1/(epochs-1))`` (:class:`ExponentialTemperature`) and the
    learning rate by ``gamma`` at each epoch in ``milestones``. The subnetwork is ``m > 0``.
    Frozen and validated on construction: a bad value fails here, before any work.

    Attributes
    ----------
    loss : str
        The name of a registered objective (:class:`~polyprune.sparsify.CSLoss`; a subclass
        with a ``name=`` adds one): what the subnetwork must do besides being sparse (``a``:
        the subnetwork's activation, ``d``: the original network's, ``r``: the RMS of ``d``
        over the members):

        - ``"both"`` (default): ``mean_members ((a − d)/r)² + mean_others (a/r)²``: compute the
          unit's activation on the cluster's images and stay silent on the other clusters'. Of
          the three it recovers planted circuits best and keeps the activation's scale
          (``docs/results.md``, section "Circuit recovery").
        - ``"preserve"``: the first term alone (Hamblin et al.'s feature preservation); ignores
          the other clusters, so it need not separate.
        - ``"separate"``: the paper's ``BCE`` of the activation as a logit of membership (with
          ``calibrate`` and ``balance`` below); any path that ranks the members first will do.
    epochs : int
        Number of epochs, ≥ 2 (the temperature goes from start to end). Default 50 (paper: 160).
    lam : float or None
        Weight of the sparsity penalty (≥ 0). ``None`` (default): the loss's own, 0.1 for
        ``"both"``/``"preserve"`` and 1.0 for ``"separate"``, on the ``"mean"`` penalty
        (:attr:`penalty_weight`).
    penalty : {"mean", "sum"}
        ``"mean"``: the mean mask value σ(t·m) over the learned elements, in [0, 1], so ``lam``
        means the same for any network; ``"sum"``: the paper's raw Σσ(t·m) (its λ = 1e-6).
    lr : float or None
        SGD learning rate in (0, 1e6]. ``None`` (default): the loss's own, 1e-3 for
        ``"both"``/``"preserve"`` and 5e-3 for ``"separate"``, with ``lr_scale="elements"``
        (:attr:`learning_rate`).
    lr_scale : {"elements", "none"}
        ``"elements"``: each masked weight's logits use ``lr × (its number of learned mask
        elements)``. Every element's share of the unit's activation is about 1/(elements in its
        layer), so this makes logits move at the same speed in a 200-element layer and a
        100,000-element one. ``"none"``: ``lr`` for every logit (the paper's, with lr 0.1).
    momentum : float
        SGD momentum in [0, 1). Default 0.9 (the paper's text says momentum; its code used none).
    batch_size : int
        Images per optimisation step. Default 32 (the paper's).
    milestones : tuple of int
        Epochs (in 1..epochs-1) after which the learning rate is multiplied by ``gamma``.
    gamma : float
        The learning-rate factor at each milestone, in (0, 1].
    calibrate : bool
        ``loss="separate"`` only. If true (default) the BCE logit is ``(a − c) / s − b``:
        ``s`` is the standard deviation of the dense model's activations over the images and
        ``c`` the midpoint of the member and non-member means (both fixed), ``b`` a learned
        shift that lets the decision threshold follow the subnetwork's activations. If false,
        the raw activation is the logit (the paper's choice).
    balance : bool
        ``loss="separate"`` only. If true (default) members are weighted by (non-members /
        members) in the BCE, so both sides count equally whatever their sizes.
    init : float
        Initial mask value in (0, 1). Default 0.95: every weight starts at 0.95 of its value, so
        a unit gated by a threshold (a negative bias the masks do not scale) still fires on its
        members and the objective's gradient reaches the masks; the paper's 0.5 halves every
        weight, which closes such gates (the unit is then 0 on every crop and the fit keeps
        nothing: ``docs/faithfulness.md``, the identifiable setting). ``init=0.5, fade=0``
        gives 0.2's behaviour (logits start at 0).
    temperature : (float, float)
        Start and end temperature, both > 0. Default (1, 200), the paper's.
    fade : float or None
        In [0, 1]: the fraction of the epochs over which the starting mask value fades, while
        the logits that decide the subnetwork start undecided at 0. ``None`` (default): the
        loss's own, 0.8 for the built-in ones (:attr:`fade_fraction`). A mask whose
        objective gradient is 0 (a kernel that does not matter, or one behind a closed gate)
        is then decided by the sparsity penalty alone, as at the paper's ``init = 0.5``; with
        ``fade = 0`` the logits start at ``logit(init)`` and such a kernel stays kept unless the
        penalty moves it across 0. Chosen with ``init`` on planted seeds 0–4
        (``docs/faithfulness.md`` measures it on other seeds).

    Examples
    --------
    >>> import polyprune as pp
    >>> pp.CSConfig(epochs=25).penalty_weight, pp.CSConfig(loss="separate").penalty_weight
    (0.1, 1.0)
    >>> pp.CSConfig().fade_fraction, pp.CSConfig(fade=0.5).fade_fraction
    (0.8, 0.5)
    >>> pp.CSConfig.paper().loss, pp.CSConfig.paper().epochs, pp.CSConfig.paper().milestones
    ('separate', 160, (130, 150))
    >>> pp.CSConfig(epochs=1)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be an int ≥ 2 (the temperature goes from start to end), got 1
    """

    loss: str = "both"
    epochs: int = 50
    lam: float | None = None
    penalty: Literal["mean", "sum"] = "mean"
    lr: float | None = None
    lr_scale: Literal["elements", "none"] = "elements"
    momentum: float = 0.9
    batch_size: int = 32
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    calibrate: bool = True
    balance: bool = True
    init: float = 0.95
    temperature: tuple[float, float] = (1.0, 200.0)
    fade: float | None = None

    def __post_init__(self) -> None:
        valid.integer("epochs", self.epochs, low=2, why=" (the temperature goes from start to end)")
        valid.integer("batch_size", self.batch_size, low=1)
        if self.fade is not None:
            valid.number("fade", self.fade, low=0, high=1)
        if not isinstance(self.loss, str) or self.loss not in losses():
            raise ValueError(
                f"loss must be one of {list(losses())} (the registered CS losses), "
                f"got {self.loss!r}"
            )
        if self.lam is not None:
            valid.number("lam", self.lam, low=0)
        if self.lr is not None:
            valid.number("lr", self.lr, low=0, high=_LR_MAX, low_open=True, why=_LR_WHY)
        valid.number("momentum", self.momentum, low=0, high=1, high_open=True)
        valid.fraction("gamma", self.gamma)
        valid.fraction("init", self.init, one=False)
        if self.lr_scale not in ("elements", "none"):
            raise ValueError(f"lr_scale must be 'elements' or 'none', got {self.lr_scale!r}")
        if self.penalty not in ("mean", "sum"):
            raise ValueError(f"penalty must be 'mean' or 'sum', got {self.penalty!r}")
        if not isinstance(self.milestones, tuple | list):
            raise valid.ArgumentTypeError(
                f"milestones must be a tuple of epochs in 1..{self.epochs - 1}, "
                f"got {self.milestones!r}"
            )
        for i, m in enumerate(self.milestones):
            valid.integer(f"milestones[{i}]", m, low=1, high=self.epochs - 1)
        if not isinstance(self.temperature, tuple | list) or len(self.temperature) != 2:
            raise ValueError(
                f"temperature must be (start, end) with both > 0, got {self.temperature!r}"
            )
        for i, t in enumerate(self.temperature):
            valid.number(f"temperature[{i}]", t, low=0, low_open=True)
        valid.flag("calibrate", self.calibrate)
        valid.flag("balance", self.balance)
        object.__setattr__(self, "milestones", tuple(self.milestones))
        t0, t1 = self.temperature
        object.__setattr__(self, "temperature", (float(t0), float(t1)))
        for name in ("lam", "lr", "momentum", "gamma", "init", "fade"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))

    @property
    def penalty_weight(self) -> float:
        """``lam``, or the loss's default weight when ``lam`` is None."""
        return loss_class(self.loss).lam if self.lam is None else float(self.lam)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the loss's default learning rate when ``lr`` is None."""
        return loss_class(self.loss).lr if self.lr is None else float(self.lr)

    @property
    def fade_fraction(self) -> float:
        """``fade``, or the loss's default fraction when ``fade`` is None."""
        return loss_class(self.loss).fade if self.fade is None else float(self.fade)

    @classmethod
    def paper(cls, **changes: Any) -> CSConfig:
        """The paper's settings (its code and text), with optional ``changes``.

        The BCE separation objective (``loss="separate"``), SGD lr 0.1 (×0.1 at epochs 130
        and 150), 160 epochs, batch 32, λ = 1e-6 on the raw sum Σσ(t·m), raw activation as
        the BCE logit, no class balancing, logits initialised at 0 (σ = ½), temperature
        1 → 200, nothing faded (``fade=0``). The paper's text says "momentum" but its code uses
        none; momentum stays at our default 0.9 unless you pass ``momentum=0``.
        """
        settings: dict[str, Any] = {
            "loss": "separate", "epochs": 160, "lr": 0.1, "milestones": (130, 150),
            "gamma": 0.1, "batch_size": 32,
            "lam": 1e-6, "penalty": "sum", "lr_scale": "none", "calibrate": False,
            "balance": False, "init": 0.5, "temperature": (1.0, 200.0), "fade": 0.0,
        }  # fmt: skip
        settings.update(changes)
        return cls(**settings)

    def replace(self, **changes: Any) -> CSConfig:
        """A copy with ``changes`` applied (validated like a new config)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            valid = [f.name for f in dataclasses.fields(self)]
            raise ValueError(f"unknown CSConfig field(s) {unknown}; valid: {valid}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-ready values."""
        out = dataclasses.asdict(self)
        out["milestones"], out["temperature"] = list(self.milestones), list(self.temperature)
        return out

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> CSConfig:
        """The config written by :meth:`to_dict`."""
        values = dict(data)
        values["milestones"] = tuple(values.get("milestones", ()))
        values["temperature"] = tuple(values.get("temperature", (1.0, 200.0)))
        return cls().replace(**values)
