"""polyprune._dist in two real processes under torchrun.

Each test launches ``torchrun --standalone --nproc-per-node 2 tests/_dist_worker.py`` (gloo on
CPU; nccl too where two GPUs exist) and compares what the ranks wrote with single-process
references computed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import BACKENDS, load_script, torchrun

from polyprune import _dist

worker = load_script("tests/_dist_worker.py")
reference = worker.reference_topk

LAUNCH_TIMEOUT = 120  # seconds; every scenario ends far sooner (they also assert their times)


def launch(scenarios: str, out: Path, backend: str, **env: str) -> tuple[int, str, float]:
    """Run the worker's ``scenarios`` on two ranks: (exit code, output, seconds)."""
    env = {worker.BACKEND_ENV: backend, **env}
    return torchrun("_dist_worker.py", [scenarios, str(out)], env, LAUNCH_TIMEOUT)


def read(out: Path, name: str, log: str) -> list[dict[str, Any]]:
    """Both ranks' results of a scenario."""
    paths = [out / f"{name}{rank}.json" for rank in range(2)]
    missing = [p.name for p in paths if not p.exists()]
    assert not missing, f"{missing} not written; torchrun said:\n{log[-4000:]}"
    return [json.loads(p.read_text()) for p in paths]


def identical(parts: list[dict[str, Any]]) -> dict[str, Any]:
    for p in parts:
        p.pop("seconds", None)
    assert parts[0] == parts[1], "the ranks returned different results"
    return parts[0]


def check_topk(result: dict[str, Any]) -> None:
    """(a) against a one-process top-k computed here, with payloads following their items."""
    for case in worker.topk_cases():
        got, k, values = result[case["name"]], case["k"], case["values"]
        assert got["devices"] == ["cpu"]
        codes = case["codes"]
        if values.dim() == 1:
            expected = reference(values, k)
            assert got["indices"] == expected, case["name"]
            assert got["values"] == values[expected].tolist()
            assert got["codes"] == codes[expected].tolist()
            assert got["crops"] == case["crops"][expected].tolist()
        else:
            for c in range(values.shape[1]):
                expected = reference(values[:, c], k)
                assert got["indices"][c] == expected, (case["name"], c)
                assert got["values"][c] == values[expected, c].tolist()
                assert got["codes"][c] == codes[expected].tolist()
            flat = [i for row in got["indices"] for i in row]
            assert got["items"] == list(dict.fromkeys(flat))  # each code vector once


def check_jobs(result: dict[str, Any], out: Path) -> None:
    """(b) results in job order on both ranks; each job ran once, on its assigned rank."""
    plain = _dist.assign_jobs(7, 2)
    assert result["plain"] == [
        [j, j * j, 0 if j in plain[0] else 1, [float(j)] * 2, "cpu"] for j in range(7)
    ]
    weighted = _dist.assign_jobs(5, 2, costs=[5, 1, 1, 3, 2])
    assert [r[2] for r in result["weighted"]] == [0 if j in weighted[0] else 1 for j in range(5)]
    assert [r[0] for r in result["weighted"]] == list(range(10, 15))
    assert result["none"] == []
    ran = [[int(x) for x in (out / f"ran{r}.txt").read_text().split()] for r in range(2)]
    assert sorted(ran[0] + ran[1]) == [*range(7), *range(10, 15)]  # each exactly once
    assert ran[0] == plain[0] + [10 + j for j in weighted[0]]


def check_shard(parts: list[dict[str, Any]]) -> None:
    """(d) every n, including n < world size: the two shards cover 0..n-1 exactly once."""
    assert [p["world"] for p in parts] == [[0, 2], [1, 2]]
    assert [p["all_reduce"] for p in parts] == [2.0, 2.0]
    assert [p["is_main"] for p in parts] == [True, False]
    assert all(p["is_distributed"] for p in parts)
    for n in ("0", "1", "2", "3", "7", "10", "101"):
        first, second = parts[0]["shards"][n], parts[1]["shards"][n]
        assert first + second == list(range(int(n)))
        assert len(first) - len(second) in (0, 1)
    assert parts[0]["batches"] == [0, 2, 4, 6, 8] and parts[1]["batches"] == [1, 3, 5, 7]


