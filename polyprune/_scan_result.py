"""Private: :class:`Scan`, the result of :func:`polyprune.scan`, and how channels are scored."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _glance
from . import _validate as valid
from ._data import take
from ._dist import MergedTopK, is_main
from ._files import atomic_directory
from ._model import random_state_kept
from ._plan import Plan
from ._provenance import file_paths
from ._scan_report import SCAN_COLUMNS, read_scan, write_scan
from ._sigclust import q_values
from ._stats import degenerate
from .clustering import ALPHA, Clustering
from .recording import TopActivations
from .targets import Unit

__all__ = ["Scan", "channel_row"]


def channel_row(clustering: Clustering, codes: Tensor, values: Tensor) -> dict[str, Any]:
    """One channel's entry of the table: clusters, separation, balance, score and flags.

    See :class:`Scan` for the definitions.
    """
    labels = clustering.labels
    clustered = labels >= 0
    flags = degenerate(values)
    separation = balance = math.nan
    if clustering.n_clusters >= 2:
        with random_state_kept():  # sklearn's first import draws from Python's `random`
            from sklearn.metrics import silhouette_score

        x = codes.detach().cpu().double().numpy()[clustered]
        separation = float(silhouette_score(x, labels[clustered], metric="euclidean"))
        if not math.isfinite(separation):  # all clustered codes equal
            separation = 0.0
        largest = max(clustering.sizes) / int(clustered.sum())
        balance = min(1.0, 2.0 * (1.0 - largest))
    polysemantic = clustering.n_clusters >= 2 and not flags  # a candidate: q decides (Scan)
    score = max(separation, 0.0) * balance * (1.0 - clustering.noise_fraction)
    return {
        "clusters": clustering.n_clusters,
        "sizes": list(clustering.sizes),
        "noise": float(clustering.noise_fraction),
        "separation": separation,
        "balance": balance,
        "score": float(score) if polysemantic else 0.0,
        "max": float(values[0]),
        "flags": flags,
        "statistic": clustering.statistic if polysemantic else math.nan,
        "p_value": clustering.p_value if polysemantic else math.nan,
        "polysemantic": polysemantic,
    }


def verdicts(rows: Sequence[dict[str, Any]], alpha: float) -> None:
    """Benjamini–Hochberg over all the rows (untested ones count, as p = 1): each row gets its
    ``q_value`` (NaN when not tested) and ``polysemantic = candidate and q < alpha``. Rows
    without ``p_value`` (a scan saved before 0.3) keep their verdict, with ``q_value`` NaN."""
    if not rows or any("p_value" not in r for r in rows):
        for r in rows:
            r.setdefault("q_value", math.nan)
        return
    q = q_values(np.array([r["p_value"] for r in rows], dtype=np.float64))
    for r, value in zip(rows, q, strict=True):
        r["q_value"] = math.nan if math.isnan(value) else float(value)
        r["polysemantic"] = bool(r["clusters"] >= 2 and not r["flags"] and value < alpha)
        if not r["polysemantic"]:
            r["score"] = 0.0


def _rank_key(row: Mapping[str, Any], layers: Sequence[str]) -> tuple[Any, ...]:
    p = row.get("p_value", math.nan)
    return (
        bool(row["flags"]),
        not row["polysemantic"],
        math.inf if math.isnan(p) else p,
        -row["score"],
        layers.index(row["layer"]),
        row["channel"],
    )


class Scan:
    """Every channel of one or more layers, ranked by how polysemantic it is (:func:`scan`).

    **Score.** Each channel's top-k codes (the layer's center values on its top-k items) are
    clustered with HDBSCAN, as in :func:`~polyprune.study`. From the clustering:

    - ``clusters``, ``sizes``, ``noise``: HDBSCAN's clusters and the fraction of codes it left
      as noise;
    - ``separation``: the silhouette of the clustered codes (noise excluded; Euclidean, in the
      raw code space), in [-1, 1]: how far each code is from the nearest other cluster
      compared with its own;
    - ``balance``: ``min(1, 2·(1 − p))`` with ``p`` the largest cluster's share of the
      clustered codes: 1 when no cluster holds more than half of them, falling to 0 as one
      cluster takes everything (a second meaning seen on a handful of items counts less);
    - ``score = max(separation, 0) · balance · (1 − noise)`` for a *polysemantic* channel, 0
      otherwise;
    - ``statistic``, ``p_value``: the significance test of the strongest half of the channel's
      top-k codes (:func:`~polyprune.clustering.significance`), for channels with two or more
      clusters that are not flagged (NaN for the others: not tested);
    - ``q_value``: the Benjamini–Hochberg q-value over all scanned channels (untested ones
      count as p = 1): calling every channel with ``q < alpha`` polysemantic keeps the expected
      share of false calls among the calls at most ``alpha``.

    **Polysemantic**: two or more clusters, not flagged, and ``q_value < alpha``
    (``config["alpha"]``, default 0.05). A channel's :meth:`clustering` has its own p-value
    verdict (``p < alpha``), without the correction for the scan's many channels.

    ``flags``: ``"dead"`` (its maximum over the data is ≤ 0: dead after a ReLU) and
    ``"constant"`` (one value on all its top-k: the top-k are arbitrary). **Rank**, by the
    evidence: polysemantic channels by increasing p-value (then decreasing score), then the
    other channels the same way, then flagged ones (ties: layer order, then channel).
    ``mean`` is the channel's mean center activation over all items, ``max`` its largest.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> result = pp.scan(net, "0", torch.rand(40, 3, 8, 8), k=20, progress=False)
    >>> [row["channel"] for row in result.table()] == [u.channel for u in result.ranked()]
    True
    """

    def __init__(
        self,
        layers: Sequence[str],
        tops: Mapping[str, MergedTopK],
        clusterings: Mapping[tuple[str, int], Clustering],
        rows: Sequence[Mapping[str, Any]],
        plans: Mapping[str, Plan],
        seen_at: Mapping[str, tuple[int, int] | None],
        config: Mapping[str, Any],
        timings: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
        paths: Mapping[str, Sequence[str] | None] | None = None,
    ) -> None:
        self.layers: tuple[str, ...] = tuple(layers)
        #: Where the scan came from: start and end times, the model (class, size, a SHA-256 of
        #: its weights), the data, package versions, the machine and the number of processes.
        self.provenance: dict[str, Any] = dict(provenance or {})
        # per layer, the file of each kept item (row m: items[m]) for folder data, else None
        self._paths = {layer: None if p is None else list(p) for layer, p in (paths or {}).items()}
        self.config: dict[str, Any] = dict(config)
        #: Seconds: ``"pass"`` (reading the data and merging the ranks' top-k's) and
        #: ``"clustering"`` (all channels).
        self.timings: dict[str, float] = dict(timings or {})
        self._tops = dict(tops)
        self._clusterings = dict(clusterings)
        self._plans = dict(plans)
        self._seen_at = dict(seen_at)
        copies = [dict(r) for r in rows]
        verdicts(copies, float(self.config.get("alpha", ALPHA)))
        ordered = sorted(copies, key=lambda r: _rank_key(r, self.layers))
        for rank, row in enumerate(ordered, 1):
            row["rank"] = rank
            row["position"] = self._plans[row["layer"]].at
        self._rows = ordered

    @property
    def k(self) -> int:
        """How many top items each channel keeps."""
        return int(self.config["k"])

    @property
    def n_items(self) -> int:
        """How many items the data held."""
        return int(self.config["items"])

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def alpha(self) -> float:
        """The significance level of the verdict (q < alpha)."""
        return float(self.config.get("alpha", ALPHA))

    def __repr__(self) -> str:
        poly = sum(r["polysemantic"] for r in self._rows)
        return (
            f"Scan({', '.join(self.layers)}: {len(self)} channels, {poly} polysemantic "
            f"(BH q < {self.alpha:g}), top-{self.k} of {self.n_items} items)"
        )

    def _repr_html_(self) -> str:
        poly = sum(r["polysemantic"] for r in self._rows)
        verdict = (
            f"{poly} of {len(self)} channels polysemantic (BH q < {self.alpha:g}; top-{self.k} "
            f"of {self.n_items})"
        )
        rows = [{**r, "unit": f"{r['layer']}[{r['channel']}]"} for r in self._rows[:10]]
        table = _glance.html_table(rows, SCAN_COLUMNS, marked=lambda r: bool(r["polysemantic"]))
        more = f"<p><small>{len(self) - 10} more: .table()</small></p>" if len(self) > 10 else ""
        return _glance.card(f"Scan of {', '.join(self.layers)}", verdict, table, more)

    def to_pandas(self) -> Any:
        """:meth:`table` as a ``pandas.DataFrame`` (needs the extra ``polyprune[pandas]``)."""
        return _glance.to_pandas(self.table(), "Scan")

    def ranked(self, *, polysemantic: bool = False) -> list[Unit]:
        """The channels as :class:`~polyprune.Unit` s (map center position), most polysemantic
        first; only the polysemantic ones with ``polysemantic=True``."""
        only = valid.flag("polysemantic", polysemantic)
        return [
            Unit(r["layer"], r["channel"], r["position"])
            for r in self._rows
            if r["polysemantic"] or not only
        ]

    def table(self) -> list[dict[str, Any]]:
        """One row per channel, in rank order: ``rank, layer, channel, position, clusters,
        sizes, noise, separation, balance, score, mean, max, flags, statistic, p_value, q_value,
        polysemantic``."""
        keys = (
            "rank",
            "layer",
            "channel",
            "position",
            "clusters",
            "sizes",
            "noise",
            "separation",
            "balance",
            "score",
            "mean",
            "max",
            "flags",
            "statistic",
            "p_value",
            "q_value",
            "polysemantic",
        )
        return [{key: row.get(key, math.nan) for key in keys} for row in self._rows]

    def summary(self, n: int = 10) -> str:
        """A plain-text table of the ``n`` first channels."""
        n = valid.integer("n", n, low=0)
        lines = [
            repr(self),
            f"{'rank':>4} {'unit':<22}{'clusters':>9}{'noise':>7}"
            f"{'separation':>11}{'balance':>8}{'score':>7}{'p':>9}{'q':>9}{'max':>9}  verdict",
        ]
        for r in self._rows[:n]:
            sep = "-" if math.isnan(r["separation"]) else f"{r['separation']:.3f}"
            bal = "-" if math.isnan(r["balance"]) else f"{r['balance']:.2f}"
            unit = f"{r['layer']}[{r['channel']}]"
            verdict = ", ".join(r["flags"]) or ("polysemantic" if r["polysemantic"] else "")
            lines.append(
                f"{r['rank']:>4} {unit:<22}{r['clusters']:>9}{r['noise']:>7.0%}"
                f"{sep:>11}{bal:>8}{r['score']:>7.3f}{_glance.fmt(r.get('p_value'), '.2g'):>9}"
                f"{_glance.fmt(r.get('q_value'), '.2g'):>9}{r['max']:>9.3g}  {verdict}"
            )
        return "\n".join(lines)

    def _resolve(self, unit: int | Unit | tuple[str, int]) -> tuple[str, int]:
        if isinstance(unit, Unit):
            layer, channel = unit.layer, unit.channel
        elif isinstance(unit, tuple) and len(unit) == 2:
            layer, channel = unit
        elif isinstance(unit, int | np.integer) and not isinstance(unit, bool):
            if len(self.layers) > 1:
                raise ValueError(
                    f"unit: this scan covers {list(self.layers)}: name the channel as a "
                    "Unit or a (layer, channel) pair"
                )
            layer, channel = self.layers[0], int(unit)
        else:
            raise TypeError(
                f"unit must be a channel (int), a Unit or a (layer, channel) pair, got {unit!r}"
            )
        if layer not in self._tops:
            raise ValueError(f"unit: layer {layer!r} was not scanned; scanned: {list(self.layers)}")
        channels = int(self._tops[layer].values.shape[0])
        channel = valid.integer(
            "unit's channel", channel, low=0, high=channels - 1, why=f" (layer {layer!r})"
        )
        return layer, channel

    def clustering(self, unit: int | Unit | tuple[str, int]) -> Clustering:
        """The clustering of a channel's top-k codes (as :func:`~polyprune.cluster` gives)."""
        return self._clusterings[self._resolve(unit)]

    def top(self, unit: int | Unit | tuple[str, int], data: Any = None) -> TopActivations:
        """A channel's :class:`~polyprune.results.TopActivations`, without another pass.

        ``values``, ``indices`` and ``codes`` come from the scan. The crops (``inputs``) are
        filled when ``data`` is given: it must be indexable — a tensor ``(N, C, H, W)`` or a
        map-style Dataset, the same data the scan read — and the ``k`` items are read by
        index and cut to the channel's receptive field (the scan's crop). Pass the result to
        :func:`~polyprune.study` (``study(model, unit, data, top=scan.top(unit, data))``) to
        skip its own pass. ``paths`` holds the items' files for folder data (an
        ``ImageFolder``), with or without ``data``: the scan keeps them.
        """
        layer, channel = self._resolve(unit)
        top, plan = self._tops[layer], self._plans[layer]
        indices, values = top.indices[channel].clone(), top.values[channel].clone()
        codes = top.payloads["codes"][top.rows[channel]]
        inputs = None
        if data is not None:
            images = take(data, indices)
            shape = tuple(self.config.get("input_shape") or images.shape[1:])
            if tuple(images.shape[1:]) != shape:
                raise ValueError(
                    f"data's images are {tuple(images.shape[1:])}, the scanned "
                    f"ones were {shape}: pass the data the scan read"
                )
            inputs = plan.cut(images)[0].clone()
        return TopActivations(
            Unit(layer, channel, plan.at),
            indices,
            values,
            codes,
            plan.field,
            inputs,
            Unit(layer, channel, self._seen_at[layer]),
            self._files(layer, channel, data, indices),
        )

    def _files(self, layer: str, channel: int, data: Any, indices: Tensor) -> list[str] | None:
        kept = self._paths.get(layer)
        if kept is not None:
            return [kept[int(r)] for r in self._tops[layer].rows[channel]]
        return None if data is None else file_paths(data, indices.tolist())

    def save(
        self, directory: str | Path, data: Any = None, *, crops: int = 4, overwrite: bool = False
    ) -> Path:
        """Write ``scan.csv``, ``scan.json`` (the table, the settings and the provenance),
        ``scan.pt`` (the top-k's, for :meth:`load`) and ``report.html`` with a figure of the
        score over the channels and, when ``data`` (indexable, as for :meth:`top`) is given,
        crop grids of the ``crops`` most polysemantic channels. Returns the path of ``report.html``.

        ``directory`` must be new or empty; an earlier scan saved there is replaced only with
        ``overwrite=True``, and anything else there (other files, a study, the current
        directory or one that holds it) is a ``ValueError`` (a ``FileExistsError`` too) before
        anything is written (``polyprune.json`` marks a scan's directory). The files are
        written into a temporary directory beside ``directory`` and renamed into place: a
        failure leaves an earlier report there whole. Distributed, only rank 0 writes
        (the others return the same path), so every rank may call it.
        """
        valid.path("directory", directory)
        valid.integer("crops", crops, low=0)
        out = Path(directory)
        if not is_main():
            return out / "report.html"
        with atomic_directory(out, "scan", overwrite=overwrite) as tmp:
            write_scan(self, tmp, data, crops)
        return out / "report.html"

    @classmethod
    def load(cls, directory: str | Path) -> Scan:
        """Read a scan written by :meth:`save` (everything but the crops: pass ``data`` to
        :meth:`top` again)."""
        valid.path("directory", directory)
        return cls(**read_scan(Path(directory)))

    def _state(self) -> dict[str, Any]:
        """Tensors for ``scan.pt`` (see ``_scan_report``)."""
        return {
            "tops": {
                layer: {
                    "values": t.values,
                    "indices": t.indices,
                    "items": t.items,
                    "rows": t.rows,
                    "codes": t.payloads["codes"],
                    "paths": self._paths.get(layer),
                }
                for layer, t in self._tops.items()
            },
            "labels": {
                f"{layer}/{c}": torch.from_numpy(cl.labels)
                for (layer, c), cl in self._clusterings.items()
            },
            "probabilities": {
                f"{layer}/{c}": torch.from_numpy(cl.probabilities)
                for (layer, c), cl in self._clusterings.items()
            },
        }
