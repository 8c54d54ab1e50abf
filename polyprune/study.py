"""The paper's experiment end to end: top activations → clusters → one subnetwork per cluster and
method → evaluation, figures and a report.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ._cs.config import CSConfig
from ._unit_io import unit_activations
from .clustering import Clustering, cluster
from .evaluation import Evaluation, _evaluate, held_out_split
from .recording import TopActivations, top_activating
from .scoring._base import Scorer
from .subnetwork import Subnetwork, fit_subnetwork, resolve_method
from .targets import Unit

__all__ = ["StudyResult", "study"]


@dataclass
class StudyResult:
    """Everything :func:`study` found; :meth:`save` writes the report.

    Attributes
    ----------
    unit : Unit
        The unit studied (position in full-image map coordinates).
    top : TopActivations
        The top-k items, their codes and receptive-field crops.
    clustering : Clustering
        HDBSCAN on the codes; ``labels[i]`` belongs to ``top.indices[i]``.
    fit_index, held_index : Tensor
        Positions (into the top-k) used to fit the subnetworks and held out for evaluation.
    subnetworks : dict
        ``subnetworks[method][cluster]`` → :class:`Subnetwork`.
    evaluations : dict
        ``evaluations[method]`` → :class:`Evaluation`.
    activations : dict
        Panel title → the unit's activation on all top-k crops: ``"original"`` and one panel per
        method × cluster subnetwork (the paper's Figure 4).
    visualizations : dict
        Name → optimised images (with ``visualize=True``).
    timings : dict
        Seconds per stage.
    config : dict
        The settings of the run (JSON-ready).
    flags : list of str
        What makes the unit's results meaningless, if anything: ``"constant"`` when the unit
        takes one value on all its top-k images (a dead unit, typically 0 everywhere after a
        ReLU): its top-k are then arbitrary and nothing is fitted.
    """

    unit: Unit
    top: TopActivations
    clustering: Clustering
    fit_index: Tensor
    held_index: Tensor
    subnetworks: dict[str, dict[int, Subnetwork]] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    activations: dict[str, Tensor] = field(default_factory=dict)
    visualizations: dict[str, Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    @property
    def is_polysemantic(self) -> bool:
        """Two or more clusters among the top activations (never for a constant unit)."""
        return self.clustering.is_polysemantic and "constant" not in self.flags

    def rows(self) -> list[dict[str, Any]]:
        """One row per (method, cluster): kept fraction, separation before/after, r."""
        out = []
        for method, ev in self.evaluations.items():
            for label, c in ev.clusters.items():
                out.append({
                    "method": method, "cluster": label, "kept": c.kept_fraction,
                    "auroc_before": c.before.auroc, "auroc_after": c.after.auroc,
                    "auroc_held_out": c.after_held_out.auroc if c.after_held_out else None,
                    "dprime_after": c.after.dprime, "pearson_r": c.pearson_r,
                    "flags": list(c.flags),
                })  # fmt: skip
        return out

    def summary(self) -> str:
        """A plain-text table of :meth:`rows`, with the clustering on top."""
        c = self.clustering
        inputs = "top crops" if self.top.field is not None else "top images"
        verdict = "polysemantic" if self.is_polysemantic else "not polysemantic"
        if "constant" in self.flags:
            verdict += f" (the unit is constant, {float(self.top.values[0]):.4g}: a dead unit?)"
        head = (
            f"unit {self.unit.layer}[{self.unit.channel}] at {self.unit.position}: "
            f"{c.n_clusters} clusters {c.sizes} of {len(self.top)} {inputs} "
            f"(noise {c.noise_fraction:.0%}) → {verdict}"
        )
        lines = [head]
        if self.evaluations:
            lines.append(
                f"{'method':<10}{'cluster':>8}{'kept':>9}{'AUROC before':>14}"
                f"{'after':>8}{'held-out':>10}{'d′ after':>10}{'r':>7}"
            )
            for r in self.rows():
                held = "-" if r["auroc_held_out"] is None else f"{r['auroc_held_out']:.3f}"
                lines.append(
                    f"{r['method']:<10}{r['cluster']:>8}{r['kept']:>9.2%}{r['auroc_before']:>14.3f}"
                    f"{r['auroc_after']:>8.3f}{held:>10}{r['dprime_after']:>10.2f}"
                    f"{r['pearson_r']:>7.2f}"
                    + (f"  ⚠ {', '.join(r['flags'])} subnetwork" if r["flags"] else "")
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready results (no tensors but small index lists)."""
        c = self.clustering
        return {
            "unit": {"layer": self.unit.layer, "channel": self.unit.channel,
                     "position": self.unit.position},
            "k": len(self.top),
            "top_indices": self.top.indices.tolist(),
            "clustering": {"n_clusters": c.n_clusters, "sizes": c.sizes,
                           "noise_fraction": c.noise_fraction,
                           "is_polysemantic": c.is_polysemantic,
                           "min_cluster_size": c.min_cluster_size,
                           "labels": c.labels.tolist()},
            "rows": self.rows(),
            "evaluations": {m: e.to_dict() for m, e in self.evaluations.items()},
            "paper_kept_fraction": {
                m: {str(k): s.paper_kept_fraction for k, s in subs.items()}
                for m, subs in self.subnetworks.items()
            },
            "timings": self.timings,
            "config": self.config,
        }  # fmt: skip

    def save(self, directory: str | Path) -> Path:
        """Write ``results.json``, figures, ``report.md`` and ``report.html`` to ``directory``."""
        from ._report import write_report

        return write_report(self, Path(directory))


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[polyprune] {message}", file=sys.stderr, flush=True)


def study(
    model: nn.Module,
    unit: Unit,
    data: Tensor | Dataset[Any] | DataLoader[Any] | Iterable[Any],
    *,
    k: int = 1000,
    methods: Sequence[str | Scorer] = ("cs", "actgrad", "snip", "force"),
    keep: float = 0.05,
    granularity: str = "kernel",
    held_out: float = 0.2,
    crop: bool = True,
    batch_size: int = 64,
    workers: int = 0,
    min_cluster_size: int | None = None,
    cluster_options: Mapping[str, Any] | None = None,
    cs: CSConfig | None = None,
    visualize: bool = False,
    visualize_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> StudyResult:
    """Run the paper's pipeline on one unit.

    1. :func:`top_activating` streams ``data`` once and keeps the ``k`` best receptive-field
       crops with their layer codes; 2. :func:`cluster` groups the codes; 3. if the unit is
       polysemantic, each cluster's crops are split (``held_out`` fraction kept aside) and every
       method fits one :class:`Subnetwork` per cluster (members: the cluster, non-members: the
       other clusters, noise excluded); scorers keep ``keep``, CS finds its own kept fraction;
       4. :func:`evaluate` measures separation on fitted and held-out crops and overlaps;
       5. optionally :func:`visualize` the unit before and under each CS subnetwork.

    ``methods``: names from :func:`polyprune.subnetwork.methods` (``"cs"`` and the registered
    scorers: ``"actgrad"``, ``"snip"``, ``"force"``, ``"magnitude"``, ``"random"``, ...) or
    scorer instances; each cluster gets ``scorer.for_cluster(seed, label)`` (independent draws
    for Random). ``cs`` configures Continuous Sparsification (default ``CSConfig()``).
    ``crop``: cut the images to the unit's receptive field (whole images where no crop is
    needed or none can be derived; see :func:`top_activating`).
    """
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    if isinstance(methods, str):
        raise TypeError(
            f"methods must be a list of method names or scorers, got the string {methods!r}; "
            f"write methods=[{methods!r}]"
        )
    if cs is not None and not isinstance(cs, CSConfig):
        raise TypeError(f"cs must be a polyprune.CSConfig, got {type(cs).__name__}")
    named = [resolve_method(m, keep=keep, progress=progress) for m in methods]
    unit.validate(model)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _log(progress, f"1/4 top-{k} crops of {unit.layer}[{unit.channel}]")
    top = top_activating(
        model, unit, data, k, crop=crop, batch_size=batch_size, keep_inputs=True,
        workers=workers, progress=progress,
    )  # fmt: skip
    timings["top_activating"] = time.perf_counter() - t
    t = time.perf_counter()
    _log(progress, "2/4 clustering the layer codes (HDBSCAN)")
    clustering = cluster(top.codes, min_cluster_size, **dict(cluster_options or {}))
    timings["clustering"] = time.perf_counter() - t
    fit_index, held_index = held_out_split(clustering.labels, held_out, seed=seed)
    flags = ["constant"] if bool((top.values == top.values[0]).all()) else []
    result = StudyResult(
        unit=top.unit, top=top, clustering=clustering, fit_index=fit_index,
        held_index=held_index, timings=timings,
        config={"k": k, "keep": keep, "granularity": granularity, "held_out": held_out,
                "methods": [n for n, _ in named], "seed": seed, "crop": top.field is not None,
                "cs": (cs or CSConfig()).to_dict()},
        flags=flags,
    )  # fmt: skip
    if flags:
        warnings.warn(
            f"{unit} takes the same value ({float(top.values[0]):.4g}) on all its top-{k} images "
            "(a dead unit?): its top images are arbitrary, so nothing is fitted",
            UserWarning,
            stacklevel=2,
        )
        return result
    if not clustering.is_polysemantic:
        _log(progress, f"{clustering.n_clusters} cluster(s): not polysemantic, nothing to split")
        return result
    assert top.inputs is not None and top.input_unit is not None
    crops, seen_as = top.inputs, top.input_unit
    labels = torch.from_numpy(clustering.labels)
    fit_x, fit_y = crops[fit_index], labels[fit_index]
    clean = fit_y >= 0
    t = time.perf_counter()
    _log(progress, f"3/4 fitting {len(named)} method(s) × {clustering.n_clusters} clusters")
    for name, method in named:
        per_cluster: dict[int, Subnetwork] = {}
        for label in range(clustering.n_clusters):
            how = method if isinstance(method, str) else method.for_cluster(seed, label)
            own = None if isinstance(how, str) else how.keep  # an instance's keep wins
            per_cluster[label] = fit_subnetwork(
                model, seen_as, fit_x[clean], fit_y[clean] == label, how,
                keep=keep if own is None else own,
                granularity=granularity, config=cs, seed=seed, progress=progress,
            )  # fmt: skip
        result.subnetworks[name] = per_cluster
        timings[f"fit {name}"] = time.perf_counter() - t
        t = time.perf_counter()
    _log(progress, "4/4 evaluating separation, held-out and overlap")
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
        result.evaluations[name] = _evaluate(
            seen_as, {label: sub.masks for label, sub in subs.items()},
            [labels[i] for i in sets], [original[i] for i in sets], after, "clusters",
        )  # fmt: skip
    timings["evaluate"] = time.perf_counter() - t
    if visualize:
        t = time.perf_counter()
        result.visualizations = _visualize(model, seen_as, result, visualize_options, progress)
        timings["visualize"] = time.perf_counter() - t
    return result


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
