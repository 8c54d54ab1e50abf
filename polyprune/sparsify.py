"""Continuous Sparsification: learned sigmoid masks over a model's weights (paper section 3.3).

After Savarese et al., "Winning the Lottery with Continuous Sparsification" (2020). Every
maskable element of every Conv/Linear weight that can reach a target :class:`~polyprune.Unit`
gets a logit ``m``; the weight the model sees is ``w · σ(t·m)``, with ``t`` the *temperature*,
raised during training by a schedule such as :class:`ExponentialTemperature`. The subnetwork is
the hard mask ``m > 0``. :func:`polyprune.fit_subnetwork` runs the whole fit with a
:class:`CSConfig`; the classes here are the parts, for your own training loop.
"""

from __future__ import annotations

from ._cs.config import CSConfig
from ._cs.sparsifier import ContinuousSparsifier, ExponentialTemperature

__all__ = ["CSConfig", "ContinuousSparsifier", "ExponentialTemperature"]
