"""The recording benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recording.py"


def test_benchmark_quick(capsys):
    spec = importlib.util.spec_from_file_location("bench_recording", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick"])
    out = capsys.readouterr().out
    assert "speed-up (median of 2 paired batches)" in out
    assert "max relative difference    : 0.00e+00" in out  # crops are exact
    assert "growth 100 → 300" in out
