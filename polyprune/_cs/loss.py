"""Private (engine): the objectives Continuous Sparsification can fit (``CSConfig(loss=...)``).

Each objective is one small function of a batch: the subnetwork's activation ``a`` (soft masks,
differentiable), the dense model's activation ``d`` on the same images (fixed), the membership
flags ``y``, the learned logit shift ``b`` (used by ``"separate"`` only) and a
:class:`LossContext` computed once from the dense activations of all fitting images. The
training loop adds the sparsity penalty ``λ · mean σ(t·m)``. Each is a :class:`CSLoss` subclass
registered by name in its class statement, with its default ``λ`` and learning rate;
``CSConfig(loss=name)`` accepts any registered name (:func:`losses` lists them).

Notation: ``r = √(mean_{members} d²)`` is the members' dense RMS (errors are relative to it, so
every objective is independent of the unit's scale); ``mean_S`` averages over the batch's
images in ``S`` (0 when the batch has none).

- ``separate`` (the paper's): ``BCE((a − c)/s − b, y)``, members weighted (non-members /
  members). Rewards *ranking* members above the others, by any path.
- ``preserve`` (Hamblin et al.'s): ``mean_{members} ((a − d)/r)²``, the squared relative error
  on the members. Ignores the other clusters.
- ``both`` (default): ``mean_{members} ((a − d)/r)² + mean_{others} (a/r)²``: compute what the
  unit computes on the members, and stay at 0 (the unit's firing threshold) on the other
  clusters' images.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._registry import Registry

__all__ = [
    "CSLoss",
    "LossContext",
    "both",
    "loss_class",
    "loss_context",
    "losses",
    "preserve",
    "separate",
]


class LossContext(NamedTuple):
    """Constants of the objectives, from the dense activations of all fitting images.

    ``center``, ``scale``: the calibrated logit ``(a − center) / scale − shift`` of
    ``"separate"`` (``(0, 1)`` without calibration: the raw activation, the paper's).
    ``member_scale``: ``r``, the members' dense RMS. ``pos_weight``: the members' BCE weight
    (non-members / members) or ``None``.
    """

    center: float
    scale: float
    member_scale: float
    pos_weight: Tensor | None


def loss_context(
    dense: Tensor,
    members: Tensor,
    calibrate: bool,
    balance: bool,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> LossContext:
    """The constants of :class:`LossContext` from dense activations ``(N,)`` and flags ``(N,)``.

    Computed in ``dense``'s precision; ``pos_weight`` is put on ``device`` in ``dtype``
    (default: those of ``dense``).
    """
    y = members.to(dense.device, torch.bool)
    center, scale = 0.0, 1.0
    if calibrate:
        center = 0.5 * (float(dense[y].mean()) + float(dense[~y].mean()))
        std = float(dense.std()) if dense.numel() > 1 else 0.0
        scale = std if std > 1e-12 else 1.0
    rms = float(dense[y].double().pow(2).mean().sqrt())
    n, n_in = y.numel(), int(y.sum())
    pos_weight = (
        torch.tensor(
            (n - n_in) / n_in,
            device=dense.device if device is None else device,
            dtype=dense.dtype if dtype is None else dtype,
        )
        if balance
        else None
    )
    return LossContext(center, scale, rms if rms > 1e-12 else 1.0, pos_weight)


def _mean_over(x: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``x`` over the 0/1 weights ``keep`` (0, still differentiable, if all are 0)."""
    return (x * keep).sum() / keep.sum().clamp_min(1)


def separate(a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
    """The paper's: ``BCE((a − c)/s − b, y)``, the activation as a logit of membership.

    Only the ranking of members above non-members counts: any path that separates will do,
    whatever it computes (a detector, not necessarily the unit's mechanism).
    """
    logit = (a - ctx.center) / ctx.scale - shift
    return F.binary_cross_entropy_with_logits(logit, y.to(a.dtype), pos_weight=ctx.pos_weight)


def preserve(a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
    """Hamblin et al.'s: ``mean_{members} ((a − d)/r)²``, reproduce the unit on the members.

    The other clusters are ignored: paths of the other meanings that also fire on the members
    are kept.
    """
    return _mean_over(((a - d) / ctx.member_scale) ** 2, y.to(a.dtype))


def both(a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
    """``preserve`` + ``mean_{others} (a/r)²``: reproduce on the members, silent elsewhere.

    Each side is averaged over its own images, so both count equally whatever the cluster
    sizes. The suppression target is 0 from either side: a one-sided hinge (``relu(a)``) lets
    negative paths of the other meanings hide positive ones, and recovered planted circuits
    less well.
    """
    return preserve(a, d, y, shift, ctx) + _mean_over(
        (a / ctx.member_scale) ** 2, 1 - y.to(a.dtype)
    )


class CSLoss:
    """The base of a Continuous Sparsification objective: subclass it, name it, implement
    :meth:`__call__`.

    The class statement registers the objective (``class Mine(CSLoss, name="mine")``), so
    ``CSConfig(loss="mine")`` and ``polyprune study --loss mine`` accept it; ``lam=``, ``lr=``
    and ``fade=`` set its defaults (``CSConfig``'s ``None``). The training loop adds the
    sparsity penalty ``λ · penalty`` to what it returns.

    Examples
    --------
    >>> import polyprune as pp
    >>> from polyprune.sparsify import CSLoss
    >>> class Hinge(CSLoss, name="hinge", lam=0.1, lr=1e-3):
    ...     def __call__(self, a, d, y, shift, ctx):
    ...         return ((d - a).clamp_min(0) / ctx.member_scale)[y].square().mean()
    >>> pp.CSConfig(loss="hinge").penalty_weight
    0.1
    """

    #: The registry name (the class statement's ``name=``).
    name: ClassVar[str] = ""
    #: The default penalty weight ``λ`` (``CSConfig(lam=None)``).
    lam: ClassVar[float] = 0.1
    #: The default learning rate (``CSConfig(lr=None)``).
    lr: ClassVar[float] = 1e-3
    #: The default fraction of the epochs over which the starting masks fade
    #: (``CSConfig(fade=None)``).
    fade: ClassVar[float] = 0.8
    #: Whether the objective reads the learned logit shift ``b`` (trained only then).
    uses_shift: ClassVar[bool] = False

    def __init_subclass__(
        cls,
        name: str | None = None,
        lam: float | None = None,
        lr: float | None = None,
        fade: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__.lower()
        if lam is not None:
            cls.lam = float(lam)
        if lr is not None:
            cls.lr = float(lr)
        if fade is not None:
            cls.fade = float(fade)
        if name is not None:
            _LOSSES.add(name, cls)

    def __call__(self, a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
        """The objective on one batch: the subnetwork's activations ``a`` ``(B,)`` (soft masks,
        differentiable), the dense model's ``d`` ``(B,)``, the membership flags ``y`` ``(B,)``
        bool, the learned logit shift ``shift`` (a scalar) and the :class:`LossContext`."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")


_LOSSES: Registry[type[CSLoss]] = Registry("CS loss")


# Defaults tuned on planted networks (seeds 0–2); "separate" keeps fit_subnetwork's earlier
# defaults (λ = 1, lr 5e-3). Registration order is the order losses() lists.
class _Separate(CSLoss, name="separate", lam=1.0, lr=5e-3):
    __doc__ = separate.__doc__
    uses_shift = True

    def __call__(self, a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
        return separate(a, d, y, shift, ctx)


class _Preserve(CSLoss, name="preserve", lam=0.1, lr=1e-3):
    __doc__ = preserve.__doc__

    def __call__(self, a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
        return preserve(a, d, y, shift, ctx)


class _Both(CSLoss, name="both", lam=0.1, lr=1e-3):
    __doc__ = both.__doc__

    def __call__(self, a: Tensor, d: Tensor, y: Tensor, shift: Tensor, ctx: LossContext) -> Tensor:
        return both(a, d, y, shift, ctx)


def losses() -> tuple[str, ...]:
    """The registered objective names, in registration order (``CSConfig(loss=...)``).

    Examples
    --------
    >>> from polyprune.sparsify import losses
    >>> losses()[:3]
    ('separate', 'preserve', 'both')
    """
    return _LOSSES.names()


def loss_class(name: str) -> type[CSLoss]:
    """The objective class registered as ``name`` (a ``ValueError`` listing the names)."""
    return _LOSSES.get(name)
