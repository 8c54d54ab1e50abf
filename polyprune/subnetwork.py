"""fit_subnetwork: one sparse subnetwork per meaning of a unit, by any method, as a Subnetwork.

A method is a :class:`~polyprune.methods.Method`: Continuous Sparsification (paper section 3.3,
``"cs"``) learns the masks; a scorer (``ActGrad``, ``SNIP``, ``FORCE``, ...) scores the weights
on the cluster's images and keeps a fraction ``keep``; any registered method of your own plugs
in the same way. All return the same :class:`Subnetwork`.
"""

from __future__ import annotations

from torch import Tensor, nn

from . import _masking as mk
from . import _validate as valid
from ._cs.config import CSConfig
from ._data import as_images, check_members
from ._model import eval_mode, gradients_on
from ._unit_io import placed
from .masks import Masks
from .methods import FitJob, Method, Subnetwork, available, check_method, create, resolve_keep
from .sparsify import ContinuousSparsification
from .targets import Unit

__all__ = ["Subnetwork", "fit_subnetwork", "methods", "resolve_method"]


def methods() -> tuple[str, ...]:
    """Every method name :func:`fit_subnetwork` and :func:`~polyprune.study` accept: ``"cs"``
    (Continuous Sparsification), the registered scorers and any other registered method
    (:func:`polyprune.methods.available`).

    Examples
    --------
    >>> from polyprune.subnetwork import methods
    >>> methods()[:4]
    ('cs', 'actgrad', 'snip', 'force')
    """
    return available()


def resolve_method(spec: str | Method, *, progress: bool = True) -> tuple[str, Method]:
    """``(name, method)`` for a method name or a method instance (validated, before any work).

    A name builds a new method of the registered class (with ``progress``); an instance is
    returned as it is, named by its registry name.

    Examples
    --------
    >>> import polyprune as pp
    >>> pp.subnetwork.resolve_method("SNIP")
    ('snip', SNIP(keep=None, scope='global'))
    """
    return named_method("spec", spec, progress)


def named_method(argument: str, spec: object, progress: bool = True) -> tuple[str, Method]:
    """:func:`resolve_method`, its errors naming the caller's ``argument``."""
    if isinstance(spec, str):
        name = spec.lower()
        if name not in available():
            raise ValueError(
                f"{argument}: unknown method {spec!r}; valid: {list(methods())} or a "
                "polyprune.Method instance"
            )
        return name, create(name, progress=progress)
    how = check_method(argument, spec)
    return how.name or type(how).__name__.lower(), how


def with_config(method: Method, config: CSConfig | None) -> Method:
    """``method`` with the CS settings ``config`` when it is Continuous Sparsification (the
    explicit argument wins over the instance's own); any other method as it is."""
    if config is not None and not isinstance(config, CSConfig):
        raise TypeError(f"config must be a polyprune.CSConfig, got {type(config).__name__}")
    if isinstance(method, ContinuousSparsification):
        return method.with_config(config)
    return method


def fit_subnetwork(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    method: str | Method = "cs",
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
    method : str or Method
        A registered method's name (:func:`methods`) or a :class:`~polyprune.methods.Method`
        instance. ``"cs"`` (default): Continuous Sparsification with ``config``, which finds its
        own kept fraction. A scorer (``"actgrad"``, ``"snip"``, ``"force"``, ``"magnitude"``,
        ``"random"``, or any registered one) scores the weights on the members (objective: the
        unit at its position) and keeps the fraction ``keep``, cut with the scorer's ``scope``
        and ``normalize``.
    keep : float, optional
        Kept fraction in (0, 1]. One rule everywhere: this argument, else the method instance's
        ``keep``, else :data:`~polyprune.methods.DEFAULT_KEEP` (0.05). Methods that find their
        own kept fraction (CS) do not use it.
    granularity : {"kernel", "weight", "filter"}
    config : CSConfig, optional
        The Continuous Sparsification settings, for a CS method: this argument, else the
        :class:`~polyprune.sparsify.ContinuousSparsification` instance's ``config``, else
        ``CSConfig()`` (the paper's: ``CSConfig.paper()``). Not used by other methods.
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
        path from the input to the unit (:meth:`Masks.effective`). A scorer's cut is
        path-aware: it lowers its score threshold until the effective masks keep ``keep``
        (:mod:`polyprune.scoring`), so its kept fraction is ``keep`` or, where one more kernel
        completes several paths at once, a little above. The method's own (thresholded) masks
        are ``raw_masks``.

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
    ('snip', 0.62, 0.62)
    """
    valid.floating_model("model", model, finite=True)
    if not isinstance(unit, Unit):
        raise TypeError(f"unit must be a polyprune.Unit, got {type(unit).__name__}")
    images = as_images(images)
    members = check_members(members, images.shape[0])
    gran = mk.check_granularity(granularity)
    name, how = named_method("method", method, progress)
    how = with_config(how, config)
    target = resolve_keep(keep, how)
    valid.integer("batch_size", batch_size, low=1)
    valid.seed("seed", seed)
    unit.validate(model)
    at = placed(model, unit, images)
    job = FitJob(model, at, images, members, gran, target, batch_size, seed, progress)
    with eval_mode(model), gradients_on():  # every method: eval flags restored, autograd on
        found = how.fit(job)
    if isinstance(found, Masks):
        if found.unit is None:
            found.unit = at
        found = Subnetwork(found, at, name)
    elif not isinstance(found, Subnetwork):
        raise TypeError(
            f"{type(how).__name__}.fit returned {type(found).__name__}, expected polyprune.Masks "
            "(or a Subnetwork)"
        )
    return _effective(found, model)


def _effective(sub: Subnetwork, model: nn.Module) -> Subnetwork:
    """The rule for every method (DESIGN "Effective weights"): report, count and save only the
    kernels on a kept input→unit path; the method's own masks stay in ``raw_masks``."""
    sub.raw_masks = sub.masks
    sub.masks = sub.masks.effective(model, sub.unit)
    return sub
