"""The verdict benchmark's synthetic codes: null clouds (calibration), two Gaussians (power).

Null clouds: one Gaussian; one multivariate t whose ν matches one meaning's tail weight (the
planted detectors' median PC-1 excess kurtosis on the tuning seeds, ``benchmarks.verdicts.
matched``); one Gaussian whose leading axis is skewed to one meaning's median PC-1 skewness;
one multivariate t with 5 d.o.f., far heavier-tailed than one meaning (a stress test). Each
a random rotation of a power-law spectrum (the j-th variance 1/j).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from polyprune.clustering import significance

from .matched import skewed_rows

ALPHA = 0.05
#: ``matched``: the t cloud with one meaning's tail weight, its ν derived from the tails part
#: (run and saved as ``t<ν>``, e.g. ``t14.1``).
#: ``skewed``: one Gaussian whose leading axis has one meaning's PC-1 skewness (``skew<a>``).
KINDS = ("gauss", "matched", "skewed", "t5", "two")
#: Null datasets per size: 200, so a 5 % rate is measured to ± 1.5 % (sd) and the 2–8 % band
#: means something; a null test mostly stops after 10–60 draws (Besag–Clifford).
NULL_SETS = 200
#: (C, k, datasets for the power): each power test runs all 200 draws (p far below 10 / 200),
#: of 500 × 384 codes at the largest size (about 20 s each on one core), so fewer there.
_CONFIGS = ((64, 100, 40), (384, 100, 40), (64, 1000, 20), (384, 1000, 10))
SIZES = [(kind, c, k, power if kind == "two" else NULL_SETS)
         for kind in KINDS for c, k, power in _CONFIGS]  # fmt: skip
#: The clouds' random streams, ``base + C + k``: the report's, and the tuning run's (``--tuning``),
#: which are other clouds, so a test tuned on the synthetic rows is reported on clouds it has not
#: seen (as the planted networks' tuning and report seeds).
REPORT_BASE, TUNING_BASE = 2200, 100


def cloud(rng: np.random.Generator, n: int, c: int, kind: str) -> NDArray[np.float64]:
    """``n`` codes in ``c`` channels: ``gauss``, ``two`` (two Gaussians), ``t<ν>`` (a
    multivariate t with ν degrees of freedom: ``t5``, ``t14.1``) or ``skew<a>`` (one Gaussian
    whose leading axis is skewed, :func:`matched.skewed_rows`)."""
    rotation = np.linalg.qr(rng.standard_normal((c, c)))[0]
    z = rng.standard_normal((n, c))
    if kind.startswith("skew"):  # the leading axis skewed (one meaning's PC-1 skewness)
        z = skewed_rows(z, float(kind[4:]))
    elif kind not in ("gauss", "two"):  # t<ν>
        nu = float(kind[1:])
        z = z / np.sqrt(rng.chisquare(nu, (n, 1)) / nu)
    codes: NDArray[np.float64] = (z / np.sqrt(np.arange(1, c + 1))) @ rotation
    if kind == "two":
        direction = rng.standard_normal(c)
        codes[: n // 2] += 6.0 * direction / np.linalg.norm(direction)
    return codes


def rates(
    sizes: list[tuple[str, int, int, int]], method: str = "gaussian", base: int = REPORT_BASE
) -> dict[tuple[str, int, int], tuple[int, int]]:
    """(kind, C, k) → (called at alpha, datasets), for each (kind, C, k, datasets), by the
    test ``method`` of ``significance``, on the clouds of the stream ``base + C + k``."""
    out = {}
    for kind, c, k, datasets in sizes:
        rng = np.random.default_rng(base + c + k)
        called = 0
        for i in range(datasets):
            codes = cloud(rng, k, c, kind)
            called += significance(codes, rng.random(k), seed=i, method=method)[1] < ALPHA
        out[(kind, c, k)] = (called, datasets)
        print(f"  {kind:<6} C={c:<4} k={k:<5} {called}/{datasets}", flush=True)
    return out


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({a / b:.1%})" if b else "-"


def interval(a: int, b: int) -> str:
    """``a`` of ``b`` with its exact (Clopper–Pearson) 95 % binomial interval."""
    if not b:
        return "-"
    from scipy.stats import binomtest

    ci = binomtest(a, b).proportion_ci(0.95)
    return f"{_pct(a, b)}, 95 % CI {ci.low:.1%}–{ci.high:.1%}"


def label(kind: str, match: dict[str, float] | None) -> str:
    """The goals table's name of the synthetic codes ``kind``."""
    if kind == "gauss":
        return "one Gaussian"
    if kind == "two":
        return "two Gaussians"
    if kind.startswith("skew"):
        return f"one skewed cloud with one meaning's PC-1 skewness (a = {float(kind[4:]):g})"
    nu = float(kind[1:])
    if match and math.isclose(nu, match["nu"]):
        return f"one cloud with one meaning's tail weight (t, ν = {nu:g})"
    if nu == 5:
        return "stress test, far heavier-tailed than one meaning: one t cloud (5 d.o.f.)"
    return f"one t cloud ({nu:g} d.o.f.)"


def _order(kind: str, match: dict[str, float] | None) -> int:
    """Rows in the order: Gaussian, one meaning's tail weight, other t clouds, two Gaussians."""
    if kind in ("gauss", "two") or kind.startswith("skew"):
        return {"gauss": 0, "two": 4}.get(kind, 2)
    return 1 if match and math.isclose(float(kind[1:]), match["nu"]) else 3


def goal_rows(
    synthetic: dict[tuple[str, int, int], tuple[int, int]], match: dict[str, float] | None
) -> list[str]:
    """The goals table's rows of the synthetic codes, each with its exact 95 % interval."""
    lines = []
    for (kind, c, k), (called, n) in sorted(
        synthetic.items(), key=lambda item: _order(item[0][0], match)
    ):
        if kind == "two":
            goal, ok = "power ≥ 95 %", n and called / n >= 0.95
        else:
            goal, ok = "false positives 2–8 %", n and 0.02 <= called / n <= 0.08
        lines.append(f"| {label(kind, match)}, C = {c}, k = {k}: {goal} | "
                     f"{interval(called, n)} | {'yes' if ok else 'no'} |")  # fmt: skip
    return lines
