"""benchmarks.handbuilt reproduces the scorer issue's keep table, so the script cannot rot."""

from __future__ import annotations

import pytest

from benchmarks import handbuilt


def test_handbuilt_table(capsys: pytest.CaptureFixture[str]) -> None:
    results = handbuilt.main([])
    out = capsys.readouterr().out
    assert "15 known kernels of 96" in out
    for scorer in ("ActGrad", "SNIP", "FORCE"):
        assert results[f"{scorer}@0.5"][1] == 1.0  # keeps the whole circuit
        assert results[f"{scorer}@0.1"][0] == 1.0  # and nothing but the circuit
        assert results[f"{scorer}@0.01"] == (1.0, 1 / 15)  # one kernel, a true one
    # the decoys are larger by construction: magnitude finds none of the circuit
    assert all(results[f"Magnitude@{keep}"] == (0.0, 0.0) for keep in (0.5, 0.1, 0.01))
