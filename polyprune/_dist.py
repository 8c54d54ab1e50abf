"""Private: data-parallel building blocks over ``torch.distributed`` (torchrun, gloo or nccl).

Everything here degrades to plain single-process behaviour when ``torch.distributed`` is
unavailable or not initialized: :func:`world` is ``(0, 1)``, :func:`shard` is the whole range,
:func:`gather_topk` is :func:`merge_topk`, :func:`run_jobs` is a loop, and
:func:`broadcast_object`, :func:`barrier` and :func:`collective_errors` do nothing.

Distributed, :func:`gather_topk`, :func:`run_jobs`, :func:`agree`, :func:`collective_errors`,
:func:`broadcast_object` and :func:`barrier` are *collectives*: every rank must call them, in
the same order. The rest is local and pure.

Typical use (a scan)::

    with collective_errors("scan") as section:          # a failure here ends every rank
        local = None
        for batch_indices, batch in my_batches(shard(len(data))):
            section.check()                              # stop early if another rank failed
            local = merge_topk(...)                      # running top-k, global indices
    top = gather_topk(local.values, local.indices, local.payloads, k, items=local.items)
    if is_main():
        write_report(top)

Design
------
**Sharding.** A data set of known length ``n`` is cut into contiguous, balanced blocks in rank
order (:func:`shard`): rank ``r`` owns global indices ``[r*q + min(r, m), ...)`` with
``q, m = divmod(n, world)``, i.e. the first ``m`` ranks get ``q + 1`` items and the others
``q``. Items keep their *global* index, so the tie rule (lower index first) means the same
thing on every rank. Data of unknown length is split round-robin by batch
(:func:`owns_batch`): every rank still iterates every batch (to count global indices), but
only runs the model on its own.

**Transport.** All traffic is Python objects serialized with :func:`torch.save` (CPU
tensors inside) and moved with :func:`torch.distributed.all_gather_object` /
:func:`~torch.distributed.broadcast_object_list` over a *gloo* process group that this module
creates once (lazily, on the first collective) next to the user's default group. Why:

- the same code path serves gloo and nccl jobs; nccl can only move CUDA tensors, and its
  object collectives stage the pickled bytes on ``torch.cuda.current_device()`` (wrong, and
  a hang, unless the user called ``torch.cuda.set_device``). A gloo side group moves the bytes
  through host memory, which is where merging happens anyway;
- ragged contributions (a rank whose shard is short or empty, payloads of any dtype and
  shape) need no padding protocol or shape agreement round: ``all_gather_object`` already
  exchanges sizes and pads bytes;
- the group has its own timeout (``POLYPRUNE_DIST_TIMEOUT`` seconds, default torch's 30 min)
  and supports :func:`torch.distributed.monitored_barrier`, which names missing ranks;
- ``torch.load(map_location="cpu")`` brings every tensor to the CPU, so results that held
  CUDA tensors on one rank arrive as CPU tensors everywhere.

The cost is a few memory copies at each end (serialize, stage, deserialize): measured with
two gloo processes on a CPU, 0.35 s for a layer-wide top-1000 of 256 units with 256-float code
vectors, 1.7 s for one unit's top-1000 with 3x99x99 input crops (120 MB) -- well under 1 % of
the scans that produce them. Payloads move only once they are known to be needed:
:func:`gather_topk` first gathers values and indices, merges, and then gathers only the payload
rows (code vectors, input crops) of the items that survived (for one unit, about ``1/world`` of
each rank's rows). Serialization is pickle: fine between the ranks of one job, which trust each
other, as with any ``*_object`` collective.

**Errors.** A rank that raises while its peers wait in a collective would leave them hanging
until the timeout. Every collective here therefore carries an error slot: local work that
precedes the exchange (validation, serialization, the jobs of :func:`run_jobs`, the body of
:func:`collective_errors`) is run under ``try``, the exception's type and first line travel in
the same all-gather as the data, and *every* rank then raises :class:`DistributedError` naming
the failing rank(s) (chained to the original exception on the failing rank). The group
survives such an error: the ranks may go on with other collectives.

A rank that fails also flags its section in the job's key-value store; the others poll the
flag between jobs (:func:`run_jobs`) or batches (:meth:`Section.check`), so they stop after
their current job or batch rather than finishing their whole share before they learn of the
failure. Failures that no Python code can report are handled by the layers below:

- a process that dies outright (segfault, ``os._exit``, OOM kill) closes its gloo sockets, so
  peers blocked in a gloo collective fail at once with a connection error (raised here as
  :class:`DistributedError`), and torchrun's elastic agent, seeing a worker exit non-zero,
  terminates the remaining workers of the job and reports the first failure;
- a rank that is alive but never arrives (a deadlock, a forgotten collective) is caught by the
  group's timeout: ``init_process_group(timeout=...)`` for the user's group,
  ``POLYPRUNE_DIST_TIMEOUT`` for ours (:func:`timeout`). Keep it above the longest legitimate
  imbalance between ranks (the time a fast rank may wait for a slow one).
  :func:`barrier` uses ``monitored_barrier(wait_all_ranks=True)``, whose error lists the ranks
  that did not arrive. Under nccl, collectives on the *user's* group are watched by the NCCL
  watchdog, which aborts the process after its timeout (``TORCH_NCCL_ASYNC_ERROR_HANDLING``).
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistributedError",
    "MergedTopK",
    "Section",
    "agree",
    "assign_jobs",
    "barrier",
    "broadcast_object",
    "collective_errors",
    "gather_topk",
    "is_distributed",
    "is_main",
    "merge_topk",
    "owns_batch",
    "run_jobs",
    "shard",
    "timeout",
    "world",
]

T = TypeVar("T")
R = TypeVar("R")

TIMEOUT_ENV = "POLYPRUNE_DIST_TIMEOUT"
_DEFAULT_TIMEOUT = timedelta(minutes=30)  # torch's default_pg_timeout for non-nccl backends


# ---------------------------------------------------------------------------------------------
# who am I


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when not distributed.

    >>> world()
    (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialized.

    A one-process group (``torchrun --nproc-per-node 1``) counts as not distributed: there is
    nothing to exchange.

    >>> is_distributed()
    False
    """
    return world()[1] > 1


