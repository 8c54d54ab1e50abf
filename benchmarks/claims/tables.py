"""The report's markdown tables, from the rows (and the verdicts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .config import ALPHA, SEPARATES
from .figures import ordered
from .rows import ClusteringRow, FitRow, PairRow
from .stats import fmt, fmt_stats, pct, select, stats
from .verdicts import Verdict, changed, matched, rate, statement


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def pct_stats(rows: Sequence[FitRow], value: Callable[[FitRow], float | None]) -> str:
    """``mean ± std %`` over seeds."""
    m, s, _ = stats(rows, value)
    if math.isnan(m):
        return "–"
    return f"{100 * m:.1f} %" if math.isnan(s) else f"{100 * m:.1f} ± {100 * s:.1f} %"


def pair_cells(pairs: Sequence[PairRow]) -> list[str]:
    """IoU ± std (expected IoU), and the pairs with p < ALPHA."""
    if not pairs:
        return ["–", "–"]
    m, s, _ = stats(pairs, lambda r: r.iou)
    expected = stats(pairs, lambda r: r.expected_iou)[0]
    sig = sum(r.p_value < ALPHA for r in pairs)
    return [f"{fmt(m, s)} ({expected:.2f})", f"{sig}/{len(pairs)}"]


def clustering_table(clustering: Sequence[ClusteringRow]) -> list[str]:
    """One row per case: clusters, noise, ARI, cluster majorities."""
    rows = []
    for r in clustering:
        majority = ", ".join(f"{n} ({share:.0%})" for n, share in r.majority) or "–"
        rows.append([
            r.case, "/".join(r.pair), f"{r.n_clusters} {list(r.sizes)}", pct(r.noise),
            f"{r.ari:.2f}", f"{r.ari_all:.2f}", majority, pct(r.in_pair),
        ])  # fmt: skip
    header = ["case", "concepts", "clusters (sizes)", "noise", "ARI clustered", "ARI all",
              "cluster majorities", "top-k in the two concepts"]  # fmt: skip
    return table(header, rows)


#: The circuit columns of :func:`methods_table` (planted only).
CIRCUIT_COLUMNS: tuple[tuple[str, Callable[[FitRow], float | None]], ...] = (
    ("circuit precision", lambda r: r.precision),
    ("recall", lambda r: r.recall),
    ("F1", lambda r: r.f1),
    ("F1 (effective)", lambda r: r.eff_f1),
)


def methods_table(fits: Sequence[FitRow], pairs: Sequence[PairRow], family: str) -> list[str]:
    """Per method and keep (and CS per λ): kept, separation, circuits, overlap."""
    rows_f = select(fits, family=family)
    planted = any(r.f1 is not None for r in rows_f)
    out = []
    for method in ordered({r.method for r in rows_f}):
        grid = "lam" if method == "CS" else "keep"
        settings = sorted({r.setting for r in select(rows_f, method=method, grid=grid)})
        for setting in settings if method == "CS" else settings[::-1]:
            rows = select(rows_f, method=method, grid=grid, setting=setting)
            kept = pct_stats(rows, lambda r: r.kept)
            if method == "CS":
                kept += f" (paper {pct_stats(rows, lambda r: r.paper_kept)})"
            cells = [
                method, f"λ = {setting:g}" if method == "CS" else pct(setting), kept,
                fmt_stats(rows, lambda r: r.auroc_fit), fmt_stats(rows, lambda r: r.auroc_held),
                f"{rate(rows):.0%}",
            ]  # fmt: skip
            if planted:
                cells += [fmt_stats(rows, value) for _, value in CIRCUIT_COLUMNS]
            cells += pair_cells(select(pairs, family=family, method=method, setting=setting,
                                       grid=grid))  # fmt: skip
            out.append(cells)
    header = ["method", "keep", "kept", "AUROC fitted", "AUROC held-out",
              f"separates (≥ {SEPARATES})"]  # fmt: skip
    if planted:
        header += [name for name, _ in CIRCUIT_COLUMNS]
    header += ["IoU of the two subnetworks (expected)", f"pairs with p < {ALPHA}"]
    return table(header, out)


def matched_table(
    fits: Sequence[FitRow], pairs: Sequence[PairRow], family: str, lam: float
) -> list[str]:
    """Every method at CS's own kept fraction: separation, behaviour outside, overlap."""
    rows_f = matched(fits, family, lam)
    out = []
    for method in ordered({r.method for r in rows_f}):
        rows = select(rows_f, method=method)
        ok = [r for r in rows if r.auroc_fit >= SEPARATES]
        p = select(pairs, family=family, method=method, grid="lam" if method == "CS" else "matched")
        p = select(p, setting=lam)
        out.append([
            method, pct_stats(rows, lambda r: r.kept), fmt_stats(rows, lambda r: r.auroc_held),
            f"{float(np.nanmedian([r.dprime_held for r in rows])):.2f}",
            fmt_stats(rows, lambda r: r.r_held),
            f"{stats(rows, lambda r: r.out_before)[0]:.3f} → "
            f"{fmt_stats(rows, lambda r: r.out_after, 3)}",
            f"{int(sum(changed(r) for r in ok))}/{len(ok)}", *pair_cells(p),
        ])  # fmt: skip
    header = [
        "method", "kept", "AUROC held-out", "median d′ held-out", "r held-out",
        "AUROC members vs other concepts: original → subnetwork",
        "changed outside / separating", "IoU (expected)", f"pairs with p < {ALPHA}",
    ]  # fmt: skip
    return table(header, out)


def verdict_table(verdicts: Sequence[Verdict]) -> list[str]:
    """Claim, verdict, key numbers."""
    rows = [[str(v.claim), statement(v.claim), f"**{v.status}**", v.summary] for v in verdicts]
    return table(["#", "claim (paper)", "verdict", "key numbers"], rows)


def verdict_section(v: Verdict) -> list[str]:
    """A claim's section: the verdict, the rule, the evidence."""
    return [
        f"### Claim {v.claim}: {statement(v.claim)}",
        "",
        f"**Verdict: {v.status}.** {v.summary}.",
        "",
        f"*Rule:* {v.rule}.",
        "",
        *[f"- {e}" for e in v.evidence],
        "",
    ]
