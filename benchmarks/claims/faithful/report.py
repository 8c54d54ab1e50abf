"""The Markdown report of a run: tables per setting, pooled, goals met, the zoo models."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import polyprune as pp

from ..config import (
    GOAL_AUROC,
    GOAL_F1,
    GOAL_KEPT,
    GOAL_R,
    OBJECTIVES,
)
from ..report import versions
from ..rows import FitRow
from ..stats import fmt, fmt_stats, select, stats
from ..tables import goal_cells, goal_header, kept_ratio, objective_name, table
from .config import COMMAND, FaithfulConfig, Rows
from .methods import BACKGROUND, BACKGROUND_ARM
from .recovery import gap_table, goal_lines, identifiability_table, roc_figure, roc_table


def _objective(loss: str) -> Callable[[Sequence[FitRow]], list[FitRow]]:
    return lambda rows: select(rows, grid="objective", loss=loss)


#: The arms of a table: name and the rows' selection (the true circuit, then the paper's).
def _method(name: str) -> Callable[[Sequence[FitRow]], list[FitRow]]:
    return lambda rows: select(rows, grid="method", method=name)


#: Issue 23's methods beside CS (``FaithfulConfig.methods``).
METHODS = ("ablation", "ablation sequential", "attribution", BACKGROUND_ARM)
ARMS: tuple[tuple[str, Callable[[Sequence[FitRow]], list[FitRow]]], ...] = (
    ("truth", lambda rows: select(rows, grid="truth")),
    *((objective_name(loss), _objective(loss)) for loss in OBJECTIVES),
    *((name, _method(name)) for name in METHODS),
)
#: The default method the goals refer to.
DEFAULT = objective_name("both")
#: The planted table's columns: name and value of a subnetwork.
PLANTED_COLUMNS: tuple[tuple[str, Callable[[FitRow], float | None]], ...] = (
    ("ROC AUC", lambda r: r.roc_auc),
    ("F1", lambda r: r.f1),
    ("eff. F1", lambda r: r.eff_f1),
    ("P", lambda r: r.precision),
    ("R", lambda r: r.recall),
    ("held-out AUROC", lambda r: r.auroc_held),
    ("r (held-out)", lambda r: r.r_held),
    ("rel. error", lambda r: r.rel_err_held),
    ("act. kept", lambda r: r.act_kept_held),
    ("kept / true kept", kept_ratio),
)
#: The trained table's columns (``kept`` as a percentage).
TRAINED_COLUMNS: tuple[tuple[str, Callable[[FitRow], float | None]], ...] = (
    ("kept", lambda r: r.kept),
    ("held-out AUROC", lambda r: r.auroc_held),
    ("fitted AUROC", lambda r: r.auroc_fit),
    ("r (held-out)", lambda r: r.r_held),
    ("rel. error", lambda r: r.rel_err_held),
    ("act. kept", lambda r: r.act_kept_held),
)


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.1f} %" if math.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f} %"


def case_means(
    rows: Sequence[FitRow],
    value: Callable[[FitRow], float | None],
    key: Callable[[FitRow], str] = lambda r: r.case,
) -> dict[str, float]:
    """The mean of ``value`` over each case's subnetworks, by ``key`` (NaN and None left out)."""
    cases: dict[str, list[float]] = {}
    for r in rows:
        got = value(r)
        if got is not None and not math.isnan(got):
            cases.setdefault(key(r), []).append(float(got))
    return {k: float(np.mean(v)) for k, v in cases.items()}


def per_case(rows: Sequence[FitRow], value: Callable[[FitRow], float | None]) -> list[float]:
    """The mean of ``value`` over each case's subnetworks (NaN and None left out)."""
    return list(case_means(rows, value).values())


def _pooled(rows: Sequence[FitRow], value: Callable[[FitRow], float | None]) -> str:
    values = per_case(rows, value)
    if not values:
        return "–"
    return fmt(
        float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    )


def planted_table(fits: Sequence[FitRow], settings: Sequence[str]) -> list[str]:
    """Per setting and arm: mean ± std over seeds (each seed: the mean over its clusters)."""
    out = []
    for setting in settings:
        for name, selection in ARMS:
            rows = selection(select(fits, family=setting))
            if rows:
                seeds = len({r.seed for r in rows})
                out.append([setting, name, str(seeds),
                            *(fmt_stats(rows, value) for _, value in PLANTED_COLUMNS)])  # fmt: skip
    return table(["setting", "objective", "seeds", *(n for n, _ in PLANTED_COLUMNS)], out)


