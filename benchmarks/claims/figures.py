"""The report's figures: a grid of :class:`Panel` s, each a measure of the subnetworks against
their kept fraction, one line per scorer and CS as one point per λ (mean ± std over seeds); in
the circuit figure, CS with each objective and the true circuit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import PAPER_RANGE
from .rows import FitRow
from .stats import in_family, select, stats

METHOD_ORDER = ("ActGrad", "SNIP", "FORCE", "Magnitude", "Random", "CS")
COLORS = {"ActGrad": "C0", "SNIP": "C1", "FORCE": "C2", "Magnitude": "C7", "Random": "C5",
          "CS": "C3"}  # fmt: skip


def ordered(methods: set[str]) -> list[str]:
    """Methods in report order (unknown ones last, sorted)."""
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


@dataclass(frozen=True)
class Panel:
    """One panel: ``value`` of ``family``'s subnetworks against their kept fraction.

    ``band``: shade ± std over seeds (off for shares, where a seed has few subnetworks);
    ``threshold``: a dashed horizontal line at this value; ``ylim``: the y range (None: what
    the data need).
    """

    family: str
    value: Callable[[FitRow], float | None]
    label: str
    band: bool = True
    threshold: float | None = None
    ylim: tuple[float, float] | None = (-0.03, 1.03)


def _kept(row: FitRow) -> float:
    return row.kept


def _curve(ax: Any, fits: Sequence[FitRow], method: str, panel: Panel) -> None:
    rows = select(fits, method=method, grid="keep")
    keeps = sorted({r.setting for r in rows})
    kept = [stats(select(rows, setting=k), _kept)[0] for k in keeps]
    m_s = [stats(select(rows, setting=k), panel.value)[:2] for k in keeps]
    mean = np.array([m for m, _ in m_s])
    std = np.nan_to_num(np.array([s for _, s in m_s]))
    ax.plot(kept, mean, "-o", ms=3, color=COLORS.get(method), label=method)
    if panel.band:
        ax.fill_between(kept, mean - std, mean + std, color=COLORS.get(method), alpha=0.08, lw=0)


def _cs_points(ax: Any, fits: Sequence[FitRow], panel: Panel) -> None:
    rows = select(fits, method="CS", grid="lam")
    lams = sorted({r.setting for r in rows})
    for i, lam in enumerate(lams):
        mine = select(rows, setting=lam)
        (x, xs, _), (y, ys, _) = stats(mine, _kept), stats(mine, panel.value)
        label = "CS (one point per λ)" if i == 0 else None
        ax.errorbar(
            x, y, xerr=np.nan_to_num(xs), yerr=np.nan_to_num(ys) if panel.band else None,
            fmt="D", ms=5, color=COLORS["CS"], label=label, lw=0.8,
        )  # fmt: skip
        if lam in (lams[0], lams[-1]):  # larger λ, smaller kept fraction: label the ends
            ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(-8, -12),
                        fontsize=7)  # fmt: skip


#: The CS objectives of the circuit figure: marker and colour (the paper's as the other
#: figures draw CS).
OBJECTIVE_STYLE = {"separate": ("D", COLORS["CS"]), "both": ("s", "C4"), "preserve": ("^", "C9")}


def _objective_points(ax: Any, fits: Sequence[FitRow], loss: str, panel: Panel) -> None:
    """CS with objective ``loss``: one point per λ (± std over seeds), joined by a line."""
    rows = (
        select(fits, method="CS", grid="lam")
        if loss == "separate"
        else select(fits, method="CS", grid="objective", loss=loss)
    )
    lams = sorted({r.setting for r in rows})
    if not lams:
        return
    points = [(stats(select(rows, setting=lam), _kept), stats(select(rows, setting=lam),
               panel.value)) for lam in lams]  # fmt: skip
    marker, color = OBJECTIVE_STYLE.get(loss, ("o", "C8"))
    name = f"CS {loss}{' (paper)' if loss == 'separate' else ''}, one point per λ"
    ax.plot([x for (x, _, _), _ in points], [y for _, (y, _, _) in points], "-", color=color,
            lw=0.8, alpha=0.6)  # fmt: skip
    for i, ((x, xs, _), (y, ys, _)) in enumerate(points):
        ax.errorbar(x, y, xerr=np.nan_to_num(xs), yerr=np.nan_to_num(ys), fmt=marker, ms=5,
                    color=color, label=name if i == 0 else None, lw=0.8)  # fmt: skip
    # each objective's labels on their own side (above, below, …) so that neighbouring
    # objectives' end points, often close, do not print their λ over each other
    rank = list(OBJECTIVE_STYLE).index(loss) if loss in OBJECTIVE_STYLE else len(OBJECTIVE_STYLE)
    dy = (-11, 5, -19, 13)[rank % 4]
    for lam, ((x, _, _), (y, _, _)) in zip(lams, points, strict=True):
        if lam in (lams[0], lams[-1]) and len(lams) > 1:
            # the smallest λ keeps the most: the rightmost point, labelled to its right
            dx, ha = (5, "left") if lam == lams[0] else (-5, "right")
            ax.annotate(f"λ={lam:g}", (x, y), textcoords="offset points", xytext=(dx, dy),
                        fontsize=6, color=color, ha=ha)  # fmt: skip


def _truth_point(ax: Any, fits: Sequence[FitRow], panel: Panel) -> None:
    rows = select(fits, grid="truth")
    if rows:
        (x, xs, _), (y, ys, _) = stats(rows, _kept), stats(rows, panel.value)
        ax.errorbar(x, y, xerr=np.nan_to_num(xs), yerr=np.nan_to_num(ys), fmt="*", ms=11,
                    color="k", label="true circuit", lw=0.8)  # fmt: skip


def _axes(ax: Any, panel: Panel) -> None:
    """What every panel has: log x, the paper's range, 10 % kept, threshold, range, labels."""
    ax.set_xscale("log")
    ax.axvspan(*PAPER_RANGE, color="0.85", alpha=0.6, lw=0, label="paper's CS range 3–7 %")
    ax.axvline(0.1, color="0.4", ls=":", lw=1)
    if panel.threshold is not None:
        ax.axhline(panel.threshold, color="0.4", ls="--", lw=0.8)
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.set_title(panel.family, fontsize=10)
    ax.set_xlabel("kept fraction (DESIGN count, log scale)", fontsize=8)
    ax.set_ylabel(panel.label, fontsize=8)


