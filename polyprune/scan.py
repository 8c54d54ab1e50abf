"""Scan whole layers for polysemantic units: one pass over the data records every channel.

:func:`scan` streams the data once, reads every channel of each layer at the map's center
(one receptive-field crop serves all channels of a layer), keeps every channel's top-k with its
codes, clusters each channel's codes exactly as :func:`~polyprune.study` does and ranks the
channels by how polysemantic they are (:class:`Scan`). Under ``torch.distributed`` the pass
and the clustering are split over the ranks and every rank returns the same :class:`Scan`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import _validate as valid
from ._cluster_options import MIN_CODES, channel_seed, check_options
from ._data import Images, data_size
from ._dist import is_distributed, is_main, run_jobs, same_everywhere
from ._graph.trace import check_layer
from ._progress import stage
from ._provenance import data_description, environment, file_paths, model_description, now
from ._scan_result import Scan, channel_row
from ._stream import stream
from .clustering import ALPHA, Clustering, cluster
from .targets import Unit

__all__ = ["Scan", "scan"]


def _check_args(
    model: nn.Module,
    layers: str | Sequence[str],
    k: int,
    min_cluster_size: int | None,
    cluster_options: Mapping[str, Any] | None,
) -> tuple[str, ...]:
    valid.model("model", model)
    names = valid.names("layers", layers)
    for name in names:
        check_layer(model, name, "layers")
    valid.integer("k", k, low=MIN_CODES, why=" (the codes are clustered)")
    check_options(min_cluster_size, k, cluster_options)
    return names


def scan(
    model: nn.Module,
    layers: str | Sequence[str],
    data: Tensor | Dataset[Any] | DataLoader[Any] | Iterable[Any],
    *,
    k: int = 1000,
    crop: bool = True,
    batch_size: int = 64,
    workers: int = 0,
    min_cluster_size: int | None = None,
    cluster_options: Mapping[str, Any] | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
    progress: bool = True,
) -> Scan:
    """Find the polysemantic channels of whole layers in one pass over ``data``.

    1. **One pass.** Every batch is cut to the receptive field of the map's center unit
       (``crop=True``; one crop serves every channel of a layer, since they share that
       position, and it is exact: the activations equal the full image's), run up to the
       layer, and the layer's center values (all ``C`` channels) are merged into a running
       top-``k`` per channel, keeping each kept item's code vector once (memory
       ``O(C·k)`` values plus one code row per distinct kept item, never ``O(N·C·H·W)``).
       Several layers share the pass: the data is read once, and layers whose crops are the
       same share one forward. Where no exact field can be derived, whole images are used,
       with a warning (as in :func:`~polyprune.top_activating`).
    2. **Clusters.** Each channel's top-``k`` codes are clustered with
       :func:`~polyprune.cluster` (``min_cluster_size`` and ``cluster_options`` as in
       :func:`~polyprune.study`), so channel ``c`` gets exactly what
       ``cluster(top.codes, values=top.values)`` gives for
       ``top = top_activating(model, Unit(layer, c), data, k)``, with its significance test
       (:func:`~polyprune.clustering.significance`, seeded by ``seed`` and the channel).
    3. **Verdict and ranking.** Benjamini–Hochberg over the scanned channels: a channel is
       polysemantic when it has two or more clusters and its q-value is below ``alpha``
       (default 0.05). See :class:`Scan` for the table: polysemantic channels first, by
       p-value; then the others; dead or constant channels last.

    ``data`` is anything :mod:`polyprune` accepts as images. The model runs in eval mode
    without gradients and is left as found. Under ``torch.distributed`` (``torchrun``) every
    rank reads its share of the data and clusters its share of the channels; every rank gets
    the same :class:`Scan` (equal to one process's wherever activations differ by more than
    float rounding), and a failure on one rank raises on all. Progress on rank 0 only.

    Examples
    --------
    >>> import polyprune as pp
    >>> from polyprune import zoo
    >>> model, _ = zoo.planted_network()
    >>> images, _ = zoo.concept_images(600, size=zoo.PLANTED_SIZE, seed=1)
    >>> result = pp.scan(model, "features.6", images, k=120, progress=False)
    >>> result.ranked()[0] == pp.Unit(*zoo.PLANTED_TARGET, position=(3, 3))
    True
    >>> top = result.top(0)  # no second pass: values, indices and codes of channel 0
    >>> len(top), tuple(top.codes.shape)
    (120, (120, 5))
    """
    valid.options("cluster_options", cluster_options)
    same_everywhere(
        "scan", layers=layers, k=k, crop=crop, batch_size=batch_size,
        min_cluster_size=min_cluster_size, alpha=alpha, seed=seed,
        cluster_options=sorted((cluster_options or {}).items()), data=data_size(data),
    )  # fmt: skip
    names = _check_args(model, layers, k, min_cluster_size, cluster_options)
    alpha = valid.number("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)
    seed = valid.seed("seed", seed)
    options = dict(cluster_options or {})
    images = Images(data, batch_size=batch_size, workers=workers, shard=True)
    provenance = {"started": now(), "model": model_description(model),
                  "data": data_description(data, images.length), **environment()}  # fmt: skip
    show = progress and is_main()
    start = time.perf_counter()
    found = stream(model, [Unit(name, 0) for name in names], images, k, crop=crop,
                  every_channel=True, progress=progress, what="scan",
                  desc=f"scan {', '.join(names)}")  # fmt: skip
    merged, seen, sums = found.tops, found.seen, found.sums
    timings = {"pass": time.perf_counter() - start}
    start = time.perf_counter()
    jobs = [(name, c) for name in names for c in range(merged[name].values.shape[0])]
    label = "clustering" + (f" (rank 0's share of {len(jobs)})" if is_distributed() else "")
    with stage(label, None if is_distributed() else len(jobs), unit="channel", show=show) as bar:

        def one(job: tuple[str, int]) -> tuple[Clustering, dict[str, Any]]:
            name, channel = job
            codes = merged[name].payload("codes")[channel]
            values = merged[name].values[channel]
            clustering = cluster(
                codes,
                min_cluster_size,
                values=values,
                alpha=alpha,
                seed=channel_seed(seed, channel),
                **options,
            )
            return clustering, channel_row(clustering, codes, values)

        done = run_jobs(
            jobs, one, what="scan clustering", progress=lambda _done, mine: bar.update(total=mine)
        )
    timings["clustering"] = time.perf_counter() - start
    clusterings = {job: c for job, (c, _) in zip(jobs, done, strict=True)}
    rows = []
    for (name, channel), (_, row) in zip(jobs, done, strict=True):
        rows.append(
            {"layer": name, "channel": channel, **row, "mean": float(sums[name][channel]) / seen}
        )
    config = {
        "k": k,
        "crop": crop,
        "batch_size": batch_size,
        "min_cluster_size": min_cluster_size,
        "cluster_options": options,
        "alpha": alpha,
        "seed": seed,
        "items": seen,
        "input_shape": list(found.shape),
    }
    provenance["finished"] = now()
    paths = {name: file_paths(data, merged[name].items.tolist()) for name in names}
    return Scan(
        names,
        merged,
        clusterings,
        rows,
        found.plans,
        found.seen_at,
        config,
        timings,
        provenance,
        paths,
    )
