"""Private (foundation): who this process is in a torch.distributed job, and its data share."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

import torch.distributed as dist

from .. import _validate as valid

T = TypeVar("T")
R = TypeVar("R")

TIMEOUT_ENV = "POLYPRUNE_DIST_TIMEOUT"
DEFAULT_TIMEOUT = timedelta(minutes=30)  # torch's default_pg_timeout for non-nccl backends


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
    valid.integer("n", n, low=0)
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
    valid.integer("batch_number", batch_number, low=0)
    rank, size = _resolve_world(rank, world_size)
    return batch_number % size == rank


# ---------------------------------------------------------------------------------------------
# top-k merging (pure, single process)
