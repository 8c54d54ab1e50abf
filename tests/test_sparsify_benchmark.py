"""The sparsifier benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sparsify.py"


def test_benchmark_quick(capsys):
    spec = importlib.util.spec_from_file_location("bench_sparsify", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--quick"])
    out = capsys.readouterr().out
    assert set(results) == {"kernel", "weight", "epoch_seconds"}
    assert all(math.isfinite(v) and v > 0 for v in results.values())
    assert "kernel" in out and "weight" in out and "CS epoch" in out
