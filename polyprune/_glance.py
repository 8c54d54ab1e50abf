"""Private (kernel): what a result shows at a glance, in a notebook and in the reports.

The flags that make a subnetwork's numbers untrustworthy, the rule that picks the best subnetwork
of each cluster, which image folders (classes) each cluster's images come from, a glossary of
every column, and the small HTML pieces (a table, a verdict, a strip of thumbnails as an inline
PNG) and the optional pandas frame of the results' tables. Everything works on plain rows
(``StudyResult.rows()``, ``Scan.table()``), so the low-level result types use it too.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
from torch import Tensor

__all__ = [
    "BEST_RULE",
    "FLAGS",
    "GLOSSARY",
    "MIN_HELD_OUT",
    "Column",
    "best_rows",
    "card",
    "composition",
    "composition_text",
    "fmt",
    "held_auroc",
    "html_table",
    "mask_layers",
    "masks_card",
    "row_flags",
    "thumbnails",
    "to_pandas",
]

MIN_HELD_OUT = 10
"""Held-out members below which a cluster's held-out numbers are flagged as too few to trust."""

FLAGS = {
    "inverted": "held-out AUROC below 0.5 (fitted AUROC when nothing is held out): the "
    "subnetwork fires more for the other clusters' images than for its own",
    "dead": "the subnetwork's mean activation on its cluster's images is ≤ 0 (after a ReLU: it "
    "never fires)",
    "empty": "degenerate: the subnetwork keeps no weight that can reach the unit",
    "constant": "degenerate: the unit's activation under the subnetwork is the same on every "
    "image, so AUROC is 0.5 and r undefined by construction",
    "few held-out": f"fewer than {MIN_HELD_OUT} of the cluster's images were held out: its "
    "held-out numbers are too noisy to trust",
}
"""Every flag a subnetwork's row can carry, and what it means."""

BEST_RULE = (
    "best = the highest held-out AUROC (fitted AUROC when nothing is held out) among the "
    "cluster's subnetworks without a flag (a few held-out images do not disqualify); ties: the "
    "fewer weights kept"
)
"""How :func:`best_rows` picks the best subnetwork of each cluster."""

GLOSSARY = {
    "method": "how the subnetwork was found: cs (Continuous Sparsification, trained masks) or a "
    "scorer (snip, force, actgrad, ...) that keeps the best-scored weights",
    "cluster": "the meaning the subnetwork is cut out for: a cluster of the unit's top images",
    "flags": "what makes a row's numbers untrustworthy, if anything (see Flags)",
    "kept": "fraction of the weights that can reach the unit which the subnetwork keeps (only "
    "weights on a kept path from the input to the unit count)",
    "AUROC before": "how well the unit's activation in the full network separates the cluster's "
    "images from the other clusters': the chance that a member's activation exceeds a "
    "non-member's (0.5: not at all, 1: perfectly)",
    "AUROC after": "the same with only the subnetwork, on the images it was fitted on",
    "held-out": "AUROC after on the cluster's held-out images, never seen by the fit; below 0.5 "
    "the subnetwork keeps the other cluster (inverted)",
    "d′ after": "(μ₁ − μ₀) / √((σ₁² + σ₀²)/2), members vs others, under the subnetwork: the "
    "separation in standard deviations",
    "r": "Pearson correlation of the subnetwork's activation with the full network's on the "
    "cluster's images (blind to scale and offset)",
    "rel.err": "‖a_sub − a‖ / ‖a‖ on the cluster's images: 0 reproduces the unit exactly, 1 is "
    "a silent subnetwork",
    "act.kept": "mean(a_sub) / mean(a): the share of the unit's mean response the subnetwork "
    "keeps (above 1: it fires more than the unit)",
    "clusters": "HDBSCAN clusters among the codes (every channel of the layer at the unit's "
    "position) of the unit's top-k images; two or more: polysemantic",
    "noise": "share of the top-k images HDBSCAN assigns to no cluster",
    "separation": "silhouette of the clustered codes, in [-1, 1]: how far each image's code is "
    "from the nearest other cluster compared with its own",
    "balance": "min(1, 2·(1 − p)), p the largest cluster's share: 1 when no cluster holds more "
    "than half the images",
    "score": "max(separation, 0) · balance · (1 − noise) for a polysemantic channel, else 0",
    "p": "the significance test's p-value: how likely codes without clusters would split into "
    "groups at least this clear (clustering.significance, on the strongest half of the top-k); "
    "a study calls the unit polysemantic when p < alpha (0.05 by default)",
    "q": "p corrected for testing every channel of the scan (Benjamini–Hochberg): calling the "
    "channels with q < alpha polysemantic keeps the expected share of false calls at most alpha",
}
"""Every column the tables and reports show, and what it means."""