def _percent_ticks(ax: Any) -> None:
    """Kept fractions as percentages at 1-2-5 steps (a narrow log range has no decade tick)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, PercentFormatter

    ax.xaxis.set_major_locator(FixedLocator([0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.xaxis.set_minor_formatter(NullFormatter())


def figure(
    fits: Sequence[FitRow],
    path: Path,
    panels: Sequence[Sequence[Panel]],
    objectives: Sequence[str] = (),
) -> Path:
    """Draw a grid of panels (one list per row of the grid) and save it as ``path``.

    Each panel: every scorer's line (grid ``"keep"``) and, without ``objectives``, CS (the
    paper's objective) as one point per λ; with ``objectives``, CS with each of them as a line
    of points per λ, and the true circuit where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.6 * n_rows), squeeze=False)
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            ax, rows = axes[r][c], in_family(fits, panel.family)
            for method in ordered({f.method for f in select(rows, grid="keep")}):
                _curve(ax, rows, method, panel)
            if objectives:
                for loss in objectives:
                    _objective_points(ax, rows, loss, panel)
                _truth_point(ax, rows, panel)
            else:
                _cs_points(ax, rows, panel)
            _axes(ax, panel)
            if objectives:
                _percent_ticks(ax)
        for c in range(len(row), n_cols):
            axes[r][c].set_visible(False)
    if objectives:  # one legend for all panels, below them (panels differ in their entries)
        handles: dict[str, Any] = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center",
                   ncol=4)  # fmt: skip
        fig.tight_layout(rect=(0, 0.06 + 0.12 / n_rows, 1, 1))
    else:
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
