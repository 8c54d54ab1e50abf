"""Private: write a :class:`~polyprune.scan.Scan` to a directory (CSV, JSON, tensors, figures,
HTML) and read its parts back. It only reads a ``Scan`` (type-checking import): ``_scan_result``
imports this module, never the other way round."""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import _glance as g
from . import plot
from ._dist import MergedTopK
from ._files import load_saved
from ._plan import Plan
from ._report import clean, figures_html, html_page
from ._stats import none_to_nan
from .clustering import ALPHA, Clustering
from .receptive_field import ReceptiveField
from .targets import Unit

if TYPE_CHECKING:
    from ._scan_result import Scan

__all__ = ["SCAN_COLUMNS", "read_scan", "write_scan"]

SCAN_COLUMNS: list[g.Column] = [
    ("rank", "rank", str), ("unit", "unit", str), ("clusters", "clusters", str),
    ("noise", "noise", lambda v: g.fmt(v, ".0%")),
    ("separation", "separation", lambda v: g.fmt(v, ".3f")),
    ("balance", "balance", g.fmt), ("score", "score", lambda v: g.fmt(v, ".3f")),
    ("p_value", "p", lambda v: g.fmt(v, ".2g")),
    ("q_value", "q", lambda v: g.fmt(v, ".2g")),
    ("flags", "flags", lambda v: ", ".join(v)),
]  # fmt: skip
"""The columns of a scan's table in notebooks and reports."""


FORMAT = 1


def _pos(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def write_scan(scan: Scan, out: Path, data: Any, crops: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = scan.table()
    fields = {
        layer: None if p.field is None else p.field.to_dict() for layer, p in scan._plans.items()
    }
    meta = {
        "format": FORMAT,
        "timings": scan.timings,
        "layers": list(scan.layers),
        "config": scan.config,
        "fields": fields,
        "positions": {layer: p.at for layer, p in scan._plans.items()},
        "seen_at": scan._seen_at,
        "clusterings": {
            f"{layer}/{c}": {
                "min_cluster_size": cl.min_cluster_size,
                "params": cl.params,
                "statistic": cl.statistic,
                "p_value": cl.p_value,
                "alpha": cl.alpha,
            }
            for (layer, c), cl in scan._clusterings.items()
        },
        "table": table,
        "provenance": scan.provenance,
    }
    (out / "scan.json").write_text(json.dumps(clean(meta), indent=1))
    with (out / "scan.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        for row in table:
            flat = dict(row)
            for key in ("sizes", "flags", "position"):
                flat[key] = ";".join(str(v) for v in row[key] or ())
            writer.writerow(flat)
    torch.save(scan._state(), out / "scan.pt")
    figures = [("Score of every channel", _score_figure(scan, out / "scores.png"))]
    if data is not None:
        for unit in scan.ranked(polysemantic=True)[:crops]:
            top = scan.top(unit, data)
            assert top.inputs is not None
            name = f"{unit.layer}[{unit.channel}]"
            path = out / f"crops_{unit.layer}_{unit.channel}.png"
            plot.crops(
                top.inputs,
                scan.clustering(unit).labels,
                path,
                title=f"top-{len(top)} crops of {name} by cluster",
            )
            figures.append((f"{name}: top crops, one row per cluster", path.name))
    note = (
        ""
        if data is not None
        else ("<p>No crop grids: pass the data to <code>Scan.save(directory, data)</code>.</p>")
    )
    body = [
        f"<h1>polyprune scan of {html.escape(', '.join(scan.layers))}</h1>",
        *_answer(scan),
        '<p>All channels: <a href="scan.csv">scan.csv</a>, <a href="scan.json">scan.json</a></p>',
        note,
    ]
    body += figures_html(figures)
    terms = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(g.GLOSSARY[k])}</dd>"
        for k in ("clusters", "noise", "separation", "balance", "score", "p", "q")
    )
    body += ['<section class="glossary"><h2>Glossary</h2>', f"<dl>{terms}</dl></section>"]
    path = out / "report.html"
    path.write_text(html_page("polyprune scan", body))
    return path


def _answer(scan: Scan, shown: int = 20) -> list[str]:
    """The verdict and the table of the ``shown`` first channels, each with the command that
    studies it (``MODEL``: the scanned model, as given to ``--model``)."""
    poly = sum(r["polysemantic"] for r in scan.table())
    verdict = (
        f"{poly} of {len(scan)} channels polysemantic (2+ clusters and Benjamini–Hochberg "
        f"q < {scan.alpha:g}; top-{scan.k} of {scan.n_items} items)"
    )
    root = scan.provenance.get("data", {}).get("root") if scan.provenance else None
    data = root or "FOLDER"
    rows = [
        {**r, "unit": f"{r['layer']}[{r['channel']}]",
         "study": f"polyprune study --model MODEL --layer {r['layer']} --unit {r['channel']} "
                  f"--data {data} --k {scan.k}"}
        for r in scan.table()[:shown]
    ]  # fmt: skip
    columns: list[g.Column] = [*SCAN_COLUMNS, ("study", "study it", str)]
    table = g.html_table(rows, columns, marked=lambda r: bool(r["polysemantic"]))
    return [
        '<section class="verdict">', f'<p class="verdict">{html.escape(verdict)}</p>',
        f"<p>The {min(shown, len(scan))} first channels, most polysemantic first (bold). "
        "Each line's command studies the channel: its clusters and one subnetwork per cluster "
        "(give --model as for the scan).</p>",
        table, "</section>",
    ]  # fmt: skip


def _score_figure(scan: Scan, path: Path) -> str:
    from matplotlib.figure import Figure

    rows = scan.table()
    fig = Figure(figsize=(9, 2.2 * len(scan.layers) + 0.6))
    axes = fig.subplots(len(scan.layers), 1, squeeze=False)[:, 0]
    for ax, layer in zip(axes, scan.layers, strict=True):
        mine = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["channel"])
        colours = [
            "#c0392b" if r["polysemantic"] else "#bbbbbb" if r["flags"] else "#5b8db8" for r in mine
        ]
        ax.bar([r["channel"] for r in mine], [r["score"] for r in mine], color=colours, width=1.0)
        best = sorted((r for r in mine if r["polysemantic"]), key=lambda r: r["rank"])[:3]
        for r in best:
            ax.annotate(str(r["channel"]), (r["channel"], r["score"]), ha="center", fontsize=8)
        ax.set_title(
            f"{layer}: score (red: polysemantic, grey: dead/constant)", fontsize=9, loc="left"
        )
        ax.set_ylabel("score")
    axes[-1].set_xlabel("channel")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path.name


