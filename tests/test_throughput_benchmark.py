"""The data-loading benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

from benchmarks import throughput


def test_benchmark_quick(capsys):
    result = throughput.main(["--quick"])
    out = capsys.readouterr().out
    assert "140 JPEGs of 224×224" in out and "top_activating, workers=2" in out
    assert result["decode_share"] > 0 and result["n"] == 140
    assert result["best_workers"] in (0, 1, 2) and result["speedup_best"] >= 1.0
