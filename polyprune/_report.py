"""Private: write a StudyResult to a directory (JSON, figures, Markdown and HTML report)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import plot

if TYPE_CHECKING:
    from .study import StudyResult

__all__ = ["write_report"]


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_report(result: StudyResult, out: Path) -> Path:
    """Write everything under ``out``; return the path of ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_clean(result.to_dict()), indent=2))
    unit = result.unit
    name = f"{unit.layer}[{unit.channel}]"
    figures: list[tuple[str, str]] = []
    if result.top.inputs is not None:
        plot.crops(result.top.inputs, result.clustering.labels, out / "crops.png",
                   title=f"top-{len(result.top)} crops of {name} by cluster")  # fmt: skip
        figures.append(("Top activating crops, one row per cluster", "crops.png"))
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
    body += [f'<h2>{html.escape(t)}</h2><img src="{p}" alt="{html.escape(t)}">' for t, p in figures]
    body += ["<h2>Timings</h2><pre>", html.escape(timings), "</pre>",
             '<p>Full numbers: <a href="results.json">results.json</a></p>']  # fmt: skip
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>polyprune study</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}img{max-width:100%}"
        "</style></head><body>" + "\n".join(body) + "</body></html>"
    )
    path = out / "report.html"
    path.write_text(page)
    return path
