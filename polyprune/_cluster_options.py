"""Private: the clustering options, checked once before any work.

:func:`polyprune.cluster` checks its HDBSCAN/PCA options with :func:`check_hdbscan`;
:func:`polyprune.study` and :func:`polyprune.scan` take the same options as ``cluster_options``
(with ``min_cluster_size`` beside them) and check them with :func:`check_options` before they
read any data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _validate as valid

__all__ = ["MIN_CODES", "OPTIONS", "channel_seed", "check_hdbscan", "check_options"]

#: Fewer codes than this cannot be clustered meaningfully.
MIN_CODES = 10
#: The options of :func:`~polyprune.cluster` that ``study`` and ``scan`` take as
#: ``cluster_options``.
OPTIONS = ("standardize", "min_samples", "cluster_selection_method", "n_components")


def channel_seed(seed: int, channel: int) -> int:
    """The seed of a channel's significance test: ``scan`` and ``study`` both use it, so a study
    of the channel a scan ranked gives the scan's p-value (same codes, same null draws)."""
    return valid.wrap_seed(seed + channel)


def check_options(
    min_cluster_size: int | None, k: int, cluster_options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``study``'s and ``scan``'s clustering arguments for ``k`` codes, checked before any
    work; returns the options as a dict."""
    if min_cluster_size is not None:
        valid.integer("min_cluster_size", min_cluster_size, low=2, high=k, why=f" (k={k})")
    if cluster_options is not None and not isinstance(cluster_options, Mapping):
        raise valid.ArgumentTypeError(
            f"cluster_options must be a dict with keys from {list(OPTIONS)}, "
            f"got {type(cluster_options).__name__}"
        )
    options = dict(cluster_options or {})
    unknown = sorted(set(options) - set(OPTIONS), key=repr)
    if unknown:
        raise ValueError(f"unknown cluster_options {unknown}; valid: {list(OPTIONS)}")
    check_hdbscan(k, prefix="cluster_options", **options)
    return options


def check_hdbscan(
    n: int,
    prefix: str = "",
    standardize: object = False,
    min_samples: object = None,
    cluster_selection_method: object = "eom",
    n_components: object = None,
) -> None:
    """The options :func:`~polyprune.cluster` passes to HDBSCAN and PCA, for ``n`` codes
    (``prefix``: the dict they came in, for the message)."""

    def name(option: str) -> str:
        return f"{prefix}[{option!r}]" if prefix else option

    valid.flag(name("standardize"), standardize)
    if min_samples is not None:
        valid.integer(name("min_samples"), min_samples, low=1, high=n, why=f" (k={n})")
    valid.choice(name("cluster_selection_method"), cluster_selection_method, ("eom", "leaf"))
    if n_components is not None:
        valid.integer(name("n_components"), n_components, low=1)
