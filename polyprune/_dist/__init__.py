"""Private (foundation): data-parallel building blocks over ``torch.distributed`` (gloo or nccl;
which backend serves which device is :mod:`.backends`).

Everything here degrades to plain single-process behaviour when ``torch.distributed`` is
unavailable or not initialized: :func:`world` is ``(0, 1)``, :func:`shard` is the whole range,
:func:`gather_topk` is :func:`merge_topk`, :func:`run_jobs` is a loop, and
:func:`broadcast_object`, :func:`barrier` and :func:`collective_errors` do nothing.

Distributed, :func:`gather_topk`, :func:`run_jobs`, :func:`agree`, :func:`collective_errors`,
:func:`broadcast_object`, :func:`all_gather`, :func:`same_everywhere` and :func:`barrier` are
*collectives*: every rank must call them, in the same order. The rest is local and pure.

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

from .backends import Backend, backend_for, register_backend, select_local_device
from .comm import (
    Section,
    agree,
    all_gather,
    barrier,
    broadcast_object,
    collective_errors,
    same_everywhere,
    shutdown,
)
from .errors import DistributedError, timeout
from .jobs import assign_jobs, run_jobs
from .topk import MergedTopK, gather_topk, merge_topk
from .world import TIMEOUT_ENV, is_distributed, is_main, owns_batch, shard, world

__all__ = [
    "TIMEOUT_ENV",
    "Backend",
    "DistributedError",
    "MergedTopK",
    "Section",
    "agree",
    "all_gather",
    "assign_jobs",
    "backend_for",
    "barrier",
    "broadcast_object",
    "collective_errors",
    "gather_topk",
    "is_distributed",
    "is_main",
    "merge_topk",
    "owns_batch",
    "register_backend",
    "run_jobs",
    "same_everywhere",
    "select_local_device",
    "shard",
    "shutdown",
    "timeout",
    "world",
]
