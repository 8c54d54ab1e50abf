"""One verdict per claim, from the rows alone.

Every verdict is a pure function of the rows (:class:`~benchmarks.claims.rows.Results`) and the
thresholds below, so the tests can check that verdicts follow from the numbers. A verdict is
``holds``, ``partly holds``, ``does not hold`` or ``not tested`` (the run lacked the settings
the claim needs). The thresholds are in :mod:`benchmarks.claims.config`; the claims are
registered in :data:`CLAIMS`, in report order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import ALPHA, ARI_OK, CHANGE, HEURISTICS, PAPER_RANGE, SEPARATES, TIE, WORKS
from .rows import ClusteringRow, FitRow, PairRow, Results
from .stats import families, fmt, in_family, mean, pct, select, stats

HOLDS, PARTLY, NOT, UNTESTED = "holds", "partly holds", "does not hold", "not tested"


@dataclass
class Verdict:
    """The verdict on one claim: status, one-line summary, the rule applied, evidence lines."""

    claim: int
    status: str
    summary: str
    rule: str
    evidence: list[str] = field(default_factory=list)


def separates(row: FitRow) -> float:
    """1 if the subnetwork separates on held-out crops, else 0."""
    return float(row.auroc_held >= SEPARATES)


def rate(rows: Sequence[FitRow], test: Callable[[FitRow], float] = separates) -> float:
    """Fraction of rows passing ``test`` (NaN if none)."""
    return float(np.mean([test(r) for r in rows])) if rows else math.nan


def _status(passed: Sequence[bool]) -> str:
    if not passed:
        return UNTESTED
    return HOLDS if all(passed) else PARTLY if any(passed) else NOT


def claim1(clustering: Sequence[ClusteringRow]) -> Verdict:
    """Every case: ≥ 2 clusters, ARI ≥ ARI_OK, and the clusters' majorities cover both concepts."""

    def ok(r: ClusteringRow) -> bool:
        majorities = {concept for concept, _ in r.majority}
        return r.n_clusters >= 2 and r.ari >= ARI_OK and set(r.pair) <= majorities

    rule = (
        f"a case passes with ≥ 2 clusters, ARI (clustered crops vs true concepts) ≥ {ARI_OK} "
        "and both merged concepts as cluster majorities; holds if every case passes"
    )
    evidence = []
    for fam in families(clustering):
        rows = in_family(clustering, fam)
        evidence.append(
            f"{fam}: {sum(map(ok, rows))}/{len(rows)} cases pass; ARI "
            f"{fmt(*stats(rows, lambda r: r.ari)[:2])}, noise {pct(mean(rows, lambda r: r.noise))}"
            f", clusters {sorted({r.n_clusters for r in rows})}"
        )
    status = _status([ok(r) for r in clustering])
    n_ok = sum(map(ok, clustering))
    summary = f"{n_ok}/{len(clustering)} cases; " + "; ".join(
        f"{fam} ARI {fmt(*stats(in_family(clustering, fam), lambda r: r.ari)[:2])}"
        for fam in families(clustering)
    )
    return Verdict(1, status, summary, rule, evidence)


def working_keeps(fits: Sequence[FitRow], family: str, method: str) -> dict[float, float]:
    """Keep → fraction of the method's subnetworks that separate, in one family."""
    rows = select(fits, family=family, method=method, grid="keep")
    keeps = sorted({r.setting for r in rows}, reverse=True)
    return {k: rate(select(rows, setting=k)) for k in keeps}


def claim2(fits: Sequence[FitRow], clustering: Sequence[ClusteringRow] = ()) -> Verdict:
    """Each heuristic works (> WORKS separate) at some keep ≥ 10 % and at none below."""
    rule = (
        f"a method works at a keep when more than {WORKS:.0%} of its subnetworks reach held-out "
        f"AUROC ≥ {SEPARATES}; the claim holds for a family and method if the method works at "
        "some keep ≥ 10 % and at no keep below; holds if so for every family and heuristic"
    )
    passed: list[bool] = []
    evidence: list[str] = []
    below_10: list[str] = []
    never: list[str] = []
    for fam in families(fits):
        for method in HEURISTICS:
            rates = working_keeps(fits, fam, method)
            if not any(k >= 0.1 for k in rates) or not any(k < 0.1 for k in rates):
                continue
            above = [k for k, v in rates.items() if k >= 0.1 and v > WORKS]
            below = [k for k, v in rates.items() if k < 0.1 and v > WORKS]
            passed.append(bool(above) and not below)
            if below:
                below_10.append(f"{fam} {method} (down to {pct(min(below))})")
            if not above and not below:
                never.append(f"{fam} {method}")
            text = ", ".join(f"{pct(k)}: {v:.0%}" for k, v in rates.items())
            evidence.append(
                f"{'✓' if passed[-1] else '✗'} {fam}, {method}: share separating by keep — {text}"
            )
    both = [sum(r.truth_kept) for r in clustering if r.truth_kept is not None]
    if both:
        evidence.append(
            f"for scale: the two planted circuits together are {pct(min(both))}–{pct(max(both))} "
            "of the weights that can reach the unit; a subnetwork that keeps both cannot separate"
        )
    summary = (
        f"holds for {sum(passed)}/{len(passed)} family × heuristic; works below 10 %: "
        f"{', '.join(below_10) or 'none'}; works at no keep: {', '.join(never) or 'none'}"
    )
    return Verdict(2, _status(passed), summary, rule, evidence)


