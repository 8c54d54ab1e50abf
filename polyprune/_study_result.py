"""Private (pipeline): :class:`StudyResult`, what :func:`polyprune.study` returns, and how it is
written to a directory and read back.

``study.pt`` holds everything needed to inspect the study without the model or the data, as
plain containers of tensors, strings and numbers (``torch.load(weights_only=True)``): the top-k
(indices, values, codes, file paths, the field), a few crops per cluster, the clustering, the
split, every subnetwork (masks, CS history and logits), the evaluations, the unit's activation
on every top-k image under the original network and every subnetwork, the visualizations, the
settings, timings and provenance. ``masks/`` has each subnetwork's masks as a file of its own
(``Masks.load``); ``results.json`` the numbers for people and other tools.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import _validate as valid
from ._dist import is_main
from ._files import atomic_directory, load_saved
from ._glance import to_pandas
from ._report import clean, write_report
from ._study_view import display_crops, study_html, study_repr
from .clustering import Clustering
from .evaluation import Evaluation
from .recording import TopActivations
from .subnetwork import Subnetwork
from .targets import Unit

__all__ = ["FORMAT", "StudyResult", "read_study", "write_study"]

FORMAT = "polyprune.study/1"


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
        What makes the unit's results meaningless, if anything, decided as :func:`scan` does:
        ``"dead"`` when the unit is never positive on the data (its maximum is ≤ 0: dead after a
        ReLU), ``"constant"`` when it takes one value on all its top-k images. A flagged unit is
        never polysemantic and nothing is fitted for it.
    provenance : dict
        What produced the study: polyprune's and its dependencies' versions, the machine, the
        model (class, size, a SHA-256 of its state), the data (kind, folder, images read), the
        seed, start and end times (JSON-ready). The command line adds the weights file and its
        SHA-256.
    crops : dict
        Cluster label → a few of its crops, best first: what a loaded study keeps of
        ``top.inputs`` (which :meth:`load` leaves out) for its report.
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
    provenance: dict[str, Any] = field(default_factory=dict)
    crops: dict[int, Tensor] = field(default_factory=dict)

    @property
    def is_polysemantic(self) -> bool:
        """Two or more clusters among the top activations (never for a dead or constant unit)."""
        return self.clustering.is_polysemantic and not self.flags

    def rows(self) -> list[dict[str, Any]]:
        """One row per (method, cluster): kept fraction, separation before/after, faithfulness.

        Faithfulness (see :class:`~polyprune.evaluation.ClusterEvaluation`): ``pearson_r``,
        ``rel_error`` (‖a_sub − a‖/‖a‖) and ``act_kept`` (mean(a_sub)/mean(a)) on the cluster's
        fitted crops, and the same on its held-out crops (``*_held_out``, ``None`` without);
        ``n_held_out`` the cluster's held-out crops.
        """
        return [{"method": m, **row} for m, ev in self.evaluations.items() for row in ev.rows()]

    def __repr__(self) -> str:
        return study_repr(self)

    def _repr_html_(self) -> str:
        return study_html(self)

    def to_pandas(self) -> Any:
        """:meth:`rows` as a ``pandas.DataFrame`` (needs the extra ``polyprune[pandas]``)."""
        return to_pandas(self.rows(), "StudyResult")

    def summary(self) -> str:
        """A plain-text table of :meth:`rows`, with the clustering on top."""
        c = self.clustering
        inputs = "top crops" if self.top.field is not None else "top images"
        verdict = "polysemantic" if self.is_polysemantic else "not polysemantic"
        verdict += f" ({c._evidence()})"
        if self.flags:
            verdict += (
                f" (the unit is {' and '.join(self.flags)}, max {float(self.top.values.max()):.4g}"
                ": nothing fitted)"
            )
        head = (
            f"unit {self.unit.layer}[{self.unit.channel}] at {self.unit.position}: "
            f"{c.n_clusters} clusters {c.sizes} of {len(self.top)} {inputs} "
            f"(noise {c.noise_fraction:.0%}) → {verdict}"
        )
        lines = [head]
        if self.evaluations:
            rows = self.rows()
            held_out = any(r["auroc_held_out"] is not None for r in rows)
            where = "held-out" if held_out else "fitted"
            lines.append(
                f"{'':<27}{'separation (AUROC)':^26}{'':>10}  faithfulness ({where} crops)"
            )
            lines.append(
                f"{'method':<10}{'cluster':>8}{'kept':>9}{'before':>8}{'after':>8}"
                f"{'held-out':>10}{'d′ after':>10}{'r':>7}{'rel.err':>9}{'act.kept':>10}"
            )
            for r in rows:
                held = "-" if r["auroc_held_out"] is None else f"{r['auroc_held_out']:.3f}"
                sfx = "_held_out" if held_out and r["auroc_held_out"] is not None else ""
                faithful = "".join(
                    f"{_num(r[key + sfx]):>{width}}"
                    for key, width in (("pearson_r", 7), ("rel_error", 9), ("act_kept", 10))
                )
                lines.append(
                    f"{r['method']:<10}{r['cluster']:>8}{r['kept']:>9.2%}{r['auroc_before']:>8.3f}"
                    f"{r['auroc_after']:>8.3f}{held:>10}{r['dprime_after']:>10.2f}{faithful}"
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
                           "statistic": c.statistic, "p_value": c.p_value, "alpha": c.alpha,
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

    def save(
        self, directory: str | Path, *, crops_per_cluster: int = 16, overwrite: bool = False
    ) -> Path:
        """Write the study to ``directory``; return the path of its ``report.html``.

        ``study.pt`` keeps everything needed to inspect it later without the model or the data
        (:meth:`load`; read with ``weights_only=True``), ``masks/`` every subnetwork's masks
        (:meth:`Masks.load <polyprune.Masks.load>`), ``results.json`` the numbers, settings and
        provenance, and the report shows ``crops_per_cluster`` crops of each cluster beside
        the figures, and ``polyprune.json`` marks the directory as a study and lists its files.

        ``directory`` must be new or empty; an earlier study saved there is replaced only with
        ``overwrite=True`` (none of its files is left). Anything else — a folder with other
        files, a scan, the current directory or one that holds it — is a ``ValueError`` (a
        ``FileExistsError`` too) before anything is written. The write is atomic: the directory
        appears whole, and a failure leaves an earlier study there untouched. Distributed,
        only rank 0 writes (the others return the same path), so every rank may call it.

        Examples
        --------
        >>> import tempfile, polyprune as pp
        >>> model, _ = pp.zoo.planted_network()
        >>> images, _ = pp.zoo.concept_images(300, size=32, seed=1)
        >>> result = pp.study(model, pp.Unit("features.6", 0), images, k=60, methods=["snip"],
        ...                   progress=False)
        >>> folder = tempfile.mkdtemp()
        >>> _ = result.save(folder)
        >>> again = pp.results.StudyResult.load(folder)
        >>> again.summary() == result.summary()
        True
        """
        valid.path("directory", directory)
        valid.integer("crops_per_cluster", crops_per_cluster, low=0)
        if not is_main():
            return Path(directory) / "report.html"
        with atomic_directory(directory, "study", overwrite=overwrite) as tmp:
            write_study(self, tmp, crops_per_cluster)
        return Path(directory) / "report.html"

    @classmethod
    def load(cls, directory: str | Path) -> StudyResult:
        """The study :meth:`save` wrote to ``directory`` (``weights_only`` safe); its report can
        be written again with :meth:`save` (or ``polyprune report DIR``)."""
        valid.path("directory", directory)
        return read_study(directory)


def _num(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _state(result: StudyResult, per_cluster: int) -> dict[str, Any]:
    shown = display_crops(result, per_cluster)
    crops: dict[str, Tensor] = {}
    if shown is not None:
        images, labels = shown
        for label in sorted(set(labels)):
            crops[str(label)] = images[[i for i, y in enumerate(labels) if y == label]].clone()
    return {
        "format": FORMAT,
        "unit": result.unit.to_dict(),
        "top": result.top.to_dict(inputs=False),
        "crops": crops,
        "clustering": result.clustering.to_dict(),
        "fit_index": result.fit_index, "held_index": result.held_index,
        "subnetworks": {m: {str(c): s.to_dict() for c, s in subs.items()}
                        for m, subs in result.subnetworks.items()},
        "evaluations": {m: e.to_dict() for m, e in result.evaluations.items()},
        "activations": dict(result.activations),
        "visualizations": dict(result.visualizations),
        "timings": dict(result.timings), "config": result.config, "flags": list(result.flags),
        "provenance": result.provenance,
    }  # fmt: skip


def write_study(result: StudyResult, out: Path, per_cluster: int) -> Path:
    """Write ``study.pt``, ``masks/``, ``results.json`` and the report into ``out`` (new)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(_state(result, per_cluster), out / "study.pt")
    if result.subnetworks:
        (out / "masks").mkdir()
        for method, subs in result.subnetworks.items():
            for label, sub in subs.items():
                sub.masks.save(out / "masks" / f"{method}-cluster{label}.pt")
    data = result.to_dict()
    data["provenance"] = result.provenance
    data["top_paths"] = result.top.paths
    (out / "results.json").write_text(json.dumps(clean(data), indent=2))
    return write_report(result, out, per_cluster)


def read_study(directory: str | os.PathLike[str]) -> StudyResult:
    """The study saved in ``directory`` (``study.pt``), read with ``weights_only=True``."""
    path = Path(directory) / "study.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no saved study in {os.fspath(directory)!r} (no study.pt)")
    state = load_saved(path, f"study ({FORMAT})", FORMAT)
    try:
        return StudyResult(
            unit=Unit.from_dict(state["unit"]),
            top=TopActivations.from_dict(state["top"]),
            clustering=Clustering.from_dict(state["clustering"]),
            fit_index=state["fit_index"], held_index=state["held_index"],
            subnetworks={m: {int(c): Subnetwork.from_dict(s) for c, s in subs.items()}
                         for m, subs in state["subnetworks"].items()},
            evaluations={m: Evaluation.from_dict(e) for m, e in state["evaluations"].items()},
            activations=dict(state["activations"]),
            visualizations=dict(state["visualizations"]),
            timings=dict(state["timings"]), config=dict(state["config"]),
            flags=list(state["flags"]), provenance=dict(state["provenance"]),
            crops={int(label): x for label, x in state["crops"].items()},
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} is a damaged polyprune study: {exc}") from exc
