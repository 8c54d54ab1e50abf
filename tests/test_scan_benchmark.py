"""The scan benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

from helpers import load_script


def test_benchmark_quick(capsys):
    found = load_script("benchmarks/scan.py").main(["--quick"])
    out = capsys.readouterr().out
    assert "speed-up per channel (loop / scan)" in out
    assert "scan / (one top_activating + clustering)" in out
    assert "growth 120 → 360" in out
    assert "recording pass, 1 process" in out
    assert found["ranks"]["planted seed 0"] == 1