def cs_default(fits: Sequence[FitRow], lam: float) -> list[FitRow]:
    """CS subnetworks at the default λ."""
    return select(fits, method="CS", grid="lam", setting=float(lam))


def in_range(row: FitRow) -> float:
    """1 if the subnetwork is in the paper's 3–7 % (DESIGN count) and separates."""
    lo, hi = PAPER_RANGE
    return float(lo <= row.kept <= hi and row.auroc_held >= SEPARATES)


def _median_pct(values: Sequence[float]) -> str:
    return pct(float(np.median(values)))


def claim3(fits: Sequence[FitRow], lam: float, clustering: Sequence[ClusteringRow] = ()) -> Verdict:
    """At the default λ most CS subnetworks are at 3–7 % and separate, in every family."""
    rule = (
        f"a CS subnetwork passes when its kept fraction (DESIGN count) is in 3–7 % and its "
        f"held-out AUROC ≥ {SEPARATES}; holds if more than {WORKS:.0%} pass in every family at "
        f"λ = {lam:g}; partly if that is so in some family or at some other λ of the sweep"
    )
    passed: list[bool] = []
    any_lam = False
    evidence: list[str] = []
    parts: list[str] = []
    for fam in families(fits):
        rows = select(cs_default(fits, lam), family=fam)
        if not rows:
            continue
        share = rate(rows, in_range)
        passed.append(share > WORKS)
        kept = [r.kept for r in rows]
        paper = [r.paper_kept for r in rows if r.paper_kept is not None]
        parts.append(f"{fam} {_median_pct(kept)} kept, {share:.0%} pass")
        evidence.append(
            f"{fam}, λ = {lam:g}: {share:.0%} pass; kept {_median_pct(kept)} median "
            f"({pct(min(kept))}–{pct(max(kept))}), paper's count {_median_pct(paper)} "
            f"median; {rate(rows):.0%} separate"
        )
        sweep = select(fits, family=fam, method="CS", grid="lam")
        texts = []
        for other in sorted({r.setting for r in sweep}):
            mine = select(sweep, setting=other)
            any_lam |= rate(mine, in_range) > WORKS
            texts.append(
                f"λ = {other:g}: kept {_median_pct([r.kept for r in mine])}, "
                f"{rate(mine):.0%} separate, {rate(mine, in_range):.0%} pass"
            )
        evidence.append(f"{fam}, λ sweep (median kept): " + "; ".join(texts))
    truth = [k for r in clustering for k in r.truth_kept or ()]
    if truth:
        evidence.append(
            f"for scale: a planted concept's true circuit is {pct(min(truth))}–{pct(max(truth))} "
            "of the weights that can reach the unit"
        )
    status = _status(passed)
    if status == NOT and any_lam:
        status = PARTLY
    return Verdict(3, status, f"λ = {lam:g}: " + "; ".join(parts), rule, evidence)


def matched(fits: Sequence[FitRow], family: str, lam: float) -> list[FitRow]:
    """One family's scorers fitted at CS's own kept fraction, and CS itself at λ = ``lam``."""
    scorers = select(fits, family=family, grid="matched")
    return scorers + select(cs_default(fits, lam), family=family)


def ranking(fits: Sequence[FitRow], family: str, lam: float) -> list[tuple[str, float, float]]:
    """(method, mean held-out AUROC, median held-out d′) at CS's own kept fraction, best first."""
    rows = matched(fits, family, lam)
    out = []
    for method in sorted({r.method for r in rows}):
        mine = select(rows, method=method)
        auroc = mean(mine, lambda r: r.auroc_held)
        dprime = float(np.nanmedian([r.dprime_held for r in mine]))
        out.append((method, auroc, dprime))
    return sorted(out, key=lambda t: (-t[1], -t[2]))


