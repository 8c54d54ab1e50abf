"""Private (foundation): independent jobs spread over the ranks, results gathered to every rank."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from .comm import exchange, new_section
from .world import is_main, world

T = TypeVar("T")
R = TypeVar("R")


def assign_jobs(
    n_jobs: int, world_size: int, costs: Sequence[float] | None = None
) -> list[list[int]]:
    """Which jobs each rank runs: a static, deterministic assignment (the same on every rank).

    Without ``costs``, round-robin: job ``i`` on rank ``i % world_size``. With ``costs`` (one
    estimate per job, e.g. the number of clusters times the number of methods), greedy
    longest-first: jobs in order of decreasing cost (ties: lower job first) each go to the
    rank with the least total cost so far (ties: lower rank). Each rank's list is ascending.

    >>> assign_jobs(5, 2)
    [[0, 2, 4], [1, 3]]
    >>> assign_jobs(4, 2, costs=[5, 1, 1, 3])
    [[0], [1, 2, 3]]
    """
    if n_jobs < 0 or world_size < 1:
        raise ValueError(f"need n_jobs >= 0 and world_size >= 1, got {n_jobs}, {world_size}")
    if costs is None:
        return [list(range(r, n_jobs, world_size)) for r in range(world_size)]
    if len(costs) != n_jobs:
        raise ValueError(f"costs has {len(costs)} entries for {n_jobs} jobs")
    loads = [0.0] * world_size
    ranks: list[list[int]] = [[] for _ in range(world_size)]
    for job in sorted(range(n_jobs), key=lambda j: (-float(costs[j]), j)):
        r = min(range(world_size), key=lambda q: (loads[q], q))
        loads[r] += float(costs[job])
        ranks[r].append(job)
    return [sorted(jobs) for jobs in ranks]


def _reporter(
    progress: bool | Callable[[int, int], None], what: str, total: int, size: int
) -> Callable[[int, int], None] | None:
    if not progress or not is_main():
        return None
    if callable(progress):
        return progress
    where = f" on rank 0 ({total} on {size} ranks)" if size > 1 else ""

    def report(done: int, mine: int) -> None:  # one plain line: no redraws in a log file
        if done == mine:
            print(f"[polyprune] {what}: {done}/{mine} jobs{where}", file=sys.stderr, flush=True)

    return report


def run_jobs(
    jobs: Sequence[T],
    fn: Callable[[T], R],
    *,
    progress: bool | Callable[[int, int], None] = False,
    costs: Sequence[float] | None = None,
    what: str = "run_jobs",
) -> list[R]:
    """Collective: ``[fn(job) for job in jobs]``, the jobs spread over the ranks.

    Job ``i`` runs on one rank only, per :func:`assign_jobs` (round-robin, or longest-first
    with ``costs``); the results are gathered to every rank, in job order. Results must be
    picklable; they are deserialized with their tensors on the CPU (also on the rank that made
    them), so every rank holds equal copies. If ``fn`` raises on any rank, every rank raises
    :class:`DistributedError` naming it (``fn``'s own exception unchanged when not distributed);
    the other ranks learn of it between two jobs (through the job's store) and skip their
    remaining jobs. ``jobs`` must be the same sequence on every rank.

    For results identical to one process, ``fn`` must depend on its job only, not on the state
    of the process that runs it: seed any randomness inside ``fn`` from the job (e.g.
    ``torch.manual_seed(base_seed + job_index)``), never from the global RNG stream, whose
    position differs between one process running all jobs and ranks running some.

    ``progress``: ``True`` prints one line to stderr on rank 0 when its own jobs are done; a
    callable is called there as ``progress(done, total)`` after each (e.g. a progress stage's
    update); other ranks show nothing.

    >>> run_jobs([1, 2, 3], lambda x: x * 10)
    [10, 20, 30]
    """
    jobs = list(jobs)
    rank, size = world()
    mine = assign_jobs(len(jobs), size, costs)[rank]
    report = _reporter(progress, what, len(jobs), size)
    if size == 1:
        results = []
        for done, job in enumerate(jobs, 1):
            results.append(fn(job))
            if report:
                report(done, len(jobs))
        return results

    section = new_section()

    def local() -> dict[int, R]:
        out: dict[int, R] = {}
        for done, i in enumerate(mine, 1):
            section.check()  # another rank failed: stop, and raise its error below
            out[i] = fn(jobs[i])
            if report:
                report(done, len(mine))
        return out

    gathered: list[dict[int, R]] = exchange(what, local, section)
    merged: dict[int, R] = {}
    for part in gathered:
        merged.update(part)
    if sorted(merged) != list(range(len(jobs))):
        raise ValueError(f"{what}: the ranks' results do not cover the jobs once each")
    return [merged[i] for i in range(len(jobs))]
