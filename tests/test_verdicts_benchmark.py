"""The verdict benchmark (issue 22): its table's 'met' column follows from the numbers, it runs
end to end in --quick mode, and docs/verdicts.md is what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import polyprune as pp
from benchmarks import verdicts
from benchmarks.claims.faithful.config import SETTINGS
from benchmarks.verdicts import matched, synthetic, tails

ROOT = Path(__file__).resolve().parents[1]


def _table(**changes: Any) -> str:
    args: dict[str, Any] = {
        "seeds": (10,),
        "plant": {"default pairs": (19, 20, 1, 2, 40)},
        "synthetic": {
            ("gauss", 64, 100): (10, 200),
            ("t5", 64, 100): (30, 200),
            ("two", 64, 100): (190, 200),
        },
        "models": {"concepts-merged": (True, 0.001)},
        "times": {
            "with": 3.0,
            "without": 2.0,
            "with clustering share": 0.5,
            "without clustering share": 0.3,
        },
        "command": "python -m benchmarks.verdicts --write",
    }
    args.update(changes)
    return verdicts.markdown(**args)


def test_the_met_column_follows_the_numbers() -> None:
    lines = [line.split("|") for line in _table().splitlines() if line.startswith("| ")]
    rows = {cells[1].strip(): cells[3].strip() for cells in lines}
    assert rows["planted unit called (scan, q < 0.05) ≥ 95 %"] == "yes"  # 19/20
    assert rows["monosemantic channels called (scan, q < 0.05) ≤ 5 %"] == "yes"  # 1/40
    assert rows["one Gaussian, C = 64, k = 100: false positives 2–8 %"] == "yes"  # 5 %
    stress = "stress test, far heavier-tailed than one meaning: one t cloud (5 d.o.f.)"
    assert rows[f"{stress}, C = 64, k = 100: false positives 2–8 %"] == "no"  # 15 %
    assert rows["two Gaussians, C = 64, k = 100: power ≥ 95 %"] == "yes"  # 95 %
    assert rows["zoo `concepts-merged`: model card's unit called"] == "yes"
    ratio = next(key for key in rows if key.startswith("scan time"))
    assert rows[ratio] == "yes" and "1.50×" in _table()
    slow = _table(times={"with": 5.0, "without": 2.0, "with clustering share": 0.5,
                         "without clustering share": 0.3})  # fmt: skip
    assert "2.50× (5.0 s vs 2.0 s) | no |" in slow
    # the synthetic rows carry an exact (Clopper–Pearson) 95 % interval: 10/200 → 2.4–9.0 %
    assert "| 10/200 (5.0%), 95 % CI 2.4%–9.0% | yes |" in _table()
    worse = _table(plant={"default pairs": (18, 20, 3, 3, 40)})
    assert "18/20 (90.0%) | no |" in worse and "3/40 (7.5%) | no |" in worse


def test_the_docs_page_was_written_by_the_benchmark() -> None:
    page = (ROOT / "docs" / "verdicts.md").read_text()
    assert "<!-- written by python -m benchmarks.verdicts" in page
    assert (
        "Command: `python -m benchmarks.verdicts --write`. Planted seeds: 10, 11, 12, 13, 14"
        in page
    )


@pytest.mark.slow
def test_quick_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert verdicts.main(["--quick"]) == 0
    out = capsys.readouterr().out
    n = sum(not s.identifiable for s in SETTINGS)  # one network per setting it runs
    assert f"| planted unit called (scan, q < 0.05) ≥ 95 % | {n}/{n} (100.0%) | yes |" in out
    assert "ratio with / without the test" in out


def test_tail_measures_tell_a_gaussian_from_a_t_cloud_and_two_groups() -> None:
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal((20000, 3)) * [3.0, 1.0, 0.5]
    t5 = gauss / np.sqrt(rng.chisquare(5, (20000, 1)) / 5)
    two = gauss + np.where(rng.random((20000, 1)) < 0.5, -8.0, 8.0) * [1.0, 0.0, 0.0]
    g, t, b = tails.measures(gauss), tails.measures(t5), tails.measures(two)
    assert abs(g["kurtosis"]) < 0.15 and abs(g["mardia"] - 1) < 0.05
    assert abs(g["index"] - (1 - 2 / np.pi)) < 0.01  # 1 − (E|X|)² / E[X²] of a Gaussian
    assert t["kurtosis"] > 2 and t["mardia"] > 1.5 and t["spread"] > g["spread"] + 0.1
    assert t["index"] > g["index"] + 0.05
    assert b["kurtosis"] < -1 and b["index"] < 0.2


def test_the_tail_section_says_where_the_detectors_lie() -> None:
    def summary(*medians: float) -> dict[str, Any]:
        return {
            key: (m, m - 0.1, m + 0.1) for (key, _), m in zip(tails.MEASURES, medians, strict=True)
        }

    found = {
        "monosemantic": (145, summary(0.4, 1.1, 0.34, 0.37, 0.33)),
        "planted": (35, summary(-1.5, 1.1, 0.36, 0.1, 0.2)),
        "gauss": (200, summary(0.0, 1.0, 0.32, 0.36, 0.13)),
        "t5": (200, summary(2.0, 1.6, 0.5, 0.46, 0.13)),
    }
    text = "\n".join(tails.section(found, (0, 1), 300))
    assert "| planted monosemantic detectors | 145 | 0.40 [0.30, 0.50] |" in text
    assert "PC-1 excess kurtosis 20%" in text and "mildly heavier-tailed" in text
    found["monosemantic"] = (145, summary(1.5, 1.1, 0.34, 0.37, 0.33))  # 75 % of the way to t5
    assert "at least half-way" in "\n".join(tails.section(found, (0, 1), 300))
    page = _table(tails=found)
    assert "## What one meaning looks like" in page and "## Why the null stays one" in page


def test_the_matched_nu_is_derived_from_the_measured_kurtosis() -> None:
    # the detectors' measurement stood in for by t clouds of known ν at the detectors' size
    # (150 codes × 5 channels), drawn as the benchmark draws them, with other random numbers
    rng = np.random.default_rng(7)
    for nu, low, high in ((8.0, 6.5, 10.0), (20.0, 14.0, 30.0)):  # the kurtosis matched
        rows = [tails.measures(synthetic.cloud(rng, 150, 5, f"t{nu}")) for _ in range(400)]
        target = float(np.median([r["kurtosis"] for r in rows]))
        assert low < matched.matched_nu(target, 150, 5) < high
    assert matched.matched_nu(-1.0, 150, 5) == matched.NU_MAX  # lighter than any t
    assert matched.matched_nu(50.0, 150, 5) == matched.NU_MIN
    with pytest.raises(ValueError, match="target"):
        matched.matched_nu(float("nan"), 150, 5)


def test_the_skewed_cloud_s_a_is_derived_from_the_measured_skewness() -> None:
    rng = np.random.default_rng(8)
    a = 0.3  # clouds of known skewness at the detectors' size, drawn as the benchmark draws them
    rows = [tails.measures(synthetic.cloud(rng, 150, 5, f"skew{a}")) for _ in range(400)]
    target = float(np.median([r["skewness"] for r in rows]))
    assert 0.22 < matched.matched_skew(target, 150, 5) < 0.4
    assert matched.matched_skew(0.0, 150, 5) == 0.0  # no more skewed than a Gaussian
    x = matched.skewed_rows(rng.standard_normal((200000, 2)), 0.3)
    assert abs(x[:, 0].mean()) < 0.01 and abs(x[:, 0].var() - 1) < 0.03  # rescaled
    assert np.all(np.diff(matched.skewed_rows(np.linspace(-3, 3, 50)[:, None], 0.5)[:, 0]) > 0)


def _tails(kurtosis: float) -> dict[str, Any]:
    def summary(*medians: float) -> dict[str, Any]:
        return {
            key: (m, m - 0.1, m + 0.1) for (key, _), m in zip(tails.MEASURES, medians, strict=True)
        }

    return {
        "monosemantic": (145, summary(kurtosis, 1.07, 0.35, 0.37, 0.33)),
        "planted": (35, summary(-1.5, 1.1, 0.36, 0.1, 0.2)),
        "gauss": (200, summary(-0.1, 0.98, 0.32, 0.36, 0.13)),
        "t5": (200, summary(2.05, 1.65, 0.5, 0.45, 0.13)),
    }


def test_the_matched_rows_follow_the_numbers() -> None:
    match = {"nu": 14.1, "nu_kurtosis": 14.08, "nu_mardia": 21.0, "kurtosis": 0.34, "mardia": 1.07}
    found = {
        ("gauss", 64, 100): (10, 200),
        ("t5", 64, 100): (3, 200),
        ("t14.1", 64, 100): (2, 200),
        ("t14.1", 64, 1000): (0, 200),
    }
    page = _table(synthetic=found, tails=_tails(0.34), match=match)
    rows = [line for line in page.splitlines() if line.startswith("| ") and "positives" in line]
    assert [r.split(",")[0] for r in rows] == [  # the Gaussian, then the matched, then the stress
        "| one Gaussian",
        "| one cloud with one meaning's tail weight (t",
        "| one cloud with one meaning's tail weight (t",
        "| stress test",
    ]
    assert rows[1].startswith("| one cloud with one meaning's tail weight (t, ν = 14.1), C = 64")
    assert rows[1].endswith("| 2/200 (1.0%), 95 % CI 0.1%–3.6% | no |")
    assert "below the 2–8 % band at every size" in page
    assert "also at one meaning's tail weight" in page
    assert "ν = 14.1, derived by the benchmark" in page and "would give 21.6" in page
    assert "it is 6.0× as heavy-tailed as one meaning" in page  # 2.05 / 0.34
    assert "a = " not in page  # no skewed cloud: the match has no 'a'
    skewed = {**found, ("skew0.12", 64, 100): (9, 200), ("skew0.12", 64, 1000): (17, 200)}
    page = _table(synthetic=skewed, tails=_tails(0.34), match={**match, "a": 0.12,
                                                              "skewness": 0.33})  # fmt: skip
    row = "| one skewed cloud with one meaning's PC-1 skewness (a = 0.12), C = 64, k = 100:"
    assert f"{row} false positives 2–8 % | 9/200 (4.5%), 95 % CI 2.1%–8.4% | yes |" in page
    assert (
        "a = 0.12. The false-positive rate there is 4.5% (C = 64, k = 100), 8.5% (C = 64, k"
        " = 1000): within the band at 1 of 2, above the band at 1 of 2 sizes." in page
    )
    within = {**found, ("t14.1", 64, 1000): (8, 200)}
    page = _table(synthetic=within, tails=_tails(0.34), match=match)
    assert "within the 2–8 % band at 1 of 2 sizes: C = 64, k = 1000" in page
    assert "also at one meaning's tail weight" not in page


def test_the_page_s_matched_cloud_is_the_one_its_tail_table_gives() -> None:
    page = (ROOT / "docs" / "verdicts.md").read_text()
    nu = float(page.split("one meaning's tail weight (t, ν = ")[1].split(")")[0])
    cells = page.split("| planted monosemantic detectors | ")[1].split("\n")[0].split("|")
    kurt, skew = (float(cells[i].split()[0]) for i in (1, 5))
    assert abs(matched.matched_nu(kurt, 150, 5) - nu) < 0.5  # the page's kurtosis is rounded
    a = float(page.split("one meaning's PC-1 skewness (a = ")[1].split(")")[0])
    assert abs(matched.matched_skew(skew, 150, 5) - a) < 0.01
    for line in page.splitlines():  # every calibration row's 'met' follows its count
        if "false positives 2–8 %" in line:
            called, n = map(int, line.split("| ")[2].split()[0].split("/"))
            assert line.endswith("| yes |" if 0.02 <= called / n <= 0.08 else "| no |")


def test_sizes_and_method_select_what_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = verdicts._only(synthetic.SIZES, ["64/100/7", "384/1000"])
    assert {(c, k) for _, c, k, _ in sizes} == {(64, 100), (384, 1000)}
    assert all(n == 7 for kind, c, _, n in sizes if c == 64 and kind != "two")
    assert all(n == synthetic.NULL_SETS for kind, c, _, n in sizes if c == 384 and kind != "two")
    assert ("two", 64, 100, 40) in sizes  # the power keeps its own count
    seen: list[str] = []

    def fake(x: Any, seed: int, *args: Any, method: str = "gaussian") -> tuple[float, float, int]:
        seen.append(method)
        return 0.5, 0.5, 1

    monkeypatch.setattr("polyprune.clustering.sigclust", fake)
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(0, 1, (60, 8)), rng.normal(6, 1, (60, 8))])
    with verdicts.tested("minp"):  # cluster, so scan, runs the test asked for
        assert pp.cluster(codes).p_value == 0.5
    assert seen == ["minp"]
    assert pp.cluster(codes).p_value == 0.5 and seen == ["minp", "gaussian"]  # only inside


def test_tuning_draws_other_synthetic_clouds_than_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--tuning`` calibrates on clouds of its own stream: a null test tuned on the synthetic
    rows is reported on clouds it has not seen (they shared one stream before)."""
    drawn: dict[bool, list[np.ndarray]] = {True: [], False: []}
    state = {"tuning": False}

    def fake(x: Any, values: Any, *, seed: int, method: str = "gaussian") -> tuple[float, float]:
        drawn[state["tuning"]].append(np.asarray(x))
        return 0.5, 0.5

    monkeypatch.setattr(synthetic, "significance", fake)
    for tuning in (False, True):
        state["tuning"] = tuning
        seeds = verdicts.TUNING_SEEDS[:1] if tuning else verdicts.REPORT_SEEDS[:1]
        verdicts._part("synthetic", True, seeds, ["gauss"], {"nu": 14.1}, "gaussian", None)
    report, tuned = drawn[False], drawn[True]
    assert len(report) == len(tuned) == 20
    assert all(not np.allclose(a, b) for a, b in zip(report, tuned, strict=True))
    again: list[np.ndarray] = []

    def record(x: Any, values: Any, **kw: Any) -> tuple[float, float]:
        again.append(np.asarray(x))
        return 0.5, 0.5

    monkeypatch.setattr(synthetic, "significance", record)
    synthetic.rates([("gauss", 64, 100, 20)], base=synthetic.REPORT_BASE)
    assert all(np.array_equal(a, b) for a, b in zip(report, again, strict=True))  # the report's
