"""Worker for tests/test_distributed_processes.py, launched by torchrun on every rank.

    torchrun --standalone --nproc-per-node 2 tests/_dist_worker.py SCENARIO[,SCENARIO...] OUTDIR

Backend: ``gloo`` on CPU, or ``nccl`` (one GPU per rank, inputs on the GPU) when the environment
variable ``POLYPRUNE_TEST_DIST_BACKEND=nccl``. After each scenario every rank writes
``OUTDIR/{scenario}{rank}.json`` (identical across ranks except for ``shard`` and the
``seconds`` it took); ``jobs`` also appends each job it runs to ``OUTDIR/ran{rank}.txt``.
Failure scenarios write ``OUTDIR/error{rank}.json`` and exit non-zero.

The data generators (``topk_cases``) are imported by the test to compute single-process
references, so both sides see the same values. All values are small integers stored as
floats: ties are exact and nothing depends on rounding.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from polyprune import _dist

BACKEND_ENV = "POLYPRUNE_TEST_DIST_BACKEND"


# ---------------------------------------------------------------------------------------------
# data, shared with the test


def topk_cases() -> list[dict[str, Any]]:
    """Data sets with many exact ties. ``values`` is (N,) for one unit or (N, C) for a layer."""
    cases = []
    specs = [  # name, N, C (0: one unit), k, value range, how shards are cut
        ("unit", 50, 0, 10, 4, "shard"),
        ("unit_k_over_shard", 7, 0, 5, 3, "shard"),
        ("unit_k_over_n", 3, 0, 10, 2, "shard"),
        ("unit_batches", 45, 0, 12, 3, "batches"),
        ("layer", 40, 6, 8, 3, "shard"),
        ("layer_one_item", 1, 3, 1, 3, "shard"),  # rank 1 owns nothing
        ("layer_batches", 33, 5, 9, 2, "batches"),
    ]
    for i, (name, n, c, k, levels, split) in enumerate(specs):
        g = torch.Generator().manual_seed(100 + i)
        width = max(c, 1)
        values = torch.randint(0, levels, (n, width), generator=g).float()
        codes = torch.randint(-50, 50, (n, 4), generator=g).float()
        crops = torch.randint(0, 255, (n, 2, 3, 3), generator=g).to(torch.uint8)
        cases.append(
            {
                "name": name,
                "k": k,
                "values": values[:, 0] if c == 0 else values,
                "codes": torch.cat([codes, values], dim=1),  # an item's code holds its values
                "crops": crops,
                "split": split,
            }
        )
    return cases


BATCH = 4


def owned(case: dict[str, Any], rank: int, size: int) -> list[int]:
    """The global indices a rank owns: by ``shard`` or round-robin batches of ``BATCH``."""
    n = int(case["values"].shape[0])
    if case["split"] == "shard":
        return list(_dist.shard(n, rank=rank, world_size=size))
    return [
        i
        for b, start in enumerate(range(0, n, BATCH))
        if _dist.owns_batch(b, rank=rank, world_size=size)
        for i in range(start, min(start + BATCH, n))
    ]


def reference_topk(values: Tensor, k: int) -> list[int]:
    """Plain Python: indices by value descending, then index ascending."""
    return sorted(range(len(values)), key=lambda i: (-float(values[i]), i))[:k]


def job_fn(job: int) -> dict[str, Any]:
    return {"job": job, "square": job * job, "rank": _dist.world()[0]}


# ---------------------------------------------------------------------------------------------
# scenarios


def as_json(top: _dist.MergedTopK) -> dict[str, Any]:
    out: dict[str, Any] = {
        "values": top.values.tolist(),
        "indices": top.indices.tolist(),
        "items": top.items.tolist(),
        "rows": top.rows.tolist(),
        "devices": sorted({str(t.device) for t in [top.values, *top.payloads.values()]}),
    }
    out.update({name: top.payload(name).tolist() for name in top.payloads})
    return out


def scenario_topk(device: torch.device, out: Path) -> dict[str, Any]:
    """(a) gather_topk of each rank's local top-k (from streaming its own batches)."""
    rank, size = _dist.world()
    common: dict[str, Any] = {}
    for case in topk_cases():
        k, values = case["k"], case["values"]
        mine = owned(case, rank, size)
        idx = torch.tensor(mine, dtype=torch.long)
        # stream the owned items in small batches through merge_topk, like a running top-k
        local: _dist.MergedTopK | None = None
        for start in range(0, len(mine), 3):
            part = idx[start : start + 3]
            v = values[part].to(device)
            i = part.to(device)
            codes = case["codes"][part].to(device)
            if values.dim() == 1:
                vals, inds, pay, items = v, i, {"codes": codes, "crops": case["crops"][part]}, None
            else:
                vals, inds, pay, items = v.T, i.expand(v.shape[1], -1), {"codes": codes}, i
            if local is not None:  # merge the running top-k with this batch
                vals = torch.cat([local.values.to(device), vals], dim=-1)
                inds = torch.cat([local.indices.to(device), inds], dim=-1)
                items = None if items is None else torch.cat([local.items.to(device), items])
                pay = {
                    name: torch.cat([local.payload(name) if items is None else p, pay[name]])
                    for name, p in local.payloads.items()
                }
            local = _dist.merge_topk(vals, inds, pay, k, items=items)
        if local is None:  # an empty shard: contribute nothing
            top = _dist.gather_topk(torch.empty(0), torch.empty(0, dtype=torch.long), None, k)
        else:
            top = _dist.gather_topk(
                local.values,
                local.indices,
                local.payloads,
                k,
                items=None if values.dim() == 1 else local.items,
            )
        common[case["name"]] = as_json(top)
    return common