def claim4(fits: Sequence[FitRow], lam: float) -> Verdict:
    """FORCE and CS separate more than ActGrad and SNIP at CS's own kept fraction."""
    rule = (
        f"every scorer is fitted at the kept fraction CS found for the same cluster (λ = {lam:g});"
        " in a family the claim holds if FORCE's and CS's mean held-out AUROCs both exceed "
        f"ActGrad's and SNIP's by more than {TIE} (a tie if within {TIE}); holds if so in every "
        "family, partly if in some or tied; Magnitude and Random are shown for context"
    )
    passed: list[bool] = []
    evidence: list[str] = []
    parts: list[str] = []
    for fam in families(fits):
        ranked = ranking(fits, fam, lam)
        scores = {m: a for m, a, _ in ranked}
        if not {"FORCE", "CS", "ActGrad", "SNIP"} <= set(scores):
            continue
        margin = min(scores["FORCE"], scores["CS"]) - max(scores["ActGrad"], scores["SNIP"])
        mark = "✓" if margin > TIE else "≈" if margin >= -TIE else "✗"
        passed.append(mark == "✓")
        parts.append(f"{fam} {mark} (margin {margin:+.3f})")
        evidence.append(
            f"{mark} {fam} (mean held-out AUROC, median d′): "
            + ", ".join(f"{m} {a:.3f} ({d:.2f})" for m, a, d in ranked)
        )
    status = _status(passed)
    if status == NOT and any("≈" in p for p in parts):
        status = PARTLY
    summary = "min(FORCE, CS) − max(ActGrad, SNIP): " + "; ".join(parts)
    return Verdict(4, status, summary, rule, evidence)


def held_gap(row: FitRow) -> float:
    """1 if the held-out AUROC is at least CHANGE below the fitted one."""
    return float(row.auroc_fit - row.auroc_held >= CHANGE)


def outside_drop(row: FitRow) -> float:
    """1 if the AUROC of held-out members vs other concepts dropped by at least CHANGE."""
    return float(row.out_before - row.out_after >= CHANGE)


def changed(row: FitRow) -> float:
    """1 if a subnetwork behaves differently outside its fitting crops (either test)."""
    return float(held_gap(row) or outside_drop(row))


def _counts(rows: Sequence[FitRow]) -> tuple[int, int, int]:
    """How many of ``rows`` changed, had a held-out gap, an outside drop."""
    n, gap, out = (int(sum(f(r) for r in rows)) for f in (changed, held_gap, outside_drop))
    return n, gap, out


def claim5(fits: Sequence[FitRow], lam: float) -> Verdict:
    """Some CS subnetworks that separate their fitting crops change behaviour outside them."""
    rule = (
        f"among subnetworks with fitted AUROC ≥ {SEPARATES}, one changes behaviour outside its "
        f"fitting set if its AUROC on held-out crops of the same clusters is ≥ {CHANGE} below "
        f"the fitted one (gap), or if its AUROC of held-out members vs images of other concepts "
        f"drops by ≥ {CHANGE} from the original network's (outside); holds if at least one CS "
        f"subnetwork (λ = {lam:g}) does. Compared with every scorer at the same kept fraction"
    )
    evidence = []
    for fam in families(fits):
        rows = matched(fits, fam, lam)
        parts = []
        for method in ["CS", *sorted({r.method for r in rows} - {"CS"})]:
            ok = [r for r in select(rows, method=method) if r.auroc_fit >= SEPARATES]
            n, gap, out = _counts(ok)
            parts.append(f"{method} {n}/{len(ok)} (gap {gap}, outside {out})")
        evidence.append(f"{fam}, changed / separating on the fitting crops: " + ", ".join(parts))
    cs = [r for r in cs_default(fits, lam) if r.auroc_fit >= SEPARATES]
    n, gap, out = _counts(cs)
    status = UNTESTED if not cs else HOLDS if n else NOT
    heur = [
        r for r in select(fits, grid="matched") if r.method in HEURISTICS
        if r.auroc_fit >= SEPARATES
    ]  # fmt: skip
    summary = (
        f"{n}/{len(cs)} CS subnetworks that separate their fitting crops change outside them "
        f"({gap} held-out gap, {out} other-concept drop); ActGrad, SNIP and FORCE at the same "
        f"kept fraction: {int(sum(map(changed, heur)))}/{len(heur)}"
    )
    return Verdict(5, status, summary, rule, evidence)


