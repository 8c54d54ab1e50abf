"""Private to ``benchmarks/claims.py``: the markdown report and its figures."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _claims_stats import Row, families, fmt, pct, select, stats
from _claims_verdicts import (
    ALPHA,
    CLAIMS,
    PAPER_RANGE,
    SEPARATES,
    Verdict,
    changed,
    matched,
    rate,
    separates,
)

METHOD_ORDER = ("ActGrad", "SNIP", "FORCE", "Magnitude", "Random", "CS")
COLORS = {"ActGrad": "C0", "SNIP": "C1", "FORCE": "C2", "Magnitude": "C7", "Random": "C5",
          "CS": "C3"}  # fmt: skip


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _pct_stats(rows: Sequence[Row], key: str) -> str:
    m, s, _ = stats(rows, key)
    if math.isnan(m):
        return "–"
    return f"{100 * m:.1f} %" if math.isnan(s) else f"{100 * m:.1f} ± {100 * s:.1f} %"


def _pair_cells(pairs: Sequence[Row]) -> list[str]:
    if not pairs:
        return ["–", "–"]
    m, s, _ = stats(pairs, "iou")
    expected = stats(pairs, "expected_iou")[0]
    sig = sum(r["p_value"] < ALPHA for r in pairs)
    return [f"{fmt(m, s)} ({expected:.2f})", f"{sig}/{len(pairs)}"]


def _ordered(methods: set[str]) -> list[str]:
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def clustering_table(clustering: Sequence[Row]) -> list[str]:
    """One row per case: clusters, noise, ARI, cluster majorities."""
    rows = []
    for r in clustering:
        majority = ", ".join(f"{n} ({share:.0%})" for n, share in r["majority"]) or "–"
        rows.append([
            r["case"], "/".join(r["pair"]), f"{r['n_clusters']} {r['sizes']}", pct(r["noise"]),
            f"{r['ari']:.2f}", f"{r['ari_all']:.2f}", majority, pct(r["in_pair"]),
        ])  # fmt: skip
    header = ["case", "concepts", "clusters (sizes)", "noise", "ARI clustered", "ARI all",
              "cluster majorities", "top-k in the two concepts"]  # fmt: skip
    return _table(header, rows)


def methods_table(fits: Sequence[Row], pairs: Sequence[Row], family: str) -> list[str]:
    """Per method and keep (and CS per λ): kept, separation, circuits, overlap."""
    rows_f = select(fits, family=family)
    planted = any("f1" in r for r in rows_f)
    out = []
    for method in _ordered({r["method"] for r in rows_f}):
        grid = "lam" if method == "CS" else "keep"
        settings = sorted({r["setting"] for r in select(rows_f, method=method, grid=grid)})
        for setting in settings if method == "CS" else settings[::-1]:
            rows = select(rows_f, method=method, grid=grid, setting=setting)
            kept = _pct_stats(rows, "kept")
            if method == "CS":
                kept += f" (paper {_pct_stats(rows, 'paper_kept')})"
            cells = [
                method, f"λ = {setting:g}" if method == "CS" else pct(setting), kept,
                fmt(*stats(rows, "auroc_fit")[:2]), fmt(*stats(rows, "auroc_held")[:2]),
                f"{rate(rows):.0%}",
            ]  # fmt: skip
            if planted:
                cells += [fmt(*stats(rows, k)[:2]) for k in ("precision", "recall", "f1", "eff_f1")]
            cells += _pair_cells(select(pairs, family=family, method=method, setting=setting,
                                        grid=grid))  # fmt: skip
            out.append(cells)
    header = ["method", "keep", "kept", "AUROC fitted", "AUROC held-out",
              f"separates (≥ {SEPARATES})"]  # fmt: skip
    if planted:
        header += ["circuit precision", "recall", "F1", "F1 (effective)"]
    header += ["IoU of the two subnetworks (expected)", f"pairs with p < {ALPHA}"]
    return _table(header, out)


def matched_table(fits: Sequence[Row], pairs: Sequence[Row], family: str, lam: float) -> list[str]:
    """Every method at CS's own kept fraction: separation, behaviour outside, overlap."""
    rows_f = matched(fits, family, lam)
    out = []
    for method in _ordered({r["method"] for r in rows_f}):
        rows = select(rows_f, method=method)
        ok = [r for r in rows if r["auroc_fit"] >= SEPARATES]
        p = select(pairs, family=family, method=method, grid="lam" if method == "CS" else "matched")
        p = select(p, setting=lam)
        out.append([
            method, _pct_stats(rows, "kept"), fmt(*stats(rows, "auroc_held")[:2]),
            f"{float(np.nanmedian([r['dprime_held'] for r in rows])):.2f}",
            fmt(*stats(rows, "r_held")[:2]),
            f"{stats(rows, 'out_before')[0]:.3f} → {fmt(*stats(rows, 'out_after')[:2], 3)}",
            f"{int(sum(changed(r) for r in ok))}/{len(ok)}", *_pair_cells(p),
        ])  # fmt: skip
    header = [
        "method", "kept", "AUROC held-out", "median d′ held-out", "r held-out",
        "AUROC members vs other concepts: original → subnetwork",
        "changed outside / separating", "IoU (expected)", f"pairs with p < {ALPHA}",
    ]  # fmt: skip
    return _table(header, out)


def verdict_table(verdicts: Sequence[Verdict]) -> list[str]:
    """Claim, verdict, key numbers."""
    rows = [[str(v.claim), CLAIMS[v.claim], f"**{v.status}**", v.summary] for v in verdicts]
    return _table(["#", "claim (paper)", "verdict", "key numbers"], rows)


