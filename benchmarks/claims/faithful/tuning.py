"""Issue 23's rule for choosing CS's defaults on the tuning seeds, applied to saved runs.

Each run is a ``--json`` file of ``python -m benchmarks.claims.faithful --seeds 0 1 2 3 4
--objectives both --methods --models ...`` (one ``--cs`` configuration each); the first is
today's default. A candidate may replace the default only if

- (a) its mean kernel F1 improvement over the default, paired over the setting × seed cases
  (each case: the mean over its clusters), exceeds ``SE_FACTOR`` standard errors;
- (b) its F1 on the ``identifiable`` setting is ≥ ``IDENT_F1``;
- (c) in every setting its mean held-out AUROC is ≥ ``HELD_AUROC`` and its mean rel. error
  minus the true circuit's is ≤ ``REL_MARGIN``;
- (d) its CS fit time is ≤ ``TIME_RATIO`` × the default's (fit seconds summed over the run:
  runs at other times on a shared machine differ by more than that, so compare (d) in one run
  where it matters);

and among those, the highest pooled F1 wins. Usage::

    python -m benchmarks.claims.faithful.tuning BASE.json CAND1.json CAND2.json
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..rows import FitRow
from ..stats import select
from ..tables import table
from .config import Rows
from .report import case_means

SE_FACTOR = 2.0
IDENT_F1 = 0.97
HELD_AUROC = 0.99
REL_MARGIN = 0.03
TIME_RATIO = 1.5


@dataclass(frozen=True)
class Summary:
    """One configuration against the default (``gain``, ``se``: the paired F1 difference)."""

    name: str
    pooled_f1: float
    gain: float
    se: float
    default_pairs_f1: float
    identifiable_f1: float
    worst_rel_margin: float  # max over settings: mean rel. error − the true circuit's
    worst_held_auroc: float  # min over settings
    time_ratio: float
    passes: tuple[bool, bool, bool, bool]  # (a), (b), (c), (d)


def _cases(rows: Sequence[FitRow], value: Callable[[FitRow], float | None]) -> dict[str, float]:
    """The mean of ``value`` over each (setting, case)'s subnetworks."""
    return case_means(rows, value, key=lambda r: f"{r.family}/{r.case}")


def _setting_mean(rows: Sequence[FitRow], family: str, value: Callable[[FitRow], Any]) -> float:
    values = [v for v in _cases([r for r in rows if r.family == family], value).values()]
    return float(np.mean(values)) if values else math.nan


def name_of(rows: Rows) -> str:
    """The configuration's ``--cs`` changes (``default``: none)."""
    return " ".join(f"{k}={v}" for k, v in rows.config.cs) or "default"


def summarize(base: Rows, cand: Rows) -> Summary:
    """``cand`` (CS with ``both``) against ``base`` by the rule of the module."""
    ours, theirs = (select(r.fits, grid="objective", loss="both") for r in (cand, base))
    truth = select(cand.fits, grid="truth")
    f1, f1_base = _cases(ours, lambda r: r.f1), _cases(theirs, lambda r: r.f1)
    keys = sorted(set(f1) & set(f1_base))
    diffs = np.array([f1[k] - f1_base[k] for k in keys])
    se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    settings = sorted({r.family for r in ours})
    rel = [
        _setting_mean(ours, s, lambda r: r.rel_err_held)
        - _setting_mean(truth, s, lambda r: r.rel_err_held)
        for s in settings
    ]
    auroc = [_setting_mean(ours, s, lambda r: r.auroc_held) for s in settings]
    seconds = [sum(r.seconds or 0.0 for r in rows) for rows in (ours, theirs)]
    gain, ident = float(diffs.mean()), _setting_mean(ours, "identifiable", lambda r: r.f1)
    worst_rel, worst_auroc = max(rel), min(auroc)
    ratio = seconds[0] / seconds[1] if seconds[1] > 0 else math.nan
    return Summary(
        name_of(cand), float(np.mean([f1[k] for k in keys])), gain, se,
        _setting_mean(ours, "default pairs", lambda r: r.f1), ident, worst_rel, worst_auroc,
        ratio,
        (gain > SE_FACTOR * se, ident >= IDENT_F1,
         worst_auroc >= HELD_AUROC and worst_rel <= REL_MARGIN, ratio <= TIME_RATIO),
    )  # fmt: skip


def choose(summaries: Sequence[Summary]) -> Summary | None:
    """The passing configuration with the highest pooled F1 (None: none passes)."""
    passing = [s for s in summaries if all(s.passes)]
    return max(passing, key=lambda s: s.pooled_f1) if passing else None


def render(summaries: Sequence[Summary]) -> list[str]:
    """A Markdown table of the summaries and the decision."""
    header = ["config", "pooled F1", "gain ± SE", "default pairs F1", "identifiable F1",
              "rel. error − truth's (worst)", "held-out AUROC (worst)", "time",
              "(a)(b)(c)(d)"]  # fmt: skip
    rows = [
        [s.name, f"{s.pooled_f1:.3f}", f"{s.gain:+.4f} ± {s.se:.4f}", f"{s.default_pairs_f1:.3f}",
         f"{s.identifiable_f1:.3f}", f"{s.worst_rel_margin:+.3f}", f"{s.worst_held_auroc:.3f}",
         f"{s.time_ratio:.2f}×", "".join("✓" if p else "✗" for p in s.passes)]
        for s in summaries
    ]  # fmt: skip
    best = choose(summaries[1:])
    verdict = f"chosen: {best.name}" if best else "none passes: the default stays"
    return [*table(header, rows), "", verdict]


def main(argv: Sequence[str] | None = None) -> list[Summary]:
    """Print the table of the runs named in ``argv`` (the first: today's default)."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if len(paths) < 1:
        raise SystemExit(
            "usage: python -m benchmarks.claims.faithful.tuning BASE.json [CAND.json ...]"
        )
    runs = [Rows.from_dict(json.loads(Path(p).read_text())) for p in paths]
    summaries = [summarize(runs[0], run) for run in runs]
    print("\n".join(render(summaries)), flush=True)
    return summaries


if __name__ == "__main__":
    main()