def fmt(value: Any, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec``; ``-`` for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def held_auroc(row: Mapping[str, Any]) -> float:
    """The AUROC a row is judged by: held-out when there is one, else fitted."""
    held = row.get("auroc_held_out")
    return float(row["auroc_after"] if held is None else held)


def row_flags(row: Mapping[str, Any]) -> list[str]:
    """The :data:`FLAGS` of one ``StudyResult.rows()`` row (its own ``flags`` first)."""
    flags = list(row.get("flags", ()))
    if held_auroc(row) < 0.5:
        flags.append("inverted")
    act = row.get("act_kept")
    if act is not None and not math.isnan(act) and act <= 0 and "empty" not in flags:
        flags.append("dead")
    held = row.get("n_held_out")
    if held is not None and held < MIN_HELD_OUT:
        flags.append("few held-out")
    return flags


def best_rows(rows: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """The best row of each cluster by :data:`BEST_RULE` (no entry when every row is flagged)."""
    best: dict[int, Mapping[str, Any]] = {}
    for row in rows:
        if any(f != "few held-out" for f in row_flags(row)):
            continue
        key = (-held_auroc(row), row["kept"])
        old = best.get(row["cluster"])
        if old is None or key < (-held_auroc(old), old["kept"]):
            best[row["cluster"]] = row
    return best


def composition(
    paths: Sequence[str] | None, labels: Sequence[int] | np.ndarray[Any, Any]
) -> dict[int, list[tuple[str, int]]]:
    """Cluster → its images' folders (classes), most common first; ``{}`` without paths."""
    if not paths:
        return {}
    y = np.asarray(labels)
    out: dict[int, list[tuple[str, int]]] = {}
    for label in sorted({int(v) for v in y}, key=lambda v: (v < 0, v)):
        folders = Counter(PurePath(paths[int(i)]).parent.name for i in np.flatnonzero(y == label))
        out[label] = folders.most_common()
    return out


def composition_text(classes: Sequence[tuple[str, int]], shown: int = 3) -> str:
    """``"rings 40 (80%), dots 10 (20%)"``: the ``shown`` commonest folders and their shares."""
    total = sum(n for _, n in classes)
    parts = [f"{name} {n} ({n / total:.0%})" for name, n in classes[:shown]]
    rest = len(classes) - shown
    return ", ".join(parts) + (f", {rest} more" if rest > 0 else "")


def thumbnails(images: Tensor, n: int = 8, height: int = 40) -> str:
    """The first ``n`` images side by side as an inline PNG (``<img>`` tag, base64)."""
    from PIL import Image  # torchvision's dependency

    strip = []
    for x in images[:n].detach().float().cpu():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:  # any range, rescaled per image (as the report's figures do)
            x = (x - lo) / (hi - lo if hi > lo else 1.0)
        array = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        strip.append(array if array.shape[2] == 3 else np.repeat(array[..., :1], 3, axis=2))
    if not strip:
        return ""
    h = max(a.shape[0] for a in strip)
    gap = np.full((h, 2, 3), 255, np.uint8)
    padded = [np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255) for a in strip]
    row = np.concatenate([p for a in padded for p in (a, gap)][:-1], axis=1)
    image = Image.fromarray(row)
    image = image.resize((max(1, row.shape[1] * height // h), height), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="top images" src="data:image/png;base64,{data}">'


Column = tuple[str, str, Callable[[Any], str]]
"""``(key, header, format)`` of one table column."""


def html_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    marked: Callable[[Mapping[str, Any]], bool] | None = None,
    titles: Mapping[str, str] | None = None,
) -> str:
    """A small HTML table; rows for which ``marked`` is true are bold (``class="best"``),
    headers carry their :data:`GLOSSARY` entry (or ``titles``) as a tooltip."""
    tips = {**GLOSSARY, **(titles or {})}
    head = "".join(
        f'<th title="{html.escape(tips[h])}">{html.escape(h)}</th>'
        if h in tips
        else f"<th>{html.escape(h)}</th>"
        for _, h, _ in columns
    )
    body = []
    for row in rows:
        best = marked is not None and marked(row)
        cells = "".join(f"<td>{html.escape(show(row.get(key)))}</td>" for key, _, show in columns)
        body.append(f'<tr class="best">{cells}</tr>' if best else f"<tr>{cells}</tr>")
    return f'<table class="pp"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


_STYLE = (
    "<style>.pp-card table.pp{border-collapse:collapse;font-size:12px}"
    ".pp-card table.pp td,.pp-card table.pp th{padding:1px 6px;text-align:right;"
    "border-bottom:1px solid #ddd}.pp-card tr.best{font-weight:bold;background:#eaf5ea}"
    ".pp-card .verdict{font-size:14px;margin:4px 0}</style>"
)


def card(title: str, verdict: str, *parts: str) -> str:
    """A notebook view: a title, the verdict (``<p class="verdict">``) and HTML ``parts``."""
    return (
        f'<div class="pp-card">{_STYLE}<div><code>{html.escape(title)}</code></div>'
        f'<p class="verdict"><b>{html.escape(verdict)}</b></p>' + "".join(parts) + "</div>"
    )


def to_pandas(rows: Sequence[Mapping[str, Any]], what: str) -> Any:
    """``rows`` as a ``pandas.DataFrame`` (pandas is the optional extra ``polyprune[pandas]``)."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            f"{what}.to_pandas() needs pandas, an optional dependency: "
            "pip install 'polyprune[pandas]' (or pip install pandas)"
        ) from exc
    return pd.DataFrame([dict(r) for r in rows])


def mask_layers(masks: Any) -> str:
    """A :class:`~polyprune.masks.Masks`'s kept fraction per layer, as an HTML table."""
    rows = [{"layer": n, "kept": f} for n, f in masks.layer_kept_fractions().items()]
    columns: list[Column] = [("layer", "weight", str), ("kept", "kept", lambda v: fmt(v, ".2%"))]
    return html_table(rows, columns)


def masks_card(masks: Any) -> str:
    """The notebook card of a :class:`~polyprune.masks.Masks`: its verdict and its layers."""
    reach = f"that can reach {masks.unit}" if masks.unit is not None else "of its layers"
    verdict = f"keeps {masks.kept_fraction():.2%} of the weights {reach}"
    return card(f"Masks ({masks.granularity})", verdict, mask_layers(masks))
