"""The sparsifier benchmark runs end to end in --quick mode and reports what it promises."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sparsify.py"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These problems are tiny: one thread is faster than two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