def pooled_table(fits: Sequence[FitRow]) -> list[str]:
    """Per arm: mean ± std over every setting × seed case (each: the mean over its clusters)."""
    out = []
    for name, selection in ARMS:
        rows = selection(fits)
        if rows:
            out.append([name, str(len({r.case for r in rows})),
                        *(_pooled(rows, value) for _, value in PLANTED_COLUMNS)])  # fmt: skip
    return table(["objective", "cases", *(n for n, _ in PLANTED_COLUMNS)], out)


def goals_table(fits: Sequence[FitRow], settings: Sequence[str]) -> list[str]:
    """Per arm, pooled and per setting: subnetworks meeting each goal of issue 15."""
    out = []
    for name, selection in ARMS:
        rows = selection(fits)
        if rows:
            out.append([name, "all", *goal_cells(rows)])
    for setting in settings:
        for name, selection in ARMS[1:]:
            rows = selection(select(fits, family=setting))
            if rows:
                out.append([name, setting, *goal_cells(rows)])
    return table(["objective", "setting", *goal_header()], out)


def trained_table(fits: Sequence[FitRow], models: Sequence[str]) -> list[str]:
    """Per model and objective: mean ± std over seeds."""
    out = []
    for model in models:
        for name, selection in ARMS[1:]:
            rows = selection(select(fits, family=model))
            if not rows:
                continue
            cells = [
                _pct(*stats(rows, value)[:2]) if label == "kept" else fmt_stats(rows, value)
                for label, value in TRAINED_COLUMNS
            ]
            out.append([model, name, str(len({r.seed for r in rows})), *cells])
    return table(["model", "objective", "seeds", *(n for n, _ in TRAINED_COLUMNS)], out)


def _mean(rows: Sequence[FitRow], value: Callable[[FitRow], float | None]) -> float:
    return stats(rows, value)[0]


def findings(fits: Sequence[FitRow], settings: Sequence[str], models: Sequence[str]) -> list[str]:
    """Computed statements: the best setting per objective, the truth's r, the zoo's changes."""
    lines = []
    planted = [r for r in fits if r.family in settings]
    for name, selection in ARMS[1:]:
        means = [(_mean(selection(select(planted, family=s)), lambda r: r.f1), s)
                 for s in settings]  # fmt: skip
        means = [(m, s) for m, s in means if not math.isnan(m)]
        if means:
            best, where = max(means)
            lines.append(f"{name}: best setting mean F1 {best:.2f} ({where}), worst "
                         f"{min(means)[0]:.2f} ({min(means)[1]})")  # fmt: skip
    truth = ARMS[0][1](planted)
    if truth:
        r_values = [r.r_held for r in truth if r.r_held is not None]
        lines.append(
            f"the true circuits themselves: held-out r {_pooled(truth, lambda r: r.r_held)} "
            f"(pooled over cases), r ≥ {GOAL_R:g} in {sum(r >= GOAL_R for r in r_values)}/"
            f"{len(truth)} subnetworks; relative error {_pooled(truth, lambda r: r.rel_err_held)}"
        )
    for model in models:
        mine = select(fits, family=model)
        parts = []
        for name, selection in ARMS[1:]:
            rows = selection(mine)
            if rows:
                parts.append(
                    f"{name} kept {_pct(_mean(rows, lambda r: r.kept), math.nan)}, held-out "
                    f"AUROC {_mean(rows, lambda r: r.auroc_held):.2f}, r "
                    f"{_mean(rows, lambda r: r.r_held):.2f}, rel. error "
                    f"{_mean(rows, lambda r: r.rel_err_held):.2f}"
                )
        if parts:
            lines.append(f"{model}: " + "; ".join(parts))
    return [f"- {line}." for line in lines]


def _describe(method: str) -> str:
    if method == "ablation":
        return ("`ablation` (ACDC: kernels visited from the unit back, removed when the `both` "
                f"objective moves by at most τ = {pp.ablation.DEFAULT_TAU:g}, its default, chosen "
                "on planted seeds 0–4, and stays within the drift budget "
                f"{pp.ablation.DEFAULT_BUDGET:g} of the lowest reached; zero ablation)"
                )  # fmt: skip
    if method == "ablation sequential":
        return ("`ablation sequential` (the same with `Ablation(sequential=True)`: one candidate "
                "decided at a time, ACDC's rule, no batch removed as a whole)")  # fmt: skip
    if method == BACKGROUND_ARM:
        return (
            f"`{BACKGROUND_ARM}` (CS with `both`, its non-members the other clusters' crops "
            f"and {BACKGROUND} crops of images outside the top-k, drawn at random, cropped "
            "at the unit's position: the unit's silence on what it does not fire on most)"
        )
    if method == "attribution":
        return ("`attribution` (EAP: |first-order effect of removing each kernel| on the "
                "cluster's crops; cut at the kept fraction of CS with `both`)")  # fmt: skip
    return f"`{method}`"