def claim6(pairs: Sequence[PairRow], clustering: Sequence[ClusteringRow], lam: float) -> Verdict:
    """No CS pair overlaps significantly more than independence (Bonferroni over the pairs)."""
    rows = select(pairs, method="CS", grid="lam", setting=float(lam))
    n = len(rows)
    rule = (
        f"pp.evaluation.overlap's p-value is the chance of an intersection at least as large under "
        f"independence; holds if no CS pair (λ = {lam:g}) has p < {ALPHA}/{max(n, 1)} "
        f"(Bonferroni), does not hold if at least half have p < {ALPHA}, partly otherwise"
    )
    if not rows:
        return Verdict(6, UNTESTED, "no CS pairs", rule)
    bonferroni = sum(r.p_value < ALPHA / n for r in rows)
    nominal = sum(r.p_value < ALPHA for r in rows)
    status = HOLDS if bonferroni == 0 else NOT if nominal >= n / 2 else PARTLY
    evidence = []
    for fam in families(pairs):
        for method in ["CS", *sorted({r.method for r in select(pairs, grid="matched")})]:
            mine = (
                select(rows, family=fam)
                if method == "CS"
                else select(pairs, family=fam, grid="matched", method=method)
            )
            if mine:
                evidence.append(f"{fam}, {method}{' (matched)' if method != 'CS' else ''}: "
                                + overlap_text(mine))  # fmt: skip
    truth = [r for r in clustering if r.truth_iou is not None]
    if truth:
        shared = [
            (r.shared, r.shared_in_circuits)
            for r in rows
            if r.shared is not None and r.shared_in_circuits is not None
        ]
        n_shared = sum(s for s, _ in shared)
        in_circuits = sum(c for _, c in shared) / n_shared if n_shared else 0
        evidence.append(
            f"planted truth circuits: IoU {mean(truth, lambda r: r.truth_iou):.3f} vs expected "
            f"{mean(truth, lambda r: r.truth_expected_iou):.3f} (disjoint by construction), so "
            "on the planted network any excess overlap is the method's, not the network's: the "
            f"CS pairs share {n_shared} kernels, {in_circuits:.0%} of them in one of the two "
            "true circuits (each used by one concept only)"
        )
    effective = sum(r.eff_p_value < ALPHA for r in rows)
    summary = (
        f"CS: {nominal}/{n} pairs overlap more than independence (p < {ALPHA}); IoU "
        f"{mean(rows, lambda r: r.iou):.3f} vs expected "
        f"{mean(rows, lambda r: r.expected_iou):.3f}; "
        f"effective masks (kernels on an input→unit path): {effective}/{n}"
    )
    return Verdict(6, status, summary, rule, evidence)


def overlap_text(rows: Sequence[PairRow]) -> str:
    """IoU vs expected (raw and effective masks) and the count of significant pairs."""
    sig = sum(r.p_value < ALPHA for r in rows)
    eff = sum(r.eff_p_value < ALPHA for r in rows)

    def num(value: Callable[[PairRow], float]) -> str:
        return fmt(mean(rows, value), math.nan, 3)

    return (
        f"IoU {num(lambda r: r.iou)} vs expected {num(lambda r: r.expected_iou)}, "
        f"{sig}/{len(rows)} with p < {ALPHA}; effective masks IoU {num(lambda r: r.eff_iou)} vs "
        f"{num(lambda r: r.eff_expected_iou)}, {eff}/{len(rows)} with p < {ALPHA}"
    )


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: its number, its statement, and the check that gives its verdict."""

    number: int
    statement: str
    check: Callable[[Results], Verdict]


def _lam(results: Results) -> float:
    return float(results.config.cs_lam)


#: The paper's claims, in report order: a new claim is one more entry.
CLAIMS: tuple[Claim, ...] = (
    Claim(1, "Clustering the top activations reveals the unit's separate concepts.",
          lambda res: claim1(res.clustering)),
    Claim(2, "Heuristic scorers (ActGrad, SNIP, FORCE) stop working below 10 % kept.",
          lambda res: claim2(res.fits, res.clustering)),
    Claim(3, "CS finds subnetworks at 3–7 % kept that still separate.",
          lambda res: claim3(res.fits, _lam(res), res.clustering)),
    Claim(4, "FORCE and CS separate the distributions most.",
          lambda res: claim4(res.fits, _lam(res))),
    Claim(5, "CS sometimes changes behaviour on images outside its fitting set.",
          lambda res: claim5(res.fits, _lam(res))),
    Claim(6, "The subnetworks of one unit's concepts overlap no more than independence predicts.",
          lambda res: claim6(res.pairs, res.clustering, _lam(res))),
)  # fmt: skip


def statement(number: int) -> str:
    """The statement of claim ``number``."""
    return next(c.statement for c in CLAIMS if c.number == number)


def verdicts(results: Results) -> list[Verdict]:
    """The verdict on every claim of :data:`CLAIMS`, from a run's rows."""
    return [claim.check(results) for claim in CLAIMS]