def verdict_section(v: Verdict) -> list[str]:
    """A claim's section: the verdict, the rule, the evidence."""
    return [
        f"### Claim {v.claim}: {CLAIMS[v.claim]}",
        "",
        f"**Verdict: {v.status}.** {v.summary}.",
        "",
        f"*Rule:* {v.rule}.",
        "",
        *[f"- {e}" for e in v.evidence],
        "",
    ]


Value = Callable[[Row], float] | str


def _curve(ax: Any, fits: Sequence[Row], method: str, value: Value, band: bool) -> None:
    rows = select(fits, method=method, grid="keep")
    keeps = sorted({r["setting"] for r in rows})
    kept = [stats(select(rows, setting=k), "kept")[0] for k in keeps]
    m_s = [stats(select(rows, setting=k), value)[:2] for k in keeps]
    mean = np.array([m for m, _ in m_s])
    std = np.nan_to_num(np.array([s for _, s in m_s]))
    ax.plot(kept, mean, "-o", ms=3, color=COLORS.get(method), label=method)
    if band:
        ax.fill_between(kept, mean - std, mean + std, color=COLORS.get(method), alpha=0.08, lw=0)


def _cs_points(ax: Any, fits: Sequence[Row], value: Value, band: bool) -> None:
    rows = select(fits, method="CS", grid="lam")
    lams = sorted({r["setting"] for r in rows})
    for i, lam in enumerate(lams):
        mine = select(rows, setting=lam)
        (x, xs, _), (y, ys, _) = stats(mine, "kept"), stats(mine, value)
        label = "CS (one point per λ)" if i == 0 else None
        ax.errorbar(
            x, y, xerr=np.nan_to_num(xs), yerr=np.nan_to_num(ys) if band else None, fmt="D",
            ms=5, color=COLORS["CS"], label=label, lw=0.8,
        )  # fmt: skip
        if lam in (lams[0], lams[-1]):  # larger λ, smaller kept fraction: label the ends
            ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(-8, -12),
                        fontsize=7)  # fmt: skip


def figure(
    fits: Sequence[Row], path: Path, panels: Sequence[Sequence[tuple[str, Value, str]]]
) -> Path:
    """A grid of panels ``(family, value, label)``: value vs kept fraction per scorer, CS as
    points (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.6 * n_rows), squeeze=False)
    for r, row in enumerate(panels):
        for c, (fam, value, label) in enumerate(row):
            ax, rows = axes[r][c], select(fits, family=fam)
            band = value != separates  # a share per seed of two clusters: bands mislead
            for method in _ordered({r["method"] for r in select(rows, grid="keep")}):
                _curve(ax, rows, method, value, band)
            _cs_points(ax, rows, value, band)
            ax.set_xscale("log")
            ax.axvspan(*PAPER_RANGE, color="0.85", alpha=0.6, lw=0, label="paper's CS range 3–7 %")
            ax.axvline(0.1, color="0.4", ls=":", lw=1)
            if value == "auroc_held":
                ax.axhline(SEPARATES, color="0.4", ls="--", lw=0.8)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(fam, fontsize=10)
            ax.set_xlabel("kept fraction (DESIGN count, log scale)", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_markdown(
    results: dict[str, Any], verdicts: Sequence[Verdict], out: Path, header: list[str]
) -> Path:
    """Write ``results.md`` (and its figures under ``img/``) to the directory ``out``."""
    fits, pairs, clustering = results["fits"], results["pairs"], results["clustering"]
    lam = float(results["config"]["cs_lam"])
    fams = families(fits)
    lines = [*header, "## Verdicts", "", *verdict_table(verdicts), ""]
    lines += ["## Separation against kept fraction", ""]
    figure(fits, out / "img" / "claims_separation.png", [
        [(f, "auroc_held", "held-out AUROC (mean of clusters)") for f in fams],
        [(f, separates, f"share of subnetworks separating (≥ {SEPARATES})") for f in fams],
    ])  # fmt: skip
    lines += ["![held-out separation against kept fraction](img/claims_separation.png)", ""]
    if "planted" in fams and any("f1" in r for r in fits):
        figure(fits, out / "img" / "claims_circuits.png", [
            [("planted", k, f"circuit {k} vs planted truth") for k in ("precision", "recall", "f1")]
        ])  # fmt: skip
        lines += ["![circuit precision, recall, F1 against kept fraction](img/claims_circuits.png)"]
        lines += [""]
    lines += [
        "Lines: scorers at each keep (mean over seeds of the clusters' mean; shaded ± std over "
        "seeds); diamonds: CS at each λ of the sweep (error bars ± std over seeds; larger λ, "
        "smaller kept fraction); grey band: the paper's 3–7 %; dotted: 10 % kept; dashed: the "
        f"separation threshold {SEPARATES}. Bottom row: share of all subnetworks (seeds × "
        "clusters) that separate.",
        "",
        "## Claims",
        "",
    ]
    for v in verdicts:
        lines += verdict_section(v)
    lines += ["## Clustering (claim 1)", "", *clustering_table(clustering), ""]
    for fam in families(fits):
        lines += [f"## {fam}", "", f"### Every method by keep (CS by λ): {fam}", ""]
        lines += [*methods_table(fits, pairs, fam), ""]
        lines += [f"### At CS's own kept fraction (λ = {lam:g}): {fam}", ""]
        lines += [*matched_table(fits, pairs, fam, lam), ""]
    path = out / "results.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
