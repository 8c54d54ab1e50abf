"""The verdict benchmark (issue 22): its table's 'met' column follows from the numbers, it runs
end to end in --quick mode, and docs/verdicts.md is what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import verdicts
from benchmarks.claims.faithful.config import SETTINGS

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
    assert rows["one t cloud (5 d.o.f.), C = 64, k = 100: false positives 2–8 %"] == "no"  # 15 %
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
