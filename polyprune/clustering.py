"""Cluster a unit's top activating inputs by their layer codes (HDBSCAN): is the unit polysemantic?

Paper, section 3.1: record the center activations of *every* channel of the unit's layer for the
unit's top-k crops (the "codes", :attr:`TopActivations.codes`) and cluster them with HDBSCAN;
two or more clusters mean the unit responds to separate things. polyprune 0.3 adds a
significance test (:func:`significance`): a unit is polysemantic when HDBSCAN finds two or more
clusters **and** the test gives ``p < alpha``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from . import _glance
from . import _validate as valid
from ._cluster_options import MIN_CODES, check_hdbscan
from ._model import random_state_kept
from ._sigclust import MAX_DRAWS, METHODS, checked, sigclust, strongest
from ._stats import nan_to_none, none_to_nan

__all__ = ["Clustering", "cluster", "significance"]

#: The default significance level of the verdict.
ALPHA = 0.05


@dataclass(frozen=True)
class Clustering:
    """The result of :func:`cluster`.

    Attributes
    ----------
    labels : ndarray of int, shape (N,)
        Cluster of each code, ``0 .. n_clusters - 1``; ``-1`` is noise.
    probabilities : ndarray of float, shape (N,)
        HDBSCAN's membership strength of each code in its cluster (0 for noise).
    min_cluster_size : int
        The value used (after defaults).
    statistic : float
        The 2-means cluster index of :func:`significance` (small: two groups); NaN when not
        tested (fewer than two clusters, or a clustering saved before polyprune 0.3).
    p_value : float
        The test's p-value (NaN when not tested).
    alpha : float
        The significance level of :attr:`is_polysemantic` (default 0.05).
    """

    labels: NDArray[np.int64]
    probabilities: NDArray[np.float64]
    min_cluster_size: int
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    statistic: float = math.nan
    p_value: float = math.nan
    alpha: float = ALPHA

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN as None); :meth:`from_dict` reads it back."""
        return {
            "labels": self.labels.tolist(), "probabilities": self.probabilities.tolist(),
            "min_cluster_size": self.min_cluster_size, "params": dict(self.params),
            "statistic": nan_to_none(self.statistic), "p_value": nan_to_none(self.p_value),
            "alpha": self.alpha,
        }  # fmt: skip

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> Clustering:
        """The clustering of :meth:`to_dict` (one saved before 0.3, without a test, has
        ``p_value`` NaN)."""
        labels = _saved_labels(data["labels"])
        probabilities = valid.vector("probabilities", data["probabilities"]).double().numpy()
        if (
            probabilities.shape != labels.shape
            or not ((probabilities >= 0) & (probabilities <= 1)).all()
        ):
            raise ValueError(
                f"probabilities must be {labels.size} values in [0, 1], one per label, got "
                f"{probabilities.size} in [{probabilities.min():g}, {probabilities.max():g}]"
            )
        p_value = none_to_nan(data.get("p_value"))
        if not (math.isnan(p_value) or 0 <= p_value <= 1):
            raise ValueError(f"p_value must be in [0, 1] or None, got {p_value!r}")
        return cls(
            labels, probabilities.astype(np.float64),
            valid.integer("min_cluster_size", data["min_cluster_size"], low=2),
            dict(data.get("params", {})), none_to_nan(data.get("statistic")), p_value,
            valid.fraction("alpha", data.get("alpha", ALPHA), one=False),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Clustering({self._verdict()}, min_cluster_size={self.min_cluster_size})"

    def _verdict(self) -> str:
        what = "polysemantic" if self.is_polysemantic else "not polysemantic"
        return (
            f"{what}: {self.n_clusters} cluster(s) {self.sizes} of {self.labels.size} codes, "
            f"noise {self.noise_fraction:.0%}, {self._evidence()}"
        )

    def _evidence(self) -> str:
        """The test's result in words: ``"p = 0.0031 < 0.05"``, or ``"not tested"``."""
        if math.isnan(self.p_value):
            return "not tested"
        return f"p = {self.p_value:.2g} {'<' if self.p_value < self.alpha else '≥'} {self.alpha:g}"

    def _repr_html_(self) -> str:
        rows: list[dict[str, Any]] = [{"cluster": c, "size": n} for c, n in enumerate(self.sizes)]
        rows.append({"cluster": "noise", "size": int((self.labels < 0).sum())})
        columns: list[_glance.Column] = [("cluster", "cluster", str), ("size", "codes", str)]
        return _glance.card("Clustering", self._verdict(), _glance.html_table(rows, columns))

    @property
    def n_clusters(self) -> int:
        """Number of clusters (noise excluded)."""
        return int(self.labels.max()) + 1 if self.labels.size and self.labels.max() >= 0 else 0

    @property
    def noise_fraction(self) -> float:
        """Fraction of codes labelled noise."""
        return float((self.labels < 0).mean()) if self.labels.size else 0.0

    @property
    def is_polysemantic(self) -> bool:
        """Two or more clusters **and** ``p_value < alpha`` (the paper asked for two clusters
        only). False when the test was not run (``p_value`` NaN)."""
        return self.n_clusters >= 2 and self.p_value < self.alpha

    @property
    def sizes(self) -> list[int]:
        """Number of codes in each cluster, by label."""
        return [int((self.labels == c).sum()) for c in range(self.n_clusters)]

    def majority(self, truth: Sequence[Any]) -> dict[int, tuple[Any, float]]:
        """The most common true label of each cluster and its share of the cluster.

        ``truth`` gives the known label (a concept, a class) of every clustered item, in the
        order of :attr:`labels`. Noise is left out.

        Examples
        --------
        >>> import numpy as np, polyprune as pp
        >>> c = pp.results.Clustering(np.array([0, 0, 1, 1, 1, -1]), np.ones(6), 2)
        >>> c.majority(["dog", "dog", "stripe", "stripe", "dog", "dog"])
        {0: ('dog', 1.0), 1: ('stripe', 0.6666666666666666)}
        """
        valid.instance(
            "truth", truth, (Sequence, np.ndarray, Tensor), "a sequence of labels, one per item"
        )
        if len(truth) != self.labels.size:
            raise ValueError(
                f"truth has {len(truth)} labels for {self.labels.size} clustered items"
            )
        out: dict[int, tuple[Any, float]] = {}
        for c in range(self.n_clusters):
            counts = Counter(t for t, label in zip(truth, self.labels, strict=True) if label == c)
            top, n = counts.most_common(1)[0]
            out[c] = (top, n / sum(counts.values()))
        return out

    def members(self, label: int) -> Tensor:
        """Boolean tensor: which codes belong to cluster ``label``."""
        label = valid.integer("label", label, low=0, high=self.n_clusters - 1)
        return torch.from_numpy(self.labels == label)


def default_min_cluster_size(n: int) -> int:
    """5 % of the codes, at least 5: the paper's 50 for its top 1,000."""
    return max(5, round(0.05 * n))


def _saved_labels(value: object) -> NDArray[np.int64]:
    """Saved cluster labels: integers, ``-1`` (noise) or ``0 .. n - 1`` with every cluster
    non-empty, as HDBSCAN gives them (a float, a gap or a label below -1 is refused, never
    rounded)."""
    t = valid.vector("labels", value, what="integer labels")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"labels must be integers (-1 for noise), got {t.dtype}")
    labels = t.to(torch.int64).numpy()
    present = np.unique(labels[labels >= 0])
    if labels.min() < -1 or not np.array_equal(present, np.arange(present.size)):
        raise ValueError(
            "labels must be -1 (noise) or 0 .. n_clusters - 1 with every cluster present, "
            f"got the values {np.unique(labels).tolist()[:10]}"
        )
    return labels