def header(cfg: FaithfulConfig, argv: Sequence[str], seconds: float, parts: int = 1) -> list[str]:
    """Title, how the file was generated, and the protocol."""
    command = shlex.join([*COMMAND, *argv])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    defaults = "; ".join(
        f"`{loss}`: λ = {c.penalty_weight:g}, lr {c.learning_rate:g}, fade {c.fade_fraction:g}, "
        f"{c.epochs} epochs"
        for loss in cfg.objectives
        for c in [cfg.cs_config(loss)]
    )
    settings = "; ".join(
        f"**{s.name}**: seeds {', '.join(map(str, s.seeds))}, "
        f"{'/'.join(s.pair) if s.pair else 'PLANTED_PAIRS[seed % 3]'}, {s.distractors} "
        f"distractors, cross {s.cross:g}"
        + (", `identifiable=True` (gated, pruned detectors)" if s.identifiable else "")
        for s in cfg.settings
    )
    return [
        "# Faithful subnetworks on untuned planted settings and the zoo models",
        "",
        f"<!-- Generated by {shlex.join(COMMAND)}. Do not edit by hand: rerun the command below. "
        "-->",
        "",
        f"Generated by `{command}` on {now} in {seconds / 60:.1f} min wall time "
        + (
            f"(summed over {parts} parts run by setting and merged with `--report`; "
            if parts > 1
            else "("
        )
        + f"{torch.get_num_threads()} torch thread(s)); {versions()}. Do not edit by hand: "
        "rerun the command.",
        "",
        "Issue 15 asked for subnetworks that compute what the unit computes, not only separate "
        "its meanings. Goals for one cluster's subnetwork, on planted networks with seeds and "
        f"settings not used for tuning: kernel F1 ≥ {GOAL_F1:g} against the true circuit of the "
        f"cluster's concept, held-out AUROC ≥ {GOAL_AUROC:g}, Pearson r ≥ {GOAL_R:g} of the "
        "subnetwork's activation to the original on held-out members, kept fraction ≤ "
        f"{GOAL_KEPT:g} × the true circuit's. The λ sweeps of every objective, beside every "
        "scorer, on the claims benchmark's cases: [results.md](results.md#circuit-recovery).",
        "",
        "## Protocol",
        "",
        "- **Objectives** (`pp.CSConfig(loss=...)` with its own defaults): "
        f"{defaults}. `separate` is the paper's (BCE of the activation as a logit of "
        "membership); `preserve` reproduces the unit's activation on the cluster; `both` "
        "(fit_subnetwork's default) reproduces it on the cluster and pushes it to 0 on the "
        "other clusters. **truth**: the planted circuit of the cluster's concept, evaluated "
        "as a subnetwork (the reference).",
        f"- **Planted settings** (tuned on: seeds 0–2, default pairs, 2 distractors, cross 1): "
        f"{settings}. Images `zoo.concept_images({cfg.planted_images}, size=32, seed=1000 + "
        f"seed)`, top-{cfg.planted_k} receptive-field crops of the planted unit.",
        f"- **Trained models**: {', '.join(cfg.models) or 'none'}, seeds "
        f"{', '.join(map(str, cfg.model_seeds))} (the held-out split and the CS batch order); "
        f"images `zoo.demo_data` (as `polyprune demo`), top-{cfg.trained_k}; the unit is the "
        "model card's.",
        "- **Methods beside CS** (issue 23): "
        + (", ".join(_describe(m) for m in cfg.methods) or "none (`--methods`)")
        + ". Every method's masks are effective (kernels on a kept input→unit path).",
        "- **Pipeline**: as the claims benchmark's (`pp.study(..., methods=())`: HDBSCAN "
        "clusters, 20 % of each cluster held out; one subnetwork per cluster, members: the "
        "cluster, non-members: the other clusters' crops, noise excluded).",
        "- **Measures**: kernel F1, precision P and recall R against the true circuit "
        "(`pp.evaluation.circuit_scores`; eff. F1 on `Masks.effective`); held-out AUROC "
        "(cluster vs the other clusters, `pp.evaluate`); on the cluster's held-out crops, "
        "Pearson r, relative error ‖a_sub − a‖/‖a‖ and activation kept mean(a_sub)/mean(a); "
        "kept fraction (DESIGN count) over the true circuit's.",
        "- Tables: mean ± std over seeds of each seed's mean over its clusters (sample std); "
        "pooled: over setting × seed cases; goals: counts of subnetworks.",
        "",
    ]