def scenario_jobs(device: torch.device, out: Path) -> dict[str, Any]:
    """(b) run_jobs: results in job order on every rank; each job runs once (a file per run)."""
    rank, _ = _dist.world()
    log = out / f"ran{rank}.txt"

    def fn(job: int) -> dict[str, Any]:
        with log.open("a") as f:
            f.write(f"{job}\n")
        result = job_fn(job)
        result["tensor"] = torch.full((2,), float(job), device=device)  # arrives on the CPU
        return result

    plain = _dist.run_jobs(list(range(7)), fn, progress=True)
    weighted = _dist.run_jobs(list(range(10, 15)), fn, costs=[5, 1, 1, 3, 2])
    none = _dist.run_jobs([], fn)

    def listed(results: list[dict[str, Any]]) -> list[Any]:
        return [
            [r["job"], r["square"], r["rank"], r["tensor"].tolist(), str(r["tensor"].device)]
            for r in results
        ]

    return {"plain": listed(plain), "weighted": listed(weighted), "none": none}


def scenario_shard(device: torch.device, out: Path) -> dict[str, Any]:
    """(d) shard() and owns_batch() with the default (distributed) rank and world size."""
    rank, size = _dist.world()
    total = torch.ones(1, device=device)
    dist.all_reduce(total)  # the user's own group (gloo or nccl) still works next to ours
    return {
        "world": [rank, size],
        "all_reduce": total.item(),
        "is_main": _dist.is_main(),
        "is_distributed": _dist.is_distributed(),
        "shards": {n: list(_dist.shard(n)) for n in (0, 1, 2, 3, 7, 10, 101)},
        "batches": [b for b in range(9) if _dist.owns_batch(b)],
    }


def scenario_misc(device: torch.device, out: Path) -> dict[str, Any]:
    """broadcast_object, barrier, and errors that every rank survives (agreed, not fatal)."""
    rank, _ = _dist.world()
    result: dict[str, Any] = {}
    sent: dict[str, Any] = {"rank": rank, "t": torch.arange(3, device=device)}
    got = _dist.broadcast_object(sent, src=1)
    result["broadcast"] = [got["rank"], got["t"].tolist(), str(got["t"].device)]
    _dist.barrier()

    def caught(fn: Callable[[], object]) -> dict[str, Any]:
        try:
            fn()
        except _dist.DistributedError as exc:
            return {
                "type": "DistributedError",
                "text": str(exc),
                "rank": exc.rank,
                "failures": {str(r): e for r, e in exc.failures.items()},
            }
        except Exception as exc:
            return {"type": type(exc).__name__, "text": str(exc)}
        return {"type": None}

    def body() -> None:
        _dist.barrier()  # start together: rank 0 must still be looping when rank 1 fails
        with _dist.collective_errors("the body") as section:
            if rank == 1:
                raise ValueError("boom on rank 1\nsecond line")
            for _ in range(200):  # 10 s unless it notices rank 1's failure
                section.check()
                time.sleep(0.05)
            raise AssertionError("rank 0 did not stop early")

    result["collective_errors"] = caught(body)

    def bad_values() -> None:
        v = torch.tensor([1.0, float("nan") if rank == 1 else 2.0], device=device)
        _dist.gather_topk(v, torch.tensor([2 * rank, 2 * rank + 1], device=device), None, 1)

    result["nan_on_rank_1"] = caught(bad_values)

    def different_k() -> None:
        v = torch.tensor([float(rank)], device=device)
        _dist.gather_topk(v, torch.tensor([rank], device=device), None, 1 + rank)

    result["different_k"] = caught(different_k)

    def overlapping() -> None:  # both ranks hold item 0; it wins unit 0 on rank 0, unit 1 on 1
        if rank == 0:
            v, i, items = torch.tensor([[5.0], [2.0]]), torch.tensor([[0], [1]]), [0, 1]
        else:
            v, i, items = torch.tensor([[3.0], [9.0]]), torch.tensor([[2], [0]]), [2, 0]
        codes = {"codes": torch.full((2, 2), float(rank))}
        _dist.gather_topk(v, i, codes, 1, items=torch.tensor(items))

    result["overlapping"] = caught(overlapping)

    def unpicklable() -> None:
        _dist.run_jobs([0, 1], lambda j: (lambda: j) if j == 1 else j)

    result["unpicklable"] = caught(unpicklable)
    # the group is still usable after all of that
    result["after"] = _dist.run_jobs([1, 2, 3], lambda j: j + 1)
    return result


