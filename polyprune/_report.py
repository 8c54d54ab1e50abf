"""Private (pipeline): the report of a StudyResult — figures, Markdown and HTML."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _glance as g
from . import _study_view as view
from . import plot

if TYPE_CHECKING:
    from ._study_result import StudyResult

__all__ = [
    "answer_html",
    "clean",
    "figures_html",
    "html_page",
    "write_report",
]


def clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def write_report(result: StudyResult, out: Path, per_cluster: int = 16) -> Path:
    """Write the figures, ``report.md`` and ``report.html`` under ``out``; return the HTML's
    path. ``per_cluster`` crops of each cluster are shown.

    The page answers first: the verdict, the clusters (size, image folders, best subnetwork and
    the rule that picked it), then the subnetworks' table with its flags, what each flag and
    column means, and the figures. One static file and its PNGs; no script.
    """
    out.mkdir(parents=True, exist_ok=True)
    name = str(result.unit)
    figures = _figures(result, out, per_cluster, name)
    summary = result.summary()
    timings = "\n".join(f"- {k}: {v:.1f} s" for k, v in result.timings.items())
    md = [f"# polyprune study of {name}", "", f"**{view.verdict(result)}**", "", "```", summary,
          "```", ""]  # fmt: skip
    md += [f"## {title}\n\n![{title}]({path})\n" for title, path in figures]
    md += ["## Timings", "", timings, "", "Full numbers: [results.json](results.json)", ""]
    (out / "report.md").write_text("\n".join(md))
    body = [f"<h1>polyprune study of {html.escape(name)}</h1>", *answer_html(result)]
    body += figures_html(figures)
    body += ["<h2>Summary</h2>", f"<pre>{html.escape(summary)}</pre>",
             "<h2>Timings</h2><pre>", html.escape(timings), "</pre>",
             '<p>Full numbers: <a href="results.json">results.json</a></p>']  # fmt: skip
    path = out / "report.html"
    path.write_text(html_page("polyprune study", body))
    return path


def _figures(result: StudyResult, out: Path, per_cluster: int, name: str) -> list[tuple[str, str]]:
    figures: list[tuple[str, str]] = []
    shown = view.display_crops(result, per_cluster)
    if shown is not None:
        what = "crops" if result.top.field is not None else "images"
        y = result.clustering.labels
        plot.crops(shown[0], np.asarray(shown[1]), out / "crops.png", per_cluster=per_cluster,
                   sizes={int(v): int((y == v).sum()) for v in np.unique(y)},
                   title=f"top-{len(result.top)} {what} of {name} by cluster")  # fmt: skip
        figures.append((f"Top activating {what}, one row per cluster", "crops.png"))
    if result.activations:
        columns = max(1, result.clustering.n_clusters) if result.subnetworks else None
        plot.histograms(result.activations, result.clustering.labels, out / "histograms.png",
                        title=f"activations of {name} per cluster", columns=columns)  # fmt: skip
        figures.append(("Activations per cluster: the original network (top), then each "
                        "subnetwork (one row per method, one column per cluster)",
                        "histograms.png"))  # fmt: skip
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
    return figures


def answer_html(result: StudyResult) -> list[str]:
    """The page's first sections: verdict and clusters, subnetworks and flags, glossary."""
    parts = ['<section class="verdict">', f'<p class="verdict">{html.escape(view.verdict(result))}'
             "</p>"]  # fmt: skip
    rows = [
        {**info, "pick": view.best_text(info["best"]) if result.evaluations else "-"}
        for info in view.clusters(result)
    ]
    columns: list[g.Column] = [
        ("cluster", "cluster", str), ("size", "images", str),
        *((("classes", "image folders", str),) if any(r["classes"] for r in rows) else ()),
        ("pick", "best subnetwork", str),
    ]  # fmt: skip
    parts += [g.html_table(rows, columns), "</section>"]
    if result.evaluations:
        flagged = view.flagged_rows(result)
        parts += ['<section class="subnetworks"><h2>Subnetworks</h2>',
                  g.html_table(flagged, view.ROW_COLUMNS, marked=lambda r: bool(r["best"])),
                  f'<p class="rule">Bold: {html.escape(g.BEST_RULE)}. Faithfulness (r, '
                  "rel.err, act.kept) on the fitted images; held-out ones in results.json."
                  "</p>"]  # fmt: skip
        present = [f for f in g.FLAGS if any(f in r["shown_flags"].split(", ") for r in flagged)]
        items = "".join(f"<dt>{html.escape(f)}</dt><dd>{html.escape(g.FLAGS[f])}</dd>"
                        for f in present)  # fmt: skip
        parts += ['<div class="flags"><h3>Flags</h3>',
                  f"<dl>{items}</dl>" if items else "<p>No subnetwork is flagged.</p>",
                  "</div></section>"]  # fmt: skip
    terms = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                    for k, v in g.GLOSSARY.items() if k not in _SCAN_TERMS)  # fmt: skip
    parts += ['<section class="glossary"><h2>Glossary</h2>', f"<dl>{terms}</dl></section>"]
    return parts


_SCAN_TERMS = ("separation", "balance", "score", "q")


def figures_html(figures: list[tuple[str, str]]) -> list[str]:
    """One heading and image per ``(title, file name)`` figure, for :func:`html_page`."""
    return [f'<h2>{html.escape(t)}</h2><img src="{p}" alt="{html.escape(t)}">' for t, p in figures]


def html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page: ``body`` (HTML fragments, one per line) under ``title``."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>"
    )


_CSS = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em;line-height:1.4}"
    "img{max-width:100%}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
    "th[title]{text-decoration:underline dotted}tr.best{font-weight:bold;background:#eaf5ea}"
    "p.verdict{font-size:1.4em;font-weight:bold;margin:.3em 0}"
    "section.verdict{border-left:6px solid #2e7d32;padding:.2em 1em;background:#f7fbf7}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}"
    "dd{margin:0}pre{overflow-x:auto}"
)
