"""polyprune._dist in one process: top-k merging, sharding, job assignment, errors.

Real multi-process runs are in ``test_distributed_processes.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import load_script
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from polyprune import _dist

worker = load_script("tests/_dist_worker.py")


# ---------------------------------------------------------------------------------------------
# single process: merge_topk


#: The tie rule, spelled out in plain Python: value descending, then lower index.
reference = worker.reference_topk


def code_of(items: Tensor) -> Tensor:
    """A payload row that names its item: (M, 2), so rows can be traced back."""
    return torch.stack([items * 10, -items], dim=1).float()


def crop_of(items: Tensor) -> Tensor:
    return (items % 251).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 2, 3, 3).clone()


def check_layout(top: _dist.MergedTopK) -> None:
    """items distinct, in order of first appearance in indices (row-major); items[rows] ==
    indices; payload rows name their items."""
    flat = top.indices.reshape(-1).tolist()
    assert top.items.tolist() == list(dict.fromkeys(flat))
    assert torch.equal(top.items[top.rows], top.indices)
    if "code" in top.payloads:
        assert torch.equal(top.payloads["code"], code_of(top.items))
        assert torch.equal(
            top.payload("code"), code_of(top.indices.reshape(-1)).view(*top.indices.shape, 2)
        )
    if "crop" in top.payloads:
        assert torch.equal(top.payload("crop"), crop_of(top.indices))


@st.composite
def sharded_data(draw: st.DrawFn) -> tuple[Tensor, list[list[int]], int, int]:
    n = draw(st.integers(0, 40))
    units = draw(st.integers(0, 3))  # 0: the (n,) form of one unit
    levels = draw(st.integers(1, 4))  # few distinct values: many exact ties
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, levels, (n, max(units, 1)), generator=g).float()
    values = values[:, 0] if units == 0 else values
    n_shards = draw(st.integers(1, 5))
    owner = draw(st.lists(st.integers(0, n_shards - 1), min_size=n, max_size=n))
    shards = [[i for i in range(n) if owner[i] == s] for s in range(n_shards)]  # some empty
    k = draw(st.integers(0, 12))
    return values, shards, k, units


def local_topk(values: Tensor, items: list[int], k: int, layer: bool) -> _dist.MergedTopK:
    idx = torch.tensor(items, dtype=torch.long)
    if not layer:
        return _dist.merge_topk(values[idx], idx, {"code": code_of(idx), "crop": crop_of(idx)}, k)
    v = values[idx].T.contiguous()  # (C, n_shard)
    return _dist.merge_topk(v, idx.expand(v.shape[0], -1), {"code": code_of(idx)}, k, items=idx)


@given(sharded_data(), st.randoms(use_true_random=False))
def test_merging_shard_topks_equals_one_shot_topk(data: Any, rng: Any) -> None:
    values, shards, k, units = data
    layer = units > 0
    parts = [local_topk(values, s, k, layer) for s in shards]
    rng.shuffle(parts)  # the order in which ranks' parts arrive does not matter
    if layer:
        merged = _dist.merge_topk(
            torch.cat([p.values for p in parts], dim=1),
            torch.cat([p.indices for p in parts], dim=1),
            {"code": torch.cat([p.payloads["code"] for p in parts])},
            k,
            items=torch.cat([p.items for p in parts]),
        )
        for c in range(units):
            expected = reference(values[:, c], k)
            assert merged.indices[c].tolist() == expected
            assert merged.values[c].tolist() == values[expected, c].tolist()
        assert merged.indices.shape == (units, min(k, values.shape[0]))
    else:
        merged = _dist.merge_topk(
            torch.cat([p.values for p in parts]),
            torch.cat([p.indices for p in parts]),
            {n: torch.cat([p.payload(n) for p in parts]) for n in ("code", "crop")},
            k,
        )
        expected = reference(values, k)
        assert merged.indices.tolist() == expected
        assert merged.values.tolist() == values[expected].tolist()
        assert torch.equal(merged.items, merged.indices)  # (k,) form: payloads best first
    check_layout(merged)


def test_layer_payloads_are_stored_once_per_item() -> None:
    values = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 5.0]])
    items = torch.tensor([7, 4, 9, 2])
    indices = items.expand(3, -1)
    top = _dist.merge_topk(values, indices, {"code": code_of(items)}, 2, items=items)
    assert top.indices.tolist() == [[7, 4], [7, 9], [2, 4]]  # ties at 0.0: lower index first
    assert top.items.tolist() == [7, 4, 9, 2]  # first appearance, row-major
    assert top.rows.tolist() == [[0, 1], [0, 2], [3, 1]]
    assert top.payloads["code"].shape == (4, 2)
    check_layout(top)


def test_ties_go_to_the_lower_index_whatever_the_candidate_order() -> None:
    values = torch.tensor([1.0, 1.0, 1.0, 2.0, 1.0])
    indices = torch.tensor([9, 3, 5, 8, 4])
    top = _dist.merge_topk(values, indices, None, 4)
    assert top.indices.tolist() == [8, 3, 4, 5]
    assert top.payloads == {}


def test_infinities_and_integer_values() -> None:
    v = torch.tensor([1.0, float("inf"), float("-inf"), 0.0])
    assert _dist.merge_topk(v, torch.arange(4), None, 4).indices.tolist() == [1, 0, 3, 2]
    ints = torch.tensor([3, -1, 3, 7], dtype=torch.int32)
    top = _dist.merge_topk(ints, torch.tensor([5, 6, 1, 2], dtype=torch.int32), None, 3)
    assert top.indices.tolist() == [2, 1, 5] and top.indices.dtype == torch.long


@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_no_candidates(shape: tuple[int, ...]) -> None:
    empty = torch.empty(shape)
    items = torch.empty(0, dtype=torch.long)
    pay = {"code": torch.empty(0, 2)}
    top = _dist.merge_topk(empty, empty.long(), pay, 5, items=items)
    assert top.values.shape == shape and top.indices.shape == shape and top.rows.shape == shape
    assert top.items.shape == (0,) and top.payloads["code"].shape == (0, 2)
    assert len(top) == 0


def test_k_zero_and_k_above_n() -> None:
    v, i = torch.tensor([1.0, 2.0]), torch.tensor([0, 1])
    assert _dist.merge_topk(v, i, None, 0).indices.tolist() == []
    assert _dist.merge_topk(v, i, None, 10).indices.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _dist.merge_topk(torch.tensor([float("nan")]), torch.tensor([0]), None, 1), "NaN"),
        (lambda: _dist.merge_topk(torch.ones(2), torch.tensor([1, 1]), None, 1), "twice"),
        (lambda: _dist.merge_topk(torch.ones(2), torch.ones(2), None, 1), "integers"),
        (lambda: _dist.merge_topk(torch.ones(2), torch.arange(3), None, 1), "shape"),
        (
            lambda: _dist.merge_topk(torch.ones(1, 1, 1), torch.zeros(1, 1, 1).long(), None, 1),
            r"\(n,\) or \(C, n\)",
        ),
        (
            lambda: _dist.merge_topk(torch.ones(2), torch.arange(2), None, -1),
            "k must be an int ≥ 0",
        ),
        (
            lambda: _dist.merge_topk(torch.ones(2), torch.arange(2), {"c": torch.ones(3)}, 1),
            "one row per item",
        ),
        (
            lambda: _dist.merge_topk(
                torch.ones(1, 2), torch.arange(2)[None], {"c": torch.ones(2)}, 1
            ),
            "items=",
        ),
        (
            lambda: _dist.merge_topk(
                torch.ones(2), torch.arange(2), {"c": torch.ones(2)}, 1, items=torch.tensor([1, 1])
            ),
            "duplicates",
        ),
        (
            lambda: _dist.merge_topk(
                torch.tensor([2.0, 1.0]),
                torch.arange(2),
                {"c": torch.ones(2)},
                1,
                items=torch.tensor([1, 5]),
            ),
            r"no payload row for item\(s\) \[0\]",
        ),
    ],
)
def test_merge_topk_rejects(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# single process: everything else degrades to local behaviour


def test_not_distributed() -> None:
    assert _dist.world() == (0, 1)
    assert not _dist.is_distributed() and _dist.is_main()
    assert _dist.shard(7) == range(7) and _dist.owns_batch(3)
    assert _dist.broadcast_object([1, 2]) == [1, 2]
    _dist.barrier()
    _dist.agree(None)
    with pytest.raises(KeyError):  # the original exception, not a DistributedError
        _dist.agree(KeyError("x"))
    with pytest.raises(KeyError), _dist.collective_errors() as section:
        section.check()
        raise KeyError("x")
    top = _dist.gather_topk(
        torch.tensor([1.0, 3.0]), torch.tensor([4, 2]), {"code": code_of(torch.tensor([4, 2]))}, 1
    )
    assert top.indices.tolist() == [2] and top.payload("code").tolist() == [[20.0, -2.0]]


def test_run_jobs_not_distributed() -> None:
    seen: list[int] = []
    calls: list[tuple[int, int]] = []

    def fn(job: int) -> int:
        seen.append(job)
        return job * 2

    assert _dist.run_jobs([3, 1, 2], fn, progress=lambda d, n: calls.append((d, n))) == [6, 2, 4]
    assert seen == [3, 1, 2] and calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ZeroDivisionError):  # unchanged, not wrapped
        _dist.run_jobs([1, 0], lambda j: 1 // j)


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 4, 7, 10, 23])
def test_shard_partitions_in_balanced_blocks(n: int, world_size: int) -> None:
    blocks = [_dist.shard(n, rank=r, world_size=world_size) for r in range(world_size)]
    assert [i for b in blocks for i in b] == list(range(n))  # contiguous, in rank order
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_owns_batch_round_robin() -> None:
    owners = [[b for b in range(10) if _dist.owns_batch(b, rank=r, world_size=3)] for r in range(3)]
    assert owners == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError):
        _dist.shard(3, rank=2, world_size=2)
    with pytest.raises(ValueError):
        _dist.owns_batch(-1)


@pytest.mark.parametrize("costs", [None, [1.0] * 7, [7, 1, 1, 1, 3, 3, 2], [0.0] * 7])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_assign_jobs_runs_each_job_once(costs: list[float] | None, world_size: int) -> None:
    ranks = _dist.assign_jobs(7, world_size, costs)
    assert len(ranks) == world_size
    assert sorted(j for r in ranks for j in r) == list(range(7))
    if costs is None:
        assert ranks == [list(range(r, 7, world_size)) for r in range(world_size)]
    else:  # longest-first: no rank exceeds the best possible load by more than the largest job
        loads = [sum(costs[j] for j in r) for r in ranks]
        assert max(loads) <= sum(costs) / world_size + max(costs)


def test_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_dist.TIMEOUT_ENV, raising=False)
    assert _dist.timeout().total_seconds() == 1800
    monkeypatch.setenv(_dist.TIMEOUT_ENV, "2.5")
    assert _dist.timeout().total_seconds() == 2.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(_dist.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=_dist.TIMEOUT_ENV):
            _dist.timeout()


def test_distributed_error_messages() -> None:
    one = _dist.DistributedError("scan", {1: "ValueError: boom"})
    assert str(one) == "rank 1 failed in scan: ValueError: boom" and one.rank == 1
    two = _dist.DistributedError("fit", {3: "KeyError: 'a'", 0: "OSError: disk"})
    assert str(two) == "ranks 0, 3 failed in fit: rank 0: OSError: disk; rank 3: KeyError: 'a'"
    assert two.rank == 0 and list(two.failures) == [0, 3]
    lost = _dist.DistributedError("barrier", {}, "peer gone")
    assert lost.rank is None and str(lost) == "barrier failed: peer gone"
    assert _dist.errors._describe(ValueError("\n  first\nsecond")) == "ValueError: first"
    assert _dist.errors._describe(KeyboardInterrupt()) == "KeyboardInterrupt"
