"""Private (pipeline): a StudyResult at a glance — its verdict, clusters and best subnetworks as a
few lines of text (``repr``) or a small HTML card (notebooks), shared with the report."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from . import _glance as g

if TYPE_CHECKING:
    from ._study_result import StudyResult

__all__ = [
    "ROW_COLUMNS",
    "best_text",
    "clusters",
    "display_crops",
    "flagged_rows",
    "study_html",
    "study_repr",
    "verdict",
]


def display_crops(result: StudyResult, per_cluster: int) -> tuple[Tensor, list[int]] | None:
    """Up to ``per_cluster`` inputs of each cluster (noise too), best first, with their labels;
    None when there is nothing to show."""
    if per_cluster == 0:
        return None
    if result.top.inputs is None:
        if not result.crops:
            return None
        labels = [label for label, x in result.crops.items() for _ in range(len(x[:per_cluster]))]
        return torch.cat([x[:per_cluster] for x in result.crops.values()]), labels
    y = result.clustering.labels
    picked = [
        int(i)
        for label in sorted(set(y.tolist()))
        for i in np.flatnonzero(y == label)[:per_cluster]
    ]
    return result.top.inputs[picked], [int(y[i]) for i in picked]


def _pct(value: Any) -> str:
    return g.fmt(value, ".1%")


def _num(value: Any) -> str:
    return g.fmt(value, ".2f")


ROW_COLUMNS: list[g.Column] = [
    ("method", "method", str),
    ("cluster", "cluster", str),
    ("kept", "kept", _pct),
    ("auroc_before", "AUROC before", _num),
    ("auroc_after", "AUROC after", _num),
    ("auroc_held_out", "held-out", _num),
    ("dprime_after", "d′ after", _num),
    ("pearson_r", "r", _num),
    ("rel_error", "rel.err", _num),
    ("act_kept", "act.kept", _num),
    ("shown_flags", "flags", str),
]
"""The columns of a study's table of subnetworks (faithfulness on the fitted images)."""


def verdict(result: StudyResult) -> str:
    """``"polysemantic: 2 clusters of 300 top crops"`` and why, in one line."""
    c = result.clustering
    inputs = "top crops" if result.top.field is not None else "top images"
    if result.flags:
        return (
            f"not polysemantic: the unit is {' and '.join(result.flags)} (max "
            f"{float(result.top.values.max()):.4g}), nothing fitted"
        )
    what = "polysemantic" if result.is_polysemantic else "not polysemantic"
    sizes = ", ".join(str(n) for n in c.sizes)
    return (
        f"{what}: {c.n_clusters} cluster{'s' if c.n_clusters != 1 else ''} ({sizes}) of "
        f"{len(result.top)} {inputs}, noise {c.noise_fraction:.0%}, {c._evidence()}"
    )


def flagged_rows(result: StudyResult) -> list[dict[str, Any]]:
    """:meth:`StudyResult.rows` with ``shown_flags`` (every :data:`~polyprune._glance.FLAGS`
    entry that applies) and ``best`` (the cluster's best subnetwork by
    :data:`~polyprune._glance.BEST_RULE`)."""
    rows = result.rows()
    best = {id(r) for r in g.best_rows(rows).values()}
    return [{**r, "shown_flags": ", ".join(g.row_flags(r)), "best": id(r) in best} for r in rows]


def clusters(result: StudyResult) -> list[dict[str, Any]]:
    """Per cluster (noise last): ``cluster``, ``size``, ``classes`` (image folders, when the data
    was a folder) and ``best`` (the best subnetwork's row, or None)."""
    c = result.clustering
    classes = g.composition(result.top.paths, c.labels)
    best = g.best_rows(result.rows())
    out = []
    for label in sorted({int(v) for v in c.labels}, key=lambda v: (v < 0, v)):
        out.append({
            "cluster": "noise" if label < 0 else label, "label": label,
            "size": int((c.labels == label).sum()),
            "classes": g.composition_text(classes[label]) if label in classes else "",
            "best": best.get(label),
        })  # fmt: skip
    return out


def best_text(row: Any) -> str:
    """``"snip (AUROC 0.98 held-out, kept 3.0%)"``: a cluster's best subnetwork, or why none."""
    if row is None:
        return "none without a flag"
    return (
        f"{row['method']} (AUROC {g.held_auroc(row):.2f} "
        f"{'held-out' if row['auroc_held_out'] is not None else 'fitted'}, kept "
        f"{row['kept']:.1%})"
    )


def study_repr(result: StudyResult) -> str:
    """A few lines: the unit and verdict, then one line per cluster."""
    lines = [f"StudyResult({result.unit}: {verdict(result)}"]
    for info in clusters(result):
        if info["label"] < 0:
            continue
        parts = [f"{info['size']} images"]
        if result.evaluations:
            parts.append(f"best: {best_text(info['best'])}")
        if info["classes"]:
            parts.append(info["classes"])
        lines.append(f"  cluster {info['cluster']}: " + "; ".join(parts))
    n = sum(len(subs) for subs in result.subnetworks.values())
    flagged = sum(bool(r["shown_flags"]) for r in flagged_rows(result))
    lines.append(f"  {n} subnetworks, {flagged} flagged; .summary(), .rows(), .save(DIR))")
    return "\n".join(lines)


def study_html(result: StudyResult) -> str:
    """The notebook view: verdict, the clusters (size, classes, thumbnails, best subnetwork) and
    the subnetworks' table with flags and the best of each cluster in bold."""
    shown = display_crops(result, 8)
    strips: dict[int, str] = {}
    if shown is not None:
        images, labels = shown
        for label in sorted(set(labels)):
            strips[label] = g.thumbnails(images[[i for i, y in enumerate(labels) if y == label]])
    table = [
        {**info, "best": best_text(info["best"]) if result.evaluations else "",
         "images": strips.get(info["label"], "")}
        for info in clusters(result)
    ]  # fmt: skip
    head = "<tr><th>cluster</th><th>images</th><th>classes</th><th>best subnetwork</th><th></th>"
    body = "".join(
        f"<tr><td>{info['cluster']}</td><td>{info['size']}</td>"
        f"<td>{html.escape(info['classes'])}</td><td>{html.escape(info['best'])}</td>"
        f"<td>{info['images']}</td></tr>"
        for info in table
    )
    parts = [f'<table class="pp">{head}</tr>{body}</table>']
    if result.evaluations:
        parts.append(
            g.html_table(flagged_rows(result), ROW_COLUMNS, marked=lambda r: bool(r["best"]))
        )
        parts.append(f"<p><small>{html.escape(g.BEST_RULE)}</small></p>")
    return g.card(f"StudyResult {result.unit}", verdict(result), *parts)
