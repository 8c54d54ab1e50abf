"""The report's markdown tables, from the rows (and the verdicts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

import polyprune as pp

from .config import (
    ALPHA,
    GOAL_AUROC,
    GOAL_F1,
    GOAL_KEPT,
    GOAL_R,
    SCORERS,
    SEPARATES,
    Config,
)
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


def kept_ratio(row: FitRow) -> float | None:
    """Kept fraction / the true circuit's (planted only)."""
    return None if not row.true_kept else row.kept / row.true_kept


#: The goals of issue 15 (``config.GOAL_*``): a name and a test of one subnetwork.
GOALS: tuple[tuple[str, Callable[[FitRow], bool]], ...] = (
    (f"F1 ≥ {GOAL_F1:g}", lambda r: r.f1 is not None and r.f1 >= GOAL_F1),
    (f"held-out AUROC ≥ {GOAL_AUROC:g}", lambda r: r.auroc_held >= GOAL_AUROC),
    (f"r ≥ {GOAL_R:g}", lambda r: r.r_held is not None and r.r_held >= GOAL_R),
    (f"kept ≤ {GOAL_KEPT:g} × true", lambda r: (kept_ratio(r) or math.inf) <= GOAL_KEPT),
)


def goal_cells(rows: Sequence[FitRow]) -> list[str]:
    """How many of ``rows`` meet each goal, and all of them (``k/n``)."""
    cells = [f"{sum(test(r) for r in rows)}/{len(rows)}" for _, test in GOALS]
    every = sum(all(test(r) for _, test in GOALS) for r in rows)
    return [*cells, f"{every}/{len(rows)}"]


def goal_header() -> list[str]:
    """The column names of :func:`goal_cells`."""
    return [name for name, _ in GOALS] + ["all four"]


#: Faithfulness columns of the circuit tables: the cluster's held-out crops.
FAITHFUL_COLUMNS: tuple[tuple[str, Callable[[FitRow], float | None]], ...] = (
    ("AUROC held-out", lambda r: r.auroc_held),
    ("r held-out", lambda r: r.r_held),
    ("rel. error held-out", lambda r: r.rel_err_held),
    ("activation kept held-out", lambda r: r.act_kept_held),
)
#: Circuit columns of the circuit tables (planted only).
RECOVERY_COLUMNS: tuple[tuple[str, Callable[[FitRow], float | None]], ...] = (
    ("kept / true kept", kept_ratio),
    ("F1", lambda r: r.f1),
    ("F1 (effective)", lambda r: r.eff_f1),
    ("precision", lambda r: r.precision),
    ("recall", lambda r: r.recall),
)


def objective_name(loss: str) -> str:
    """``loss`` as the report names it (the paper's is marked)."""
    return f"{loss} (the paper's)" if loss == "separate" else loss


def circuit_arms(
    fits: Sequence[FitRow], family: str, cfg: Config
) -> list[tuple[str, str, list[FitRow]]]:
    """(method, objective and setting, rows) of the circuit table, in report order: the true
    circuit, CS with each objective at each λ, every scorer at the kept fraction of the paper's
    CS and of each other objective's default λ. Arms without rows are left out."""
    rows_f = select(fits, family=family)
    arms = [("true circuit", "–", select(rows_f, grid="truth"))]
    arms += [("CS", f"{objective_name('separate')}, λ = {lam:g}",
              select(rows_f, method="CS", grid="lam", setting=lam))
             for lam in sorted(cfg.lams)]  # fmt: skip
    for loss, lams in cfg.objectives:
        arms += [("CS", f"{objective_name(loss)}, λ = {lam:g}",
                  select(rows_f, method="CS", grid="objective", setting=lam, loss=loss))
                 for lam in sorted(lams)]  # fmt: skip
    paper = f"at CS's kept: {objective_name('separate')}, λ = {cfg.cs_lam:g}"
    for method in SCORERS:
        arms.append(
            (method, paper, select(rows_f, method=method, grid="matched", setting=cfg.cs_lam))
        )
    for loss, _ in cfg.objectives:
        for method in SCORERS:
            rows = select(rows_f, method=method, grid="matched-objective", loss=loss)
            arms += [(method, f"at CS's kept: {loss}, λ = {lam:g}", select(rows, setting=lam))
                     for lam in sorted({r.setting for r in rows})]  # fmt: skip
    return [arm for arm in arms if arm[2]]


def circuit_table(fits: Sequence[FitRow], family: str, cfg: Config) -> list[str]:
    """Every arm of :func:`circuit_arms`: kept, circuit scores (planted), held-out faithfulness."""
    arms = circuit_arms(fits, family, cfg)
    planted = any(r.f1 is not None for _, _, rows in arms for r in rows)
    columns = [*(RECOVERY_COLUMNS if planted else ()), *FAITHFUL_COLUMNS]
    out = [
        [method, setting, pct_stats(rows, lambda r: r.kept),
         *(fmt_stats(rows, value) for _, value in columns)]
        for method, setting, rows in arms
    ]  # fmt: skip
    return table(["method", "objective, setting", "kept", *(n for n, _ in columns)], out)


def default_arms(
    fits: Sequence[FitRow], family: str, cfg: Config
) -> list[tuple[str, list[FitRow]]]:
    """(objective, rows) of CS at each objective's default λ (the paper's: ``cfg.cs_lam``),
    and the true circuit; arms without rows are left out."""
    rows_f = select(fits, family=family)
    arms = [
        ("true circuit", select(rows_f, grid="truth")),
        (objective_name("separate"), select(rows_f, grid="lam", setting=cfg.cs_lam)),
    ]
    for loss, _ in cfg.objectives:
        lam = pp.CSConfig(loss=loss).penalty_weight
        arms.append((loss, select(rows_f, grid="objective", loss=loss, setting=lam)))
    return [(name, rows) for name, rows in arms if rows]


def goal_table(fits: Sequence[FitRow], family: str, cfg: Config) -> list[str]:
    """Subnetworks meeting each goal of issue 15, CS at each objective's default λ."""
    rows = [[name, *goal_cells(mine)] for name, mine in default_arms(fits, family, cfg)]
    return table(["CS objective (default λ)", *goal_header()], rows)
