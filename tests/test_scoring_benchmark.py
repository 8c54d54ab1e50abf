"""The scoring benchmark's --quick mode runs, so the script cannot rot."""

from __future__ import annotations

import pytest

from benchmarks import scoring


def test_quick_benchmark_runs_and_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    results = scoring.main(["--quick"])  # its memory probe runs the file in a subprocess
    out = capsys.readouterr().out
    for scorer in ("ActGrad", "SNIP", "FORCE(2)", "Magnitude", "Random"):
        for gran in ("filter", "kernel", "weight"):
            assert results[f"{scorer}/{gran}"] > 0
    assert "FORCE(2)/SNIP at kernel" in out and "during kernel-level ActGrad" in out
    assert 0 < results["peak_setup_bytes"] <= results["peak_actgrad_bytes"] < 2e9
    assert results["peak_dense_bytes"] > 0
