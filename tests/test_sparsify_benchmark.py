"""The sparsifier benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

import math

from benchmarks import sparsify


def test_benchmark_quick(capsys):
    results = sparsify.main(["--quick"])
    out = capsys.readouterr().out
    assert set(results) == {"kernel", "weight", "epoch_seconds"}
    assert all(math.isfinite(v) and v > 0 for v in results.values())
    assert "kernel" in out and "weight" in out and "CS epoch" in out
