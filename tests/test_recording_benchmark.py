"""The recording benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

from benchmarks import recording


def test_benchmark_quick(capsys):
    recording.main(["--quick"])
    out = capsys.readouterr().out
    assert "speed-up (median of 2 paired batches)" in out
    assert "max relative difference    : 0.00e+00" in out  # crops are exact
    assert "growth 100 → 300" in out