def is_main() -> bool:
    """Whether this process is rank 0 (or the only process): the one that writes reports and
    shows progress bars.

    >>> is_main()
    True
    """
    return world()[0] == 0


def _resolve_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    here, size = world()
    rank = here if rank is None else rank
    size = size if world_size is None else world_size
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={size}")
    return rank, size


# ---------------------------------------------------------------------------------------------
# sharding


def shard(n: int, *, rank: int | None = None, world_size: int | None = None) -> range:
    """The global indices this rank owns in a data set of ``n`` items.

    Contiguous, balanced blocks in rank order: with ``q, m = divmod(n, world_size)`` ranks
    ``0 .. m-1`` get ``q + 1`` items and the others ``q`` (so with ``n < world_size`` the last
    ranks get an empty range). The ranges of all ranks partition ``range(n)``. ``rank`` and
    ``world_size`` default to :func:`world`'s.

    >>> shard(10, rank=0, world_size=3), shard(10, rank=1, world_size=3)
    (range(0, 4), range(4, 7))
    >>> shard(10, rank=2, world_size=3), shard(1, rank=1, world_size=2)
    (range(7, 10), range(1, 1))
    >>> shard(5)  # not distributed: everything
    range(0, 5)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rank, size = _resolve_world(rank, world_size)
    q, m = divmod(n, size)
    start = rank * q + min(rank, m)
    return range(start, start + q + (1 if rank < m else 0))


def owns_batch(
    batch_number: int, *, rank: int | None = None, world_size: int | None = None
) -> bool:
    """Whether this rank processes batch ``batch_number`` (0-based) of an iterable of unknown
    length: round-robin, batch ``b`` belongs to rank ``b % world_size``.

    Every rank still iterates over *all* batches, to count items and so know the global index
    of each item of its own batches (loading is duplicated, the model's work is not); with a
    data set of known length prefer :func:`shard`, which also splits the loading::

        seen = 0
        for b, batch in enumerate(batches):
            if owns_batch(b):
                topk.push(model(batch), offset=seen)  # global indices seen .. seen + len - 1
            seen += len(batch)

    >>> [owns_batch(b, rank=1, world_size=3) for b in range(6)]
    [False, True, False, False, True, False]
    >>> owns_batch(7)  # not distributed: every batch
    True
    """
    if isinstance(batch_number, bool) or not isinstance(batch_number, int) or batch_number < 0:
        raise ValueError(f"batch_number must be a non-negative int, got {batch_number!r}")
    rank, size = _resolve_world(rank, world_size)
    return batch_number % size == rank


# ---------------------------------------------------------------------------------------------
# top-k merging (pure, single process)


@dataclass(frozen=True, eq=False)
class MergedTopK:
    """A top-k of one unit (``values`` of shape ``(k,)``) or of ``C`` units at once (``(C, k)``,
    each row its own top-k over the same items), best first, with per-item payloads.

    Payload layout: each payload is stored **once per distinct item**, not once per entry.
    ``items`` lists the distinct item indices that occur in ``indices``, in order of first
    appearance when ``indices`` is read row-major (for the ``(k,)`` form that is simply
    ``indices``, best first); row ``m`` of every payload belongs to ``items[m]``; and ``rows``
    (same shape as ``indices``) points each entry at its payload row, so
    ``items[rows] == indices`` and :meth:`payload` expands a payload to one row per entry.
    A layer-wide top-k of ``C`` channels whose items overlap stores each code vector once.

    Attributes
    ----------
    values : Tensor
        ``(k,)`` or ``(C, k)``, sorted descending along the last dimension.
    indices : Tensor
        int64, same shape: the global item indices; among equal values the lower index first.
    items : Tensor
        ``(M,)`` int64, the distinct item indices (see above).
    rows : Tensor
        int64, same shape as ``indices``: the payload row of each entry.
    payloads : dict[str, Tensor]
        Each ``(M, ...)``, row ``m`` for ``items[m]``.
    """

    values: Tensor
    indices: Tensor
    items: Tensor
    rows: Tensor
    payloads: dict[str, Tensor]

    def payload(self, name: str) -> Tensor:
        """Payload ``name`` with one row per entry: ``(k, ...)`` or ``(C, k, ...)``."""
        table = self.payloads[name]
        return table[self.rows.to(table.device)]

    def __len__(self) -> int:
        return int(self.indices.shape[-1])


def _first_appearance(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct values of ``indices`` in order of first appearance (row-major), and, for each
    entry, the position of its value in that list."""
    flat = indices.reshape(-1)
    if flat.numel() == 0:
        return flat.clone(), torch.zeros_like(indices)
    uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    positions = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((uniq.numel(),), flat.numel(), dtype=torch.long, device=flat.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    perm = torch.argsort(first)
    slot = torch.empty_like(perm)
    slot[perm] = torch.arange(perm.numel(), device=perm.device)
    return uniq[perm], slot[inverse].reshape(indices.shape)


def _locate(wanted: Tensor, items: Tensor, what: str) -> Tensor:
    """Positions in ``items`` (distinct, any order) of each of ``wanted``; ValueError if one is
    missing."""
    if wanted.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=items.device)
    sorted_items, order = torch.sort(items)
    pos = torch.searchsorted(sorted_items, wanted).clamp_(max=max(items.numel() - 1, 0))
    if items.numel() == 0 or not bool((sorted_items[pos] == wanted).all()):
        missing = wanted if items.numel() == 0 else wanted[sorted_items[pos] != wanted]
        raise ValueError(f"{what}: no payload row for item(s) {missing[:5].tolist()}")
    return order[pos]


def _check_distinct(items: Tensor, what: str) -> None:
    if items.numel() > 1:
        s = torch.sort(items).values
        dup = s[1:] == s[:-1]
        if bool(dup.any()):
            raise ValueError(f"{what} contain duplicates, e.g. {s[1:][dup][:5].tolist()}")


def merge_topk(
    values: Tensor,
    indices: Tensor,
    payloads: Mapping[str, Tensor] | None,
    k: int,
    *,
    items: Tensor | None = None,
) -> MergedTopK:
    """The top ``k`` of a set of candidates, with polyprune's tie rule, and their payloads.

    Candidates are typically the concatenation of every rank's local top-k (in any order):
    since each rank's shard holds the global top-k's items that fall in it, and a local top-k
    keeps them all (same tie rule), merging the local top-k's gives exactly the global top-k.

    Order: value descending, ties by the lower global index (as ``_TopK`` in
    ``polyprune.recording``). NaN values are rejected; ``±inf`` sort as usual.

    Parameters
    ----------
    values : Tensor
        ``(n,)`` candidates of one unit, or ``(C, n)`` of ``C`` units (every row merged on its
        own; all rows have the same ``n`` candidates).
    indices : Tensor
        Integer tensor of the same shape: global item indices, distinct within a row.
    payloads : mapping of str to Tensor, optional
        Per-item data (code vectors, input crops). Without ``items``, only for the ``(n,)``
        form: row ``j`` of each payload belongs to candidate ``j``. With ``items``: row ``m``
        belongs to item ``items[m]`` (the layout of :class:`MergedTopK`).
    k : int
        How many to keep; fewer (``n``) when there are fewer candidates.
    items : Tensor, optional
        ``(M,)`` distinct item indices, one per payload row; must cover the kept items.

    Returns
    -------
    MergedTopK
        On the device of ``values``; payloads on their own devices.

    Examples
    --------
    Two shards' local top-2, with a tie at 5.0 between items 7 and 2:

    >>> import torch
    >>> top = merge_topk(torch.tensor([5.0, 1.0, 9.0, 5.0]), torch.tensor([7, 8, 3, 2]),
    ...                  {"code": torch.tensor([[70], [80], [30], [20]])}, k=3)
    >>> top.values.tolist(), top.indices.tolist(), top.payload("code").tolist()
    ([9.0, 5.0, 5.0], [3, 2, 7], [[30], [20], [70]])

    Two channels at once; the payload table holds each item once:

    >>> top = merge_topk(torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]),
    ...                  torch.tensor([[4, 5, 6], [4, 5, 6]]),
    ...                  {"code": torch.tensor([[40], [50], [60]])}, k=2,
    ...                  items=torch.tensor([4, 5, 6]))
    >>> top.indices.tolist(), top.items.tolist(), top.rows.tolist()
    ([[4, 5], [6, 5]], [4, 5, 6], [[0, 1], [2, 1]])
    >>> top.payload("code")[1].tolist()
    [[60], [50]]
    """
    top, items, payloads = _merge(values, indices, payloads, k, items)
    if not payloads:
        return top
    assert items is not None
    source = _locate(top.items, items, "merge_topk")
    kept = {name: p[source.to(p.device)] for name, p in payloads.items()}
    return MergedTopK(top.values, top.indices, top.items, top.rows, kept)


def _merge(
    values: Tensor,
    indices: Tensor,
    payloads: Mapping[str, Tensor] | None,
    k: int,
    items: Tensor | None,
) -> tuple[MergedTopK, Tensor | None, dict[str, Tensor]]:
    """:func:`merge_topk` without taking the payload rows: the merged top-k (no payloads), and
    the validated ``items`` (one per payload row) and ``payloads``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if values.dim() not in (1, 2):
        raise ValueError(f"values must be (n,) or (C, n), got shape {tuple(values.shape)}")
    if indices.shape != values.shape:
        raise ValueError(
            f"indices {tuple(indices.shape)} and values {tuple(values.shape)} differ in shape"
        )
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise ValueError(f"indices must be integers, got {indices.dtype}")
    if values.dtype.is_floating_point and bool(values.isnan().any()):
        raise ValueError("values contain NaN")
    payloads = dict(payloads or {})
    one = values.dim() == 1
    v2 = values[None] if one else values
    i2 = (indices[None] if one else indices).to(device=v2.device, dtype=torch.long)
    if payloads:
        if items is None:
            if not one:
                raise ValueError("payloads of a (C, n) top-k need items=: one index per row")
            items = i2[0]
        items = items.to(device=v2.device, dtype=torch.long)
        if items.dim() != 1:
            raise ValueError(f"items must be 1-D, got shape {tuple(items.shape)}")
        _check_distinct(items, "items")
        for name, p in payloads.items():
            if p.dim() == 0 or p.shape[0] != items.numel():
                raise ValueError(
                    f"payload {name!r} has shape {tuple(p.shape)}, expected "
                    f"({items.numel()}, ...): one row per item"
                )
    # stable sorts: by index ascending, then by value descending, keeps lower index on ties
    order = torch.argsort(i2, dim=1, stable=True)
    by_index = i2.gather(1, order)
    if bool((by_index[:, 1:] == by_index[:, :-1]).any()):
        raise ValueError("an item index occurs twice among one unit's candidates")
    by_value = torch.argsort(v2.gather(1, order), dim=1, descending=True, stable=True)
    order = order.gather(1, by_value)[:, :k]
    top_values, top_indices = v2.gather(1, order), by_index.gather(1, by_value[:, :k])
    new_items, rows = _first_appearance(top_indices)
    if one:
        top_values, top_indices, rows = top_values[0], top_indices[0], rows[0]
    return MergedTopK(top_values, top_indices, new_items, rows, {}), items, payloads


# ---------------------------------------------------------------------------------------------
# errors and the transport


class DistributedError(RuntimeError):
    """A distributed section failed on some rank; raised on **every** rank.

    Attributes
    ----------
    what : str
        The section (``"run_jobs"``, ``"gather_topk"``, ...).
    failures : dict[int, str]
        Failing rank → ``"ExceptionType: first line of its message"``; empty when the
        collective itself failed (a peer died or timed out) and no rank could report.
    rank : int or None
        The lowest failing rank, if known.
    """

    def __init__(self, what: str, failures: Mapping[int, str], detail: str | None = None):
        self.what = what
        self.failures = dict(sorted(failures.items()))
        self.rank: int | None = min(self.failures) if self.failures else None
        if self.failures:
            ranks = list(self.failures)
            if len(ranks) == 1:
                message = f"rank {ranks[0]} failed in {what}: {self.failures[ranks[0]]}"
            else:
                listed = "; ".join(f"rank {r}: {e}" for r, e in self.failures.items())
                message = f"ranks {', '.join(map(str, ranks))} failed in {what}: {listed}"
        else:
            message = f"{what} failed: {detail}"
        super().__init__(message)


def _describe(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = type(exc).__name__ + (f": {lines[0].strip()}" if lines else "")
    return text if len(text) <= 500 else text[:497] + "..."


def timeout() -> timedelta:
    """The timeout of polyprune's collectives: ``POLYPRUNE_DIST_TIMEOUT`` seconds if set, else
    torch's default of 30 minutes.

    It bounds how long a rank waits in a collective for a peer that is alive but does not
    arrive; keep it above the longest legitimate wait (e.g. the imbalance between ranks'
    shares of a scan). Exceptions and dead processes do not wait for it (see the module
    docstring). Read when the group is created (the first collective).

    >>> timeout().total_seconds() > 0
    True
    """
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return _DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return timedelta(seconds=seconds)


# (the default group it belongs to, our gloo group, its timeout)
_GROUP: tuple[Any, Any, timedelta] | None = None


def _group() -> Any:
    """polyprune's gloo group over all ranks, created on first use (collectively: the first
    collective of this module is one on every rank)."""
    global _GROUP
    default = dist.group.WORLD
    if _GROUP is None or _GROUP[0] is not default:
        limit = timeout()
        _GROUP = (default, dist.new_group(backend="gloo", timeout=limit), limit)
    return _GROUP[1]


def _dumps(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _loads(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def _collective_failed(what: str, exc: Exception) -> DistributedError:
    limit = f"{_GROUP[2].total_seconds():g} s" if _GROUP is not None else "group's"
    return DistributedError(
        what,
        {},
        f"the collective failed on rank {world()[0]} (a peer died, or did not arrive within "
        f"the {limit} timeout): {_describe(exc)}",
    )


class _PeerFailed(BaseException):
    """Raised by :meth:`Section.check` when another rank has failed: unwinds local work (a
    BaseException, so that ``except Exception`` in user code does not swallow it)."""


_POLL_SECONDS = 0.25  # Section.check asks the store at most this often
_SECTIONS = 0  # sections opened by this process: the same sequence on every rank


class Section:
    """The local part of a collective section (see :func:`collective_errors`).

    A rank that fails in the section flags it in the job's key-value store (the one
    ``init_process_group`` rendezvoused with); :meth:`check` lets long local loops on the
    other ranks notice and stop at once (they then raise the failing rank's error) instead of
    finishing their whole share before the agreement round. Best effort: without a reachable
    store, :meth:`check` does nothing and the failure is still reported at the agreement.
    """

    def __init__(self, key: str | None) -> None:
        self._key = key
        self._last = time.monotonic()

    def check(self) -> None:
        """Stop (unwind to the end of the section) if another rank has already failed in it.

        Cheap: asks the store at most every 0.25 s; does nothing when not distributed.

        >>> with collective_errors("scan") as section:
        ...     for batch in range(3):
        ...         section.check()
        """
        if self._key is None:
            return
        now = time.monotonic()
        if now - self._last < _POLL_SECONDS:
            return
        self._last = now
        try:
            failed = bool(dist.distributed_c10d._get_default_store().check([self._key]))
        except Exception:
            return
        if failed:
            raise _PeerFailed

    def _flag(self) -> None:
        if self._key is None:
            return
        with suppress(Exception):
            dist.distributed_c10d._get_default_store().set(self._key, str(world()[0]))


def _section() -> Section:
    global _SECTIONS
    if not is_distributed():
        return Section(None)
    _SECTIONS += 1
    return Section(f"polyprune/section/{_SECTIONS}/failed")


def _exchange(what: str, build: Callable[[], object], section: Section | None = None) -> list[Any]:
    """All-gather ``build()``'s result from every rank, in rank order, after agreeing on
    errors: if ``build`` raised on any rank, every rank raises :class:`DistributedError`.
    ``build`` may stop early with :meth:`Section.check` when another rank has failed."""
    error: Exception | None = None
    stopped = False
    data = b""
    try:
        data = _dumps(build())
    except _PeerFailed:
        stopped = True
    except Exception as exc:
        error = exc
        if section is not None:
            section._flag()
    mine = (None if error is None else _describe(error), stopped, data)
    parts: list[Any] = [None] * world()[1]
    try:
        dist.all_gather_object(parts, mine, group=_group())
    except Exception as exc:
        raise _collective_failed(what, exc) from exc
    failures = {r: e for r, (e, _, _) in enumerate(parts) if e is not None}
    if failures:
        raise DistributedError(what, failures) from error
    if any(s for _, s, _ in parts):  # cannot happen: a rank stops only after another failed
        raise DistributedError(what, {}, "a rank stopped early but no rank reported an error")
    return [_loads(d) for _, _, d in parts]


def agree(error: Exception | None = None, *, what: str = "a distributed section") -> None:
    """Collective: raise on every rank if ``error`` is set on any rank.

    Every rank calls it at the same point, passing the exception it caught (or ``None``).
    Distributed, all ranks raise :class:`DistributedError` naming the failing ranks (chained
    to ``error`` where it is set); not distributed, ``error`` itself is re-raised.

    >>> agree(None)
    >>> agree(ValueError("bad"))
    Traceback (most recent call last):
    ...
    ValueError: bad
    """
    if not is_distributed():
        if error is not None:
            raise error
        return

    def build() -> None:
        if error is not None:
            raise error

    _exchange(what, build)


@contextmanager
def collective_errors(what: str = "a distributed section") -> Iterator[Section]:
    """Collective: run the body, then make every rank agree on whether any rank raised.

    Wrap the *local* work that precedes a collective (a rank's share of a scan), so that an
    exception on one rank ends every rank with a :class:`DistributedError` naming it instead
    of leaving the others waiting in the next collective. Long loops in the body should call
    the yielded :class:`Section`'s ``check()`` now and then (e.g. once per batch): when another
    rank has failed, it unwinds the body at once and this rank raises that rank's error too,
    without finishing its share first. The body must not itself run collectives of the
    default group (this module's functions are fine: a :class:`DistributedError` they raise
    on every rank passes through unchanged). Not distributed: runs the body, exceptions pass
    unchanged.

    >>> with collective_errors("scan") as section:
    ...     local = 0
    ...     for batch in range(10):
    ...         section.check()
    ...         local += batch
    >>> local
    45
    """
    section = _section()
    if section._key is None:
        yield section
        return
    try:
        yield section
    except DistributedError:
        raise  # already raised on every rank by a collective inside the body
    except _PeerFailed:
        _exchange(what, _stop)
        raise AssertionError("unreachable: another rank failed") from None
    except Exception as exc:
        section._flag()
        agree(exc, what=what)
        raise  # unreachable: agree raised
    agree(None, what=what)


def _stop() -> None:
    raise _PeerFailed


# ---------------------------------------------------------------------------------------------
# collectives


def broadcast_object(obj: T, src: int = 0) -> T:
    """Collective: rank ``src``'s ``obj`` on every rank (a deserialized copy, tensors on the
    CPU); ``obj`` itself when not distributed. Other ranks' ``obj`` is ignored.

    >>> broadcast_object({"seed": 3})
    {'seed': 3}
    """
    rank, size = world()
    if size == 1:
        return obj
    if not 0 <= src < size:
        raise ValueError(f"src must be a rank in 0..{size - 1}, got {src}")
    error: Exception | None = None
    data = b""
    if rank == src:
        try:
            data = _dumps(obj)
        except Exception as exc:
            error = exc
    box: list[Any] = [(None if error is None else _describe(error), data)]
    try:
        dist.broadcast_object_list(box, src=src, group=_group())
    except Exception as exc:
        raise _collective_failed("broadcast_object", exc) from exc
    described, payload = box[0]
    if described is not None:
        raise DistributedError("broadcast_object", {src: described}) from error
    result: T = _loads(payload)
    return result


def barrier() -> None:
    """Collective: wait until every rank arrives; no-op when not distributed.

    A host-side ``monitored_barrier`` on polyprune's gloo group: if some rank does not arrive
    within :func:`timeout`, the error (a :class:`DistributedError`) lists the missing ranks. It
    does not synchronize CUDA streams.

    >>> barrier()
    """
    if not is_distributed():
        return
    try:
        dist.monitored_barrier(group=_group(), timeout=timeout(), wait_all_ranks=True)
    except Exception as exc:
        raise _collective_failed("barrier", exc) from exc


def _cpu_payloads(payloads: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    return {name: p.detach().cpu() for name, p in (payloads or {}).items()}


def gather_topk(
    values: Tensor,
    indices: Tensor,
    payloads: Mapping[str, Tensor] | None,
    k: int,
    *,
    items: Tensor | None = None,
) -> MergedTopK:
    """Collective: merge every rank's local top-k into the global top-k, identical on all ranks.

    Each rank passes its local candidates (usually its shard's top-k, in the forms of
    :func:`merge_topk`, with global indices); every rank gets the :func:`merge_topk` of all
    ranks' candidates, on the CPU. A rank whose shard is empty may pass empty tensors
    (``(0,)`` also stands for ``(C, 0)``) and no payloads. Not distributed, this is
    :func:`merge_topk` (moved to the CPU).

    Two exchanges: (1) each rank reduces its candidates to its top-k and all-gathers their
    values and indices, and every rank merges them; (2) each rank all-gathers only the payload
    rows of its items that survived the merge. Invalid input on any rank (shapes, NaN,
    different ``k`` or payload names across ranks) raises on every rank.

    >>> import torch
    >>> top = gather_topk(torch.tensor([2.0, 4.0]), torch.tensor([0, 1]), None, k=1)
    >>> top.values.tolist(), top.indices.tolist()
    ([4.0], [1])
    """
    if not is_distributed():
        return merge_topk(
            values.detach().cpu(),
            indices.cpu(),
            _cpu_payloads(payloads),
            k,
            items=None if items is None else items.cpu(),
        )

    state: dict[str, Any] = {}

    def phase_one() -> object:
        # validate, and cut the candidates to this rank's top-k; payloads stay where they are
        local, held, table = _merge(
            values.detach().cpu(),
            indices.cpu(),
            _cpu_payloads(payloads),
            k,
            None if items is None else items.cpu(),
        )
        state["items"], state["payloads"] = held, table
        meta = {n: (p.dtype, tuple(p.shape[1:])) for n, p in table.items()}
        return k, values.dim(), local.values, local.indices, meta

    parts = _exchange("gather_topk", phase_one)
    # everything below runs on identical data on every rank: errors are raised everywhere alike
    ks = {p[0] for p in parts}
    if len(ks) != 1:
        raise ValueError(f"gather_topk: ranks passed different k: {[p[0] for p in parts]}")
    # ranks without candidates may pass (0,) for (C, 0): shapes are taken from the others
    contributing = [p for p in parts if p[2].numel() > 0]
    shaped = contributing or [p for p in parts if p[1] == 2] or parts
    dims = {p[1] for p in shaped}
    if len(dims) != 1:
        raise ValueError("gather_topk: ranks passed (n,) and (C, n) top-k's")
    two_d = dims.pop() == 2
    units = {int(p[2].shape[0]) for p in shaped} if two_d else {1}
    if len(units) != 1:
        raise ValueError(f"gather_topk: ranks passed different numbers of units: {units}")
    n_units = units.pop()

    def as_rows(v: Tensor) -> Tensor:
        if not two_d:
            return v.reshape(-1)
        return v.reshape(n_units, -1) if v.numel() else v.reshape(n_units, 0)

    # payload names, dtypes and row shapes must agree among the ranks that contribute items
    metas = [p[4] for p in contributing] or [p[4] for p in parts if p[4]]
    names = {tuple(sorted(m)) for m in metas}
    if len(names) > 1:
        raise ValueError(f"gather_topk: ranks passed different payloads: {sorted(names)}")
    for m in metas:
        if m != metas[0]:
            raise ValueError(f"gather_topk: payload dtypes/shapes differ across ranks: {metas}")
    merged = merge_topk(
        torch.cat([as_rows(p[2]) for p in parts], dim=-1),
        torch.cat([as_rows(p[3]) for p in parts], dim=-1),
        None,
        k,
    )
    meta: dict[str, tuple[torch.dtype, tuple[int, ...]]] = metas[0] if metas else {}
    if not meta:
        return merged

    def phase_two() -> object:  # the payload rows of this rank's items that were kept
        held: Tensor | None = state["items"]
        if held is None:
            return torch.empty(0, dtype=torch.long), {}
        mask = torch.isin(held, merged.items)
        return held[mask], {n: p[mask] for n, p in state["payloads"].items()}

    rows = _exchange("gather_topk", phase_two)
    have = torch.cat([r[0] for r in rows])
    _check_distinct(have, "gather_topk: item indices sent by different ranks (overlapping shards?)")
    source = _locate(merged.items, have, "gather_topk")
    table = {}
    for name, (dtype, shape) in meta.items():
        pieces = [r[1][name] for r in rows if r[0].numel() and name in r[1]]
        full = torch.cat(pieces) if pieces else torch.empty((0, *shape), dtype=dtype)
        table[name] = full[source]
    return MergedTopK(merged.values, merged.indices, merged.items, merged.rows, table)


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

    def report(done: int, mine: int) -> None:
        end = "\n" if done == mine else ""
        print(f"\r{what}: {done}/{mine} jobs{where}", end=end, file=sys.stderr, flush=True)

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

    ``progress``: ``True`` prints ``done/total`` for rank 0's own jobs to stderr on rank 0; a
    callable is called there as ``progress(done, total)`` (e.g. a tqdm's update); other ranks
    show nothing.

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

    section = _section()

    def local() -> dict[int, R]:
        out: dict[int, R] = {}
        for done, i in enumerate(mine, 1):
            section.check()  # another rank failed: stop, and raise its error below
            out[i] = fn(jobs[i])
            if report:
                report(done, len(mine))
        return out

    gathered: list[dict[int, R]] = _exchange(what, local, section)
    merged: dict[int, R] = {}
    for part in gathered:
        merged.update(part)
    if sorted(merged) != list(range(len(jobs))):
        raise ValueError(f"{what}: the ranks' results do not cover the jobs once each")
    return [merged[i] for i in range(len(jobs))]
