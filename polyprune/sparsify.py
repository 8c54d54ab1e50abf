"""Continuous Sparsification: learned sigmoid masks over a model's weights (paper section 3.3).

After Savarese et al., "Winning the Lottery with Continuous Sparsification" (2020). Every
maskable element of every Conv/Linear weight that can reach a target :class:`~polyprune.Unit`
gets a logit ``m``; the weight the model sees is ``w · σ(t·m)``, with ``t`` the *temperature*,
raised during training by a schedule such as :class:`ExponentialTemperature`. The subnetwork is
the hard mask ``m > 0``. :class:`ContinuousSparsification` is the method (``"cs"``) that
:func:`polyprune.fit_subnetwork` and :func:`polyprune.study` run with a :class:`CSConfig`; the
other classes are the parts, for your own training loop. The objectives ``CSConfig(loss=...)``
accepts are :class:`CSLoss` subclasses registered by name (:func:`losses`).
"""

from __future__ import annotations

from ._cs.config import CSConfig
from ._cs.fit import fit_cs
from ._cs.loss import CSLoss, LossContext, losses
from ._cs.sparsifier import ContinuousSparsifier, ExponentialTemperature
from .methods import FitJob, Method, Subnetwork

__all__ = [
    "CSConfig",
    "CSLoss",
    "ContinuousSparsification",
    "ContinuousSparsifier",
    "ExponentialTemperature",
    "LossContext",
    "losses",
]


class ContinuousSparsification(Method, name="cs"):
    """Continuous Sparsification as a method: learns the masks, finds its own kept fraction.

    Parameters
    ----------
    config : CSConfig, optional
        The settings of the fit (default ``CSConfig()``; the paper's: ``CSConfig.paper()``). A
        ``config=`` given to :func:`~polyprune.fit_subnetwork` or :func:`~polyprune.study`
        wins over this one.
    progress : bool
        Show progress bars (also needs the caller's ``progress``).

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(4, 2, 3))
    >>> cs = pp.ContinuousSparsification(pp.CSConfig(epochs=3), progress=False)
    >>> sub = pp.fit_subnetwork(model, pp.Unit("2", 1), torch.randn(8, 3, 9, 9),
    ...                         torch.arange(8) < 4, cs)
    >>> sub.method, len(sub.history["loss"])
    ('cs', 3)
    """

    def __init__(self, config: CSConfig | None = None, *, progress: bool = True) -> None:
        if config is not None and not isinstance(config, CSConfig):
            raise TypeError(f"config must be a polyprune.CSConfig, got {type(config).__name__}")
        super().__init__(progress=progress)
        self.config = config

    def with_config(self, config: CSConfig | None) -> ContinuousSparsification:
        """This method with ``config`` instead of its own (itself when ``config`` is None)."""
        if config is None:
            return self
        return ContinuousSparsification(config, progress=self.progress)

    @property
    def settings(self) -> CSConfig:
        """The config a fit uses: ``config``, or ``CSConfig()`` when it is None."""
        return CSConfig() if self.config is None else self.config

    def fit(self, job: FitJob) -> Subnetwork:
        """Learn the masks of one job (see :class:`CSConfig` for the loop); the subnetwork
        carries the per-epoch history, the calibration and the final logits."""
        res = fit_cs(
            job.model, job.unit, job.images, job.members, job.granularity, self.settings,
            job.seed, job.progress and self.progress,
        )  # fmt: skip
        return Subnetwork(
            res.masks, job.unit, self.name, res.history, res.calibration,
            res.paper_kept_fraction, res.state,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"ContinuousSparsification(config={self.config!r})"