def recovery_section(rows: Rows, settings: Sequence[str], figure: Path | None) -> list[str]:
    """Issue 23: goals, threshold-free recovery (table and figure), identifiability."""
    planted = [r for r in rows.fits if r.family in settings]
    lines = ["## Circuit recovery: goals (issue 23)", ""]
    lines += [*goal_lines(planted, rows.identifiability, ARMS[1:], DEFAULT), ""]
    lines += ["## Threshold-free recovery (kernel ROC AUC)", "",
              "ROC AUC over each method's own threshold: CS's final mask logits, ablation's "
              "effect sizes (the objective change when a kernel was visited), a scorer's scores. "
              "F1, P, R at the default operating point (CS: its hard masks; ablation: its "
              "default τ; attribution: cut at the kept fraction of CS with `both`). rel. error − "
              "truth's: the method's held-out relative error minus the true circuit's; time: the "
              "mean fit time over CS with `both`'s, the same cases.", "",
              *roc_table(planted, settings, ARMS[1:]), ""]  # fmt: skip
    if figure is not None and roc_figure(planted, settings, ARMS[1:], figure):
        lines += [f"![kernel-recovery ROC curves per setting](img/{figure.name})", ""]
    if rows.identifiability:
        lines += ["## Identifiability of the planted circuits", "",
                  "Per cluster with a planted circuit, on its fitting crops: the `both` objective "
                  "(lower is better) of the true circuit, and the lowest any fitted subnetwork "
                  "reached; the effect of removing each circuit kernel alone. A *free* kernel's "
                  "removal does not worsen the objective: no method that optimizes it can be "
                  "asked to keep it, so it bounds the recall any method can reach. The last "
                  "four columns measure the same in the context of the default method's own "
                  "subnetwork S instead of the true circuit's: each kernel's marginal effect in "
                  "S (the gain of putting a missed kernel back alone, the cost of removing a kept "
                  "one alone); the F1 that the single-kernel moves the objective rewards reach, "
                  "an oracle taking only those on the circuit's side, and all of them.", "",
                  *identifiability_table(rows.identifiability, settings), ""]  # fmt: skip
        lines += ["## Whose gap: the method's or the ground truth's", "",
                  "The default method's F1 gap 1 − F1, split: the ground truth's part is what "
                  "no optimizer of the objective can close (its F1 ceiling: precision 1, recall "
                  "1 − the share of free circuit kernels); the method's part is the rest. On the "
                  "identifiable setting the ceiling is 1 by construction.", "",
                  *gap_table(planted, rows.identifiability, settings, ARMS[1:], DEFAULT),
                  ""]  # fmt: skip
    return lines


def render(
    rows: Rows, argv: Sequence[str], seconds: float, figure: Path | None = None, parts: int = 1
) -> str:
    """The Markdown report of ``rows`` (the ROC figure written to ``figure`` if given)."""
    cfg = rows.config
    settings = [s.name for s in cfg.settings if select(rows.fits, family=s.name)]
    models = [m for m in cfg.models if select(rows.fits, family=m)]
    planted = [r for r in rows.fits if r.family in settings]
    lines = header(cfg, argv, seconds, parts)
    lines += ["## Findings", "", *findings(rows.fits, settings, models), ""]
    if settings:
        lines += recovery_section(rows, settings, figure)
    if settings:
        lines += ["## Planted networks, per setting", "", *planted_table(rows.fits, settings), ""]
        lines += ["## Pooled over the settings", "", *pooled_table(planted), ""]
        lines += ["## Goals met (subnetworks)", "", *goals_table(planted, settings), ""]
    if models:
        lines += ["## Trained zoo models", "", *trained_table(rows.fits, models), ""]
    no_truth = [r for r in planted if r.grid == "objective" and r.f1 is None]
    if rows.skipped or no_truth:
        lines += ["## Left out", ""]
        lines += [f"- {case}: {why}" for case, why in rows.skipped.items()]
        lines += [
            f"- {r.case} cluster {r.cluster} ({objective_name(r.loss)}): its majority "
            f"{r.concept} has no planted circuit, no F1"
            for r in no_truth
        ]
        lines += [""]
    return "\n".join(lines).rstrip() + "\n"