def read_scan(directory: Path) -> dict[str, Any]:
    """The arguments of :class:`~polyprune.scan.Scan` saved in ``directory`` by
    :func:`write_scan` (``Scan.load`` builds the scan: this module does not import it)."""
    paths = [directory / name for name in ("scan.json", "scan.pt")]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} holds no saved scan (missing {missing}); write "
            "one with Scan.save(directory)"
        )
    try:
        return _read_scan(paths)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError, ValueError,
            OverflowError) as exc:  # fmt: skip
        if isinstance(exc, ValueError) and os.fspath(directory) in str(exc):
            raise
        raise ValueError(
            f"{os.fspath(directory)!r} holds a damaged polyprune scan (scan.json / scan.pt): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _read_scan(paths: list[Path]) -> dict[str, Any]:
    meta = json.loads(paths[0].read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{paths[0]} has format {got!r}; expected {FORMAT}")
    state = load_saved(paths[1], "scan")
    tops = {
        layer: MergedTopK(t["values"], t["indices"], t["items"], t["rows"], {"codes": t["codes"]})
        for layer, t in state["tops"].items()
    }
    clusterings = {}
    for key, info in meta["clusterings"].items():
        layer, _, channel = key.rpartition("/")
        clusterings[(layer, int(channel))] = Clustering(
            state["labels"][key].numpy(),
            state["probabilities"][key].numpy(),
            int(info["min_cluster_size"]),
            info["params"],
            none_to_nan(info.get("statistic")),
            none_to_nan(info.get("p_value")),
            float(info.get("alpha", ALPHA)),
        )
    plans = {}
    for layer in meta["layers"]:
        at, spec = _pos(meta["positions"][layer]), meta["fields"][layer]
        field = None if spec is None else ReceptiveField.from_dict(spec)
        plans[layer] = Plan(Unit(layer, 0, at), field, at)
    rows = []
    for row in meta["table"]:
        row = {k: v for k, v in row.items() if k not in ("rank", "position")}
        for key in ("separation", "balance", "statistic", "p_value", "q_value"):
            if key in row:  # the test's columns are absent from scans saved before 0.3
                row[key] = none_to_nan(row[key])
        rows.append(row)
    if sorted(tops) != sorted(meta["layers"]):
        raise ValueError(
            f"{os.fspath(paths[1])!r} holds the top-k of layers {sorted(tops)}, "
            f"scan.json lists {meta['layers']}"
        )
    seen_at = {layer: _pos(at) for layer, at in meta["seen_at"].items()}
    return {
        "layers": meta["layers"], "tops": tops, "clusterings": clusterings, "rows": rows,
        "plans": plans, "seen_at": seen_at, "config": meta["config"],
        "timings": meta.get("timings"), "provenance": meta.get("provenance"),
        "paths": {layer: t.get("paths") for layer, t in state["tops"].items()},
    }  # fmt: skip