def scenario_job_failure(device: torch.device, out: Path) -> dict[str, Any]:
    """(c) rank 1 raises in its first job while rank 0's jobs are slow (2 s each): every rank
    raises rank 1's error, rank 0 after its current job, not after all of them."""
    rank, size = _dist.world()
    ran: list[int] = []

    def fn(job: int) -> int:
        ran.append(job)
        if job == 1:
            raise RuntimeError(f"job {job} exploded\ntraceback detail")
        time.sleep(2.0)
        return job

    _dist.barrier()
    start = time.monotonic()
    try:
        _dist.run_jobs(list(range(6)), fn)
    except _dist.DistributedError as exc:
        record = {
            "text": str(exc),
            "rank": exc.rank,
            "elapsed": time.monotonic() - start,
            "ran": ran,
            "cause": type(exc.__cause__).__name__ if exc.__cause__ else None,
        }
        (out / f"error{rank}.json").write_text(json.dumps(record))
        wait_for(out, "error", size)  # so that torchrun's teardown never races a slower rank
        raise
    raise AssertionError("run_jobs did not raise")


def scenario_timeout(device: torch.device, out: Path) -> dict[str, Any]:
    """Rank 1 is alive but stays away for 4 s, twice, while polyprune's collectives time out
    after 3 s (POLYPRUNE_DIST_TIMEOUT=3 in the launch): rank 0's gather_topk times out, then
    (in a fresh group) its barrier times out naming rank 1.

    A timed-out gloo group is broken (its connections are closed), so before each step both
    ranks replace polyprune's group by a fresh one (test-only: forget it, and the next
    collective creates another); the last one gets a long timeout, for ``death`` to follow."""
    rank, _ = _dist.world()
    record: dict[str, Any] = {}
    steps = [
        ("gather", lambda: _dist.gather_topk(torch.ones(1), torch.zeros(1).long(), None, 1)),
        ("barrier", _dist.barrier),
    ]
    for name, call in steps:
        _dist.comm._GROUP = None
        _dist.barrier()  # a new group, with the short timeout, on both ranks
        if rank == 1:
            time.sleep(4)
            continue
        start = time.monotonic()
        try:
            call()
        except _dist.DistributedError as exc:
            record[name] = {"text": str(exc), "elapsed": time.monotonic() - start}
    os.environ[_dist.TIMEOUT_ENV] = "600"
    _dist.comm._GROUP = None
    _dist.barrier()  # a new group on both ranks
    return {"rank0": record} if rank == 0 else {}


def scenario_death(device: torch.device, out: Path) -> dict[str, Any]:
    """Rank 1 dies outright while rank 0 waits in gather_topk (timeout 600 s): rank 0 must fail
    at once (gloo sees the closed connection), or be ended by torchrun."""
    rank, _ = _dist.world()
    _dist.barrier()  # polyprune's group exists on both ranks
    if rank == 1:
        time.sleep(0.5)
        os._exit(3)
    start = time.monotonic()
    try:
        _dist.gather_topk(torch.tensor([1.0]), torch.tensor([0]), None, 1)
    except _dist.DistributedError as exc:
        record = {"text": str(exc), "elapsed": time.monotonic() - start}
        (out / f"error{rank}.json").write_text(json.dumps(record))
        raise
    raise AssertionError("gather_topk did not raise")


def wait_for(out: Path, prefix: str, size: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all((out / f"{prefix}{r}.json").exists() for r in range(size)):
            return
        time.sleep(0.05)


SCENARIOS: dict[str, Callable[[torch.device, Path], dict[str, Any]]] = {
    "topk": scenario_topk,
    "jobs": scenario_jobs,
    "shard": scenario_shard,
    "misc": scenario_misc,
    "job_failure": scenario_job_failure,
    "death": scenario_death,
    "timeout": scenario_timeout,
}


def main() -> None:
    names, out = sys.argv[1].split(","), Path(sys.argv[2])
    torch.set_num_threads(1)
    backend = os.environ.get(BACKEND_ENV, "gloo")
    if backend == "nccl":
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, timeout=timedelta(seconds=60))
    try:
        rank = dist.get_rank()
        for name in names:  # each scenario's result is written as soon as it is done
            start = time.monotonic()
            result = SCENARIOS[name](device, out)
            result["seconds"] = round(time.monotonic() - start, 3)  # not compared across ranks
            (out / f"{name}{rank}.json").write_text(json.dumps(result, sort_keys=True))
    finally:
        _dist.shutdown()  # every rank done before any tears down; rank 0 last


if __name__ == "__main__":
    main()