def check_misc(result: dict[str, Any]) -> None:
    assert result["broadcast"] == [1, [0, 1, 2], "cpu"]
    body = result["collective_errors"]  # rank 0 stopped its 10 s loop at once
    assert body["type"] == "DistributedError" and body["rank"] == 1
    assert body["text"] == "rank 1 failed in the body: ValueError: boom on rank 1"
    nan = result["nan_on_rank_1"]
    assert nan["rank"] == 1 and nan["failures"] == {"1": "ValueError: values contain NaN"}
    assert result["different_k"] == {
        "type": "ValueError", "text": "gather_topk: ranks passed different k: [1, 2]"
    }  # fmt: skip
    assert result["overlapping"]["type"] == "ValueError"
    assert "overlapping shards" in result["overlapping"]["text"]
    unpicklable = result["unpicklable"]
    assert unpicklable["rank"] == 1 and "pickle" in unpicklable["text"]
    assert result["after"] == [2, 3, 4]  # the group survives agreed errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes(backend: str, tmp_path: Path) -> None:
    """One launch: (a) topk, (b) jobs, (d) shard, errors that every rank survives, then (c) a
    job that fails on rank 1, which must end both ranks with rank 1's error."""
    code, log, seconds = launch("topk,jobs,shard,misc,job_failure", tmp_path, backend)
    check_topk(identical(read(tmp_path, "topk", log)))
    check_jobs(identical(read(tmp_path, "jobs", log)), tmp_path)
    check_shard(read(tmp_path, "shard", log))
    check_misc(identical(read(tmp_path, "misc", log)))
    # (c)
    assert code != 0, log[-4000:]
    errors = read(tmp_path, "error", log)
    for error in errors:
        assert error["text"] == "rank 1 failed in run_jobs: RuntimeError: job 1 exploded"
        assert error["rank"] == 1
        assert error["elapsed"] < 5.0  # rank 0 stops after its current 2 s job, not its three
    assert errors[0]["ran"] == [0] and errors[1]["ran"] == [1]
    assert errors[1]["cause"] == "RuntimeError" and errors[0]["cause"] is None
    assert seconds < LAUNCH_TIMEOUT / 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_stuck_and_dead_ranks(backend: str, tmp_path: Path) -> None:
    """One launch. A stuck rank: rank 1 stays away for 4 s while polyprune's collectives time
    out after 3 s: rank 0's gather fails after 3 s, and so does a barrier, naming rank 1. A dead
    rank: rank 1 exits (os._exit) while rank 0 waits in gather_topk with a 600 s timeout; rank
    0 fails at once (or torchrun ends it), long before the timeout."""
    code, log, seconds = launch("timeout,death", tmp_path, backend, POLYPRUNE_DIST_TIMEOUT="3")
    stuck = read(tmp_path, "timeout", log)[0]["rank0"]
    for step in ("gather", "barrier"):
        assert stuck[step]["text"].startswith(
            f"{'gather_topk' if step == 'gather' else step} failed: the collective failed on rank 0"
        )
        assert "within the 3 s timeout" in stuck[step]["text"]
        assert 2.5 < stuck[step]["elapsed"] < 20
    assert "Ranks 1 failed to pass monitoredBarrier" in stuck["barrier"]["text"]
    assert code != 0, log[-4000:]
    assert seconds < LAUNCH_TIMEOUT / 2, log[-4000:]
    error = tmp_path / "error0.json"
    if error.exists():  # unless torchrun's teardown came first
        record = json.loads(error.read_text())
        assert record["text"].startswith("gather_topk failed: the collective failed on rank 0")
        assert record["elapsed"] < 30
