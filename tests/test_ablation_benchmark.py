"""The ablation timing benchmark's --quick mode runs, so the script cannot rot."""

from __future__ import annotations

import pytest

from benchmarks import ablation


def test_quick_benchmark_times_both_methods_on_both_cases(capsys: pytest.CaptureFixture[str]):
    results = ablation.main(["--quick"])
    out = capsys.readouterr().out
    for case in ("planted", "alexnet"):
        assert results[f"{case}_cs_s"] > 0 and results[f"{case}_ablation_s"] > 0
        assert results[f"{case}_ratio"] == pytest.approx(
            results[f"{case}_ablation_s"] / results[f"{case}_cs_s"]
        )
        assert f"{case}: " in out and "ratio" in out
