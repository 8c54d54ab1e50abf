"""Private (pipeline): the report of a StudyResult — figures, Markdown and HTML."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from . import plot

if TYPE_CHECKING:
    from ._study_result import StudyResult

__all__ = ["clean", "display_crops", "figures_html", "html_page", "write_report"]


def clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


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


def write_report(result: StudyResult, out: Path, per_cluster: int = 16) -> Path:
    """Write the figures, ``report.md`` and ``report.html`` under ``out``; return the HTML's
    path. ``per_cluster`` crops of each cluster are shown."""
    out.mkdir(parents=True, exist_ok=True)
    unit = result.unit
    name = f"{unit.layer}[{unit.channel}]"
    figures: list[tuple[str, str]] = []
    shown = display_crops(result, per_cluster)
    if shown is not None:
        what = "crops" if result.top.field is not None else "images"
        y = result.clustering.labels
        plot.crops(shown[0], np.asarray(shown[1]), out / "crops.png", per_cluster=per_cluster,
                   sizes={int(v): int((y == v).sum()) for v in np.unique(y)},
                   title=f"top-{len(result.top)} {what} of {name} by cluster")  # fmt: skip
        figures.append((f"Top activating {what}, one row per cluster", "crops.png"))
    if result.activations:
        plot.histograms(result.activations, result.clustering.labels, out / "histograms.png",
                        title=f"activations of {name} per cluster")  # fmt: skip
        figures.append(("Activations per cluster, original and each subnetwork", "histograms.png"))
    masks = {
        f"{m} → {c}": s.masks for m, subs in result.subnetworks.items() for c, s in subs.items()
    }
    if masks:
        plot.kept_per_layer(masks, out / "kept.png", title="kept fraction per layer")
        figures.append(("Kept fraction per layer", "kept.png"))
    if result.visualizations:
        plot.images(result.visualizations, out / "visualizations.png",
                    title=f"feature visualization of {name}")  # fmt: skip
        figures.append(
            ("Feature visualization before and under each subnetwork", "visualizations.png")
        )
    summary = result.summary()
    timings = "\n".join(f"- {k}: {v:.1f} s" for k, v in result.timings.items())
    md = [f"# polyprune study of {name}", "", "```", summary, "```", ""]
    md += [f"## {title}\n\n![{title}]({path})\n" for title, path in figures]
    md += ["## Timings", "", timings, "", "Full numbers: [results.json](results.json)", ""]
    (out / "report.md").write_text("\n".join(md))
    body = [
        f"<h1>polyprune study of {html.escape(name)}</h1>",
        f"<pre>{html.escape(summary)}</pre>",
    ]
    body += figures_html(figures)
    body += ["<h2>Timings</h2><pre>", html.escape(timings), "</pre>",
             '<p>Full numbers: <a href="results.json">results.json</a></p>']  # fmt: skip
    path = out / "report.html"
    path.write_text(html_page("polyprune study", body))
    return path


def figures_html(figures: list[tuple[str, str]]) -> list[str]:
    """One heading and image per ``(title, file name)`` figure, for :func:`html_page`."""
    return [f'<h2>{html.escape(t)}</h2><img src="{p}" alt="{html.escape(t)}">' for t, p in figures]


def html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page: ``body`` (HTML fragments, one per line) under ``title``."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}img{max-width:100%}"
        "</style></head><body>" + "\n".join(body) + "</body></html>"
    )