def cluster(
    codes: Tensor | NDArray[Any],
    min_cluster_size: int | None = None,
    *,
    standardize: bool = False,
    min_samples: int | None = None,
    cluster_selection_method: str = "eom",
    n_components: int | None = None,
    values: Tensor | NDArray[Any] | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
) -> Clustering:
    """Cluster ``codes`` (N, C) with HDBSCAN (the ``hdbscan`` package, as the paper did), and
    test the cluster structure for significance when there are two clusters or more.

    Parameters
    ----------
    codes : Tensor or ndarray, shape (N, C)
        One row per top activating input: the center activations of every channel of the layer.
    min_cluster_size : int, optional
        HDBSCAN's smallest cluster. Default: 5 % of N, at least 5 (the paper: 50 of 1,000).
    standardize : bool
        Z-score each channel first, so channels with large activations do not dominate the
        distances (constant channels are left at 0). Off by default, as in the paper: on the zoo's
        ground truth, raw codes matched the true concepts better (their scale carries signal).
    min_samples : int, optional
        HDBSCAN's density smoothing; ``None`` means ``min_cluster_size`` (HDBSCAN's default).
    cluster_selection_method : {"eom", "leaf"}
        HDBSCAN's cluster selection ("eom", its default, favours fewer larger clusters).
    n_components : int, optional
        Project onto this many principal components before clustering (None: no projection).
    values : Tensor or ndarray, shape (N,), optional
        The unit's activation on each code's input. Given (``study`` and ``scan`` give the
        top-k values), the test looks at the codes of the strongest half only; see
        :func:`significance`.
    alpha : float
        Significance level of :attr:`Clustering.is_polysemantic` (default 0.05).
    seed : int
        Seeds the test's null draws: the same seed gives the same p-value.

    Returns
    -------
    Clustering
        Labels, and the test's ``statistic`` and ``p_value`` (NaN with fewer than two clusters:
        not tested, not polysemantic).

    Raises
    ------
    ValueError
        Fewer than 10 codes, codes that are not 2-D, NaN/inf, a ``min_cluster_size`` < 2 or
        larger than N, ``values`` not of length N, ``alpha`` outside (0, 1).

    Examples
    --------
    >>> import numpy as np, polyprune as pp
    >>> rng = np.random.default_rng(0)
    >>> codes = np.concatenate([rng.normal(0, 1, (60, 8)), rng.normal(6, 1, (60, 8))])
    >>> result = pp.cluster(codes)
    >>> result.n_clusters, result.is_polysemantic, result.p_value < 0.001
    (2, True, True)
    """
    x, strength = checked(codes, values, MIN_CODES)
    alpha = valid.number("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)
    seed = valid.seed("seed", seed)
    n = x.shape[0]
    size = default_min_cluster_size(n) if min_cluster_size is None else min_cluster_size
    size = valid.integer("min_cluster_size", size, low=2, high=n, why=" (the number of codes)")
    check_hdbscan(n, "", standardize, min_samples, cluster_selection_method, n_components)
    if standardize:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if n_components is not None:
        if not 1 <= n_components <= min(x.shape):
            raise ValueError(f"n_components must be in [1, {min(x.shape)}], got {n_components}")
        with random_state_kept():  # as hdbscan's below
            from sklearn.decomposition import PCA

        x = PCA(n_components=n_components, random_state=0).fit_transform(x)
    with random_state_kept():  # its first import draws from Python's `random` (via rich)
        import hdbscan

    model = hdbscan.HDBSCAN(
        min_cluster_size=int(size),
        min_samples=min_samples,
        cluster_selection_method=cluster_selection_method,
    ).fit(x)
    params = {
        "standardize": standardize,
        "min_samples": min_samples,
        "cluster_selection_method": cluster_selection_method,
        "n_components": n_components,
    }
    labels = np.asarray(model.labels_, dtype=np.int64)
    statistic = p_value = math.nan
    if labels.max(initial=-1) >= 1:  # two clusters or more: test
        statistic, p_value, _ = sigclust(strongest(x, strength), seed)
    return Clustering(
        labels=labels,
        probabilities=np.asarray(model.probabilities_, dtype=np.float64),
        min_cluster_size=int(size),
        params=params,
        statistic=statistic,
        p_value=p_value,
        alpha=alpha,
    )


def significance(
    codes: Tensor | NDArray[Any],
    values: Tensor | NDArray[Any] | None = None,
    *,
    seed: int = 0,
    max_draws: int = MAX_DRAWS,
    method: str = "gaussian",
) -> tuple[float, float]:
    """Is there cluster structure in ``codes``? ``(statistic, p_value)`` of a SigClust test.

    SigClust (Liu, Hayes, Nobel & Marron 2008, JASA) asks whether the codes are better
    described by two groups than by **one Gaussian**.

    - **Statistic**: the 2-means cluster index, the within-cluster sum of squares of the best
      split into two groups over the total sum of squares (in [0, 1]; small means two groups).
      The split: cut at the mean along the leading principal axis, then k-means (2) iterations.
    - **Null**: the codes are one Gaussian, of any mean and covariance. The null draws are
      Gaussian codes with exactly the codes' own mean and sample covariance (a rotation test,
      Langsrud 2005: given those, Gaussian codes are a uniformly random rotation of each
      other), so nothing is estimated or thresholded and the test holds its level in any
      dimension, also with more channels than rows (SigClust thresholds the covariance's
      eigenvalues instead; on these codes that made the null too round).
    - **p-value**: the probability that Gaussian codes with the same mean and sample
      covariance have an index as small as these, from up to ``max_draws`` draws. Under the
      null it is uniform, so ``p < alpha`` calls one Gaussian "clustered" at rate alpha
      (measured in ``docs/verdicts.md`` on Gaussian clouds of 64 and 384 channels, 100 and
      1,000 rows). The draws stop early when the answer is clearly large (Besag & Clifford
      1991: after 10 null indices ≤ the codes', p = 10 / draws; the first batch is 10 draws,
      so a clear p = 1 costs 10); otherwise, below 10 / ``max_draws``, the p-value is the
      Gaussian tail of the null indices (SigClust's normal approximation), so p-values far
      below 1 / ``max_draws``, which Benjamini–Hochberg over many channels needs, are
      resolved. A small p says the codes are not one Gaussian (their best split into two
      groups is too good for one), not how many groups there are.
    - **values** (the unit's activation on each code's input): given, only the codes of the
      strongest half are tested. Measured on planted networks (``docs/verdicts.md``): a
      monosemantic detector's top-k also holds the best of the rest — inputs of other concepts,
      which do form clusters in the codes, at the low end of its top-k — while both meanings of
      a polysemantic unit reach its strongest activations.

    When not to trust it: few rows (little power); codes far from Gaussian though of one piece:
    a skewed or lumpy single cloud can be called, and a heavy-tailed one is tested
    conservatively (on multivariate t clouds, 5 degrees of freedom, fewer calls than alpha,
    most clearly with many rows: ``docs/verdicts.md``); a planted monosemantic detector's codes
    are only mildly heavier-tailed than one Gaussian, far from those t clouds (measured in
    ``docs/verdicts.md``, *what one meaning looks like*), yet a t cloud matched to that tail
    weight is tested conservatively too (fewer calls than alpha, ``docs/verdicts.md``). Nulls
    that adapt to heavy tails (an elliptical null: each code keeps its Mahalanobis radius,
    directions drawn at random; and others) called far more monosemantic planted detectors,
    and a statistic blind to the radii (spatial signs) calibrated t clouds but lost power, so
    the null is one Gaussian (``docs/verdicts.md``, *why the null stays one Gaussian*).
    Several clusters cannot be told from two (the test is of "one Gaussian", not of "how
    many"); and a tiny p-value says the structure is real, not that it is a second meaning:
    read the crops.
    Deterministic given ``seed`` on one machine.

    Parameters
    ----------
    codes : Tensor or ndarray, shape (N, C)
        At least 10 rows.
    values : Tensor or ndarray, shape (N,), optional
        The unit's activation per row: test the rows with the ⌈N/2⌉ largest values only.
    seed : int
        Seeds the null draws.
    max_draws : int
        The most null draws (≥ 20; default 200).
    method : {"gaussian", "minp"}
        ``"gaussian"`` (default): the test above. ``"minp"`` (experimental, not used by
        ``cluster``, ``scan`` or ``study``): one null for two statistics, the 2-means index and
        the 2-means index of the codes' spatial signs (rows centred at the mean, scaled to unit
        norm); the null draws are rotation draws with the covariance of the radially
        Gaussianized codes (each row's Mahalanobis radius mapped by rank onto the chi
        quantiles, 3 rounds), and ``p`` is the Monte Carlo p of the smaller of the two
        p-values, its null taken over the same draws (Westfall–Young min-p). It makes all
        ``max_draws`` draws (no early stop); below ``1 / (max_draws + 1)``, ``p`` is twice the
        smaller of the two statistics' Gaussian tails (Bonferroni). Not the default: measured
        on the benchmark's null clouds it leaves the 2–8 % band at some sizes where the default
        is in it (``docs/verdicts.md``, the candidates table).

    Returns
    -------
    statistic, p_value : float
        NaN both when all tested codes are equal.

    Examples
    --------
    >>> import numpy as np
    >>> from polyprune.clustering import significance
    >>> rng = np.random.default_rng(0)
    >>> one = rng.normal(0, 1, (200, 8))
    >>> two = np.concatenate([rng.normal(0, 1, (100, 8)), rng.normal(4, 1, (100, 8))])
    >>> significance(one)[1] > 0.05, significance(two)[1] < 1e-6
    (True, True)
    """
    x, strength = checked(codes, values, MIN_CODES)
    seed = valid.seed("seed", seed)
    max_draws = valid.integer("max_draws", max_draws, low=20)
    method = valid.choice("method", method, METHODS)
    statistic, p_value, _ = sigclust(strongest(x, strength), seed, max_draws, method=method)
    return statistic, p_value
