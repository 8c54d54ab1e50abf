"""The paper's experiment end to end: top activations → clusters → one subnetwork per cluster and
method → evaluation, figures and a report.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import _validate as valid
from ._cluster_options import MIN_CODES, channel_seed, check_options
from ._cs.config import CSConfig
from ._data import data_size
from ._dist import is_distributed, is_main, run_jobs, same_everywhere
from ._masking import check_keep
from ._progress import say, stage
from ._provenance import data_description, environment, model_description, now
from ._stats import DEGENERATE, degenerate
from ._study_result import StudyResult
from ._unit_io import unit_activations
from .clustering import ALPHA, cluster
from .evaluation import evaluate_activations, held_out_split
from .methods import DEFAULT_KEEP, Method
from .recording import TopActivations, top_activating
from .sparsify import ContinuousSparsification
from .subnetwork import Subnetwork, fit_subnetwork, named_method, with_config
from .targets import Unit

__all__ = ["StudyResult", "study"]


def _finished(result: StudyResult) -> StudyResult:
    result.provenance["finished"] = now()
    return result


def study(
    model: nn.Module,
    unit: Unit,
    data: Tensor | Dataset[Any] | DataLoader[Any] | Iterable[Any],
    *,
    k: int = 1000,
    methods: Sequence[str | Method] = ("cs", "actgrad", "snip", "force"),
    keep: float | None = None,
    granularity: str = "kernel",
    held_out: float = 0.2,
    crop: bool = True,
    batch_size: int = 64,
    workers: int = 0,
    min_cluster_size: int | None = None,
    cluster_options: Mapping[str, Any] | None = None,
    alpha: float = ALPHA,
    config: CSConfig | None = None,
    visualize: bool = False,
    visualize_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    top: TopActivations | None = None,
    cs: CSConfig | None = None,
) -> StudyResult:
    """Run the paper's pipeline on one unit.

    1. :func:`top_activating` streams ``data`` once and keeps the ``k`` best receptive-field
       crops with their layer codes;
    2. :func:`cluster` groups the codes and tests the structure
       (:func:`~polyprune.clustering.significance` on the strongest half, seeded by ``seed``
       and the channel as in :func:`~polyprune.scan`, so both give one p-value);
    3. if the unit is polysemantic (two or more clusters, ``p < alpha``, default 0.05, and not
       dead or constant: the rule of :func:`~polyprune.scan`), each cluster's crops are split
       (``held_out`` fraction kept aside) and every method fits one :class:`Subnetwork` per
       cluster (members: the cluster, non-members: the other clusters, noise excluded); scorers
       keep ``keep``, CS finds its own kept fraction;
    4. :func:`evaluate` measures separation on fitted and held-out crops and overlaps;
    5. optionally :func:`visualize` the unit before and under each CS subnetwork.

    ``methods``: names from :func:`polyprune.subnetwork.methods` (``"cs"``, the registered
    scorers ``"actgrad"``, ``"snip"``, ``"force"``, ``"magnitude"``, ``"random"``, and any
    registered :class:`~polyprune.methods.Method`) or method instances; each cluster gets
    ``method.for_cluster(seed, label)`` (independent draws for Random). ``keep`` and ``config``
    follow :func:`fit_subnetwork`'s rule: the argument, else the instance's own, else the default
    (:data:`~polyprune.methods.DEFAULT_KEEP` = 0.05; ``CSConfig()``). ``config`` configures
    Continuous Sparsification (``cs=`` is its deprecated old name).
    ``crop``: cut the images to the unit's receptive field (whole images where no crop is
    needed or none can be derived; see :func:`top_activating`).

    ``top``: the unit's top activations computed already, with their crops (e.g.
    ``scan.top(unit, data)`` of a :func:`~polyprune.scan`, or ``top_activating(...,
    keep_inputs=True)``): step 1 is skipped, and ``k``, ``crop``, ``batch_size`` and
    ``workers`` are not used.

    Under ``torch.distributed`` (``torchrun``): step 1 shards ``data`` over the ranks (see
    :func:`top_activating`), the fits of step 3 (one per method and cluster) are spread over
    the ranks as independent jobs, each seeded by ``seed`` alone as in one process, and every
    rank returns the same result (masks identical to one process's). Every rank must call it;
    a failure on one rank raises on all; progress and :meth:`StudyResult.save` on rank 0 only.
    """
    valid.options("cluster_options", cluster_options)
    valid.options("visualize_options", visualize_options)
    same_everywhere(
        "study", unit=unit, k=k, methods=methods, keep=keep, granularity=granularity,
        held_out=held_out, crop=crop, batch_size=batch_size, min_cluster_size=min_cluster_size,
        cluster_options=sorted((cluster_options or {}).items()), alpha=alpha, config=config,
        cs=cs,
        visualize=visualize,
        visualize_options=sorted((visualize_options or {}).items()), seed=seed,
        top=_top_key(top), data=data_size(data),
    )  # fmt: skip
    valid.floating_model("model", model, finite=True)  # the subnetworks are fitted with gradients
    valid.instance("unit", unit, Unit, "a polyprune.Unit, e.g. Unit('features.10', 3)")
    if top is None:
        valid.integer("k", k, low=1)
    valid.fraction("held_out", held_out, one=False)
    valid.number("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)
    valid.seed("seed", seed)
    if isinstance(methods, str):
        raise TypeError(
            f"methods must be a list of method names or scorers, got the string {methods!r}; "
            f"write methods=[{methods!r}]"
        )
    what = "a list of method names or scorers"
    valid.instance("methods", methods, (Iterable,), what)
    config = _renamed_config(config, cs)
    if keep is not None:
        check_keep(keep)
    progress = progress and is_main()
    named = [named_method(f"methods[{i}]", m, progress) for i, m in enumerate(methods)]
    named = [(name, with_config(method, config)) for name, method in named]
    unit.validate(model)
    _check_top(top, unit)
    _check_top_is_this_models(model, top)
    options = check_options(min_cluster_size, k if top is None else len(top), cluster_options)
    started = now()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if top is None:
        say(f"1/4 top-{k} crops of {unit}", progress)
        top = top_activating(
            model, unit, data, k, crop=crop, batch_size=batch_size, keep_inputs=True,
            workers=workers, progress=progress,
        )  # fmt: skip
        timings["top_activating"] = time.perf_counter() - t
    else:
        k = len(top)
        say(f"1/4 top-{k} crops of {unit} given", progress)
    t = time.perf_counter()
    say("2/4 clustering the layer codes (HDBSCAN) and testing the structure", progress)
    clustering = cluster(
        top.codes,
        min_cluster_size,
        values=top.values,
        alpha=alpha,
        seed=channel_seed(seed, unit.channel),
        **options,
    )
    timings["clustering"] = time.perf_counter() - t
    noise = int((clustering.labels < 0).sum())
    say(f"clustering: {clustering.n_clusters} cluster(s), {noise} noise of {len(top)} images, "
        f"{timings['clustering']:.1f} s", progress)  # fmt: skip
    fit_index, held_index = held_out_split(clustering.labels, held_out, seed=seed)
    flags = degenerate(top.values)
    result = StudyResult(
        unit=top.unit, top=top, clustering=clustering, fit_index=fit_index,
        held_index=held_index, timings=timings,
        config={"k": k, "keep": DEFAULT_KEEP if keep is None else keep,
                "granularity": granularity, "held_out": held_out, "alpha": alpha,
                "methods": [n for n, _ in named], "seed": seed, "crop": top.field is not None,
                "cs": _cs_settings([m for _, m in named], config).to_dict()},
        flags=flags,
        provenance={"started": started, "seed": seed, "model": model_description(model),
                    "data": data_description(data), **environment()},
    )  # fmt: skip
    if flags:
        warnings.warn(
            f"unit {unit.layer}[{unit.channel}] is {' and '.join(flags)} (max "
            f"{float(top.values.max()):.4g} over its top-{k}; "
            f"{'; '.join(f'{f}: {DEGENERATE[f]}' for f in flags)}): it is not polysemantic, "
            "and nothing is fitted",
            UserWarning,
            stacklevel=2,
        )
        return _finished(result)
    if not clustering.is_polysemantic:
        say(
            f"{clustering.n_clusters} cluster(s), p = {clustering.p_value:.3g}: not "
            "polysemantic, nothing to split",
            progress,
        )
        return _finished(result)
    assert top.inputs is not None and top.input_unit is not None
    crops, seen_as = top.inputs, top.input_unit
    labels = torch.from_numpy(clustering.labels)
    fit_x, fit_y = crops[fit_index], labels[fit_index]
    clean = fit_y >= 0
    say(f"3/4 fitting {len(named)} method(s) × {clustering.n_clusters} clusters", progress)

    def fit(job: tuple[int, int]) -> tuple[Subnetwork, float]:
        # one (method, cluster): depends on the job alone (fit_subnetwork seeds from seed), so
        # any rank computes what one process does
        start = time.perf_counter()
        label = job[1]
        how = named[job[0]][1].for_cluster(seed, label)
        sub = fit_subnetwork(
            model, seen_as, fit_x[clean], fit_y[clean] == label, how, keep=keep,
            granularity=granularity, seed=seed, progress=progress,
        )  # fmt: skip
        return sub, time.perf_counter() - start

    jobs = [(m, label) for m in range(len(named)) for label in range(clustering.n_clusters)]
    shared = is_distributed()  # rank 0 counts its own share
    what = "fits" + (f" (rank 0's share of {len(jobs)})" if shared else "")
    with stage(what, None if shared else len(jobs), unit="job", show=progress) as bar:
        fitted = run_jobs(jobs, fit, what="fits", progress=lambda _, mine: bar.update(total=mine))
    for (m, label), (sub, seconds) in zip(jobs, fitted, strict=True):
        name = named[m][0]
        result.subnetworks.setdefault(name, {})[label] = sub
        timings[f"fit {name}"] = timings.get(f"fit {name}", 0.0) + seconds
    t = time.perf_counter()
    say("4/4 evaluating separation, held-out and overlap", progress)
    # every activation once, on all crops; evaluate's fitted and held-out sets are slices of it
    original = unit_activations(model, seen_as, crops, None, 256)
    result.activations = {"original": original}
    sets = (fit_index, held_index)
    for name, subs in result.subnetworks.items():
        after = {}
        for label, sub in subs.items():
            title = f"{name} → cluster {label} (kept {sub.kept_fraction:.1%})"
            acts = result.activations[title] = unit_activations(
                model, seen_as, crops, sub.masks, 256
            )
            after[label] = [acts[i] for i in sets]
        result.evaluations[name] = evaluate_activations(
            seen_as, {label: sub.masks for label, sub in subs.items()},
            [labels[i] for i in sets], [original[i] for i in sets], after, "clusters",
        )  # fmt: skip
    timings["evaluate"] = time.perf_counter() - t
    say(f"evaluation: {len(jobs)} subnetwork(s), {timings['evaluate']:.1f} s", progress)
    if visualize:
        t = time.perf_counter()
        result.visualizations = _visualize(model, seen_as, result, visualize_options, progress)
        timings["visualize"] = time.perf_counter() - t
    return _finished(result)


def _top_key(top: object) -> object:
    """What identifies a given ``top`` across ranks: its unit and items."""
    if isinstance(top, TopActivations):
        return repr(top.unit), top.indices.tolist()
    return None if top is None else type(top).__name__


def _renamed_config(config: CSConfig | None, cs: CSConfig | None) -> CSConfig | None:
    """``config``, or the deprecated ``cs`` (with a warning); checked to be a CSConfig."""
    if cs is not None:
        warnings.warn(
            "study(cs=...) is deprecated: the CS settings are config= (as in fit_subnetwork) "
            "or methods=[ContinuousSparsification(config)]",
            DeprecationWarning,
            stacklevel=3,
        )
        if config is not None:
            raise TypeError("give the CS settings once: config= (cs= is its deprecated name)")
        config = cs
    name = "config" if cs is None else "cs"
    return (
        None if config is None else valid.instance(name, config, CSConfig, "a polyprune.CSConfig")
    )


def _cs_settings(methods: Sequence[Method], config: CSConfig | None) -> CSConfig:
    """The CS settings of the run (recorded in the result): the first CS method's."""
    for method in methods:
        if isinstance(method, ContinuousSparsification):
            return method.settings
    return CSConfig() if config is None else config


def _check_top(top: TopActivations | None, unit: Unit) -> None:
    if top is None:
        return
    if not isinstance(top, TopActivations):
        raise TypeError(f"top must be a TopActivations (or None), got {type(top).__name__}")
    if (top.unit.layer, top.unit.channel) != (unit.layer, unit.channel):
        raise ValueError(
            f"top belongs to {top.unit.layer}[{top.unit.channel}], not to "
            f"{unit.layer}[{unit.channel}]"
        )
    if unit.position is not None and top.unit.position != unit.position:
        raise ValueError(f"top was recorded at position {top.unit.position}, not {unit.position}")
    if top.inputs is None or top.input_unit is None:
        raise ValueError(
            "top holds no inputs (crops) to fit on: use scan.top(unit, data) with the data, or "
            "top_activating(..., keep_inputs=True)"
        )
    if len(top) < MIN_CODES:
        raise ValueError(f"top holds {len(top)} items; at least {MIN_CODES} are needed to cluster")


def _check_top_is_this_models(model: nn.Module, top: TopActivations | None) -> None:
    """Refuse a ``top`` recorded on another model (or other weights): the unit's activation on
    a few of its crops (best, middle, last) must be the values it stores, up to float error."""
    if top is None:
        return
    assert top.inputs is not None and top.input_unit is not None  # _check_top
    picks = sorted({0, len(top) // 2, len(top) - 1})
    stored = top.values[picks].float().cpu()
    now = unit_activations(model, top.input_unit, top.inputs[picks], None, len(picks))
    scale = max(1.0, float(top.values.abs().max()))
    if not torch.allclose(now, stored, rtol=1e-2, atol=1e-2 * scale):
        raise ValueError(
            f"top does not belong to this model: {top.unit.layer}[{top.unit.channel}] gives "
            f"{now.tolist()} on its crops {picks}, where top stores {stored.tolist()}; record it "
            "again with this model (top_activating or scan) or pass the model it came from"
        )


def _visualize(
    model: nn.Module,
    unit: Unit,
    result: StudyResult,
    options: Mapping[str, Any] | None,
    progress: bool,
) -> dict[str, Tensor]:
    from .visualization import visualize

    assert result.top.inputs is not None
    opts: dict[str, Any] = {"size": tuple(result.top.inputs.shape[2:]), "progress": progress}
    opts.update(options or {})
    images = {"original": visualize(model, unit, **opts)}
    method = "cs" if "cs" in result.subnetworks else next(iter(result.subnetworks))
    for label, sub in result.subnetworks[method].items():
        images[f"{method} → cluster {label}"] = visualize(model, unit, masks=sub.masks, **opts)
    return images
