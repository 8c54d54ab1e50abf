"""Private (foundation): polyprune's collectives, and errors that end every rank, not hang."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .backends import side_backend
from .errors import DistributedError, _describe, timeout
from .world import is_distributed, world

T = TypeVar("T")


# (the default group it belongs to, our gloo group, its timeout)
_GROUP: tuple[Any, Any, timedelta] | None = None


def _group() -> Any:
    """polyprune's side group over all ranks (gloo: :func:`~.backends.side_backend`), created
    on first use (collectively: the first
    collective of this module is one on every rank)."""
    global _GROUP
    default = dist.group.WORLD
    if _GROUP is None or _GROUP[0] is not default:
        limit = timeout()
        _GROUP = (default, dist.new_group(backend=side_backend(), timeout=limit), limit)
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


def new_section() -> Section:
    global _SECTIONS
    if not is_distributed():
        return Section(None)
    _SECTIONS += 1
    return Section(f"polyprune/section/{_SECTIONS}/failed")


def exchange(what: str, build: Callable[[], object], section: Section | None = None) -> list[Any]:
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

    exchange(what, build)


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
    section = new_section()
    if section._key is None:
        yield section
        return
    try:
        yield section
    except DistributedError:
        raise  # already raised on every rank by a collective inside the body
    except _PeerFailed:
        exchange(what, _stop)
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


def all_gather(obj: T, *, what: str = "all_gather") -> list[T]:
    """Collective: every rank's ``obj``, in rank order (deserialized copies, tensors on the
    CPU); ``[obj]`` when not distributed. Small things only (statistics, counts).

    >>> all_gather({"items": 3})
    [{'items': 3}]
    """
    if not is_distributed():
        return [obj]
    parts: list[T] = exchange(what, lambda: obj)
    return parts


def same_everywhere(what: str, **settings: object) -> None:
    """Collective: raise ``ValueError`` on every rank if any setting differs across ranks.

    For the arguments that every rank of one call must share (the unit, ``k``, the crop, the
    data's length ...): a rank with another unit would otherwise merge its top-k with the
    others' and the result would mix channels. Settings are compared by ``repr``; not
    distributed, nothing is compared.

    >>> same_everywhere("top_activating", k=10, unit="features.6[0]")
    """
    if not is_distributed():
        return
    mine = {name: repr(value) for name, value in settings.items()}
    parts: list[dict[str, str]] = exchange(what, lambda: mine)
    differ = [name for name in mine if len({p.get(name) for p in parts}) > 1]
    if differ:
        listed = "; ".join(
            f"{name}: " + ", ".join(f"rank {r} {_short(p.get(name))}" for r, p in enumerate(parts))
            for name in differ
        )
        raise ValueError(
            f"{what} was called with arguments that differ across ranks ({listed}); every rank "
            "must pass the same ones"
        )


def shutdown(*, wait: float = 60.0) -> None:
    """Collective: end ``torch.distributed`` in an order that no rank can trip over.

    Every rank must call it where it would call ``dist.destroy_process_group()`` (the command
    line does, and so should scripts run under torchrun):

    1. a barrier on polyprune's group: every rank has finished every collective, so none
       tears its connections down while a peer still sends to it or still reads what it sent
       (gloo's I/O thread aborts the whole process, SIGABRT, on a message it no longer
       expects);
    2. polyprune lets go of its group, so that its gloo threads end inside
       ``destroy_process_group`` rather than whenever the interpreter's exit gets to it;
    3. the other ranks destroy their groups first, then rank 0, which hosts the job's
       key-value store when the group was started without torchrun's agent, waits (up to
       ``wait`` seconds) until they have, and destroys its own last.

    Errors on the way (a peer that already died, or did not arrive within :func:`timeout`)
    do not stop the teardown; nobody waits for a peer that missed the barrier. Not
    initialized: nothing to do.

    >>> shutdown()
    """
    global _GROUP, _SHUTDOWNS
    if not (dist.is_available() and dist.is_initialized()):
        return
    rank, size = world()
    store = None
    with suppress(Exception):
        store = dist.distributed_c10d._get_default_store()
    met = False  # every rank reached the barrier (else a peer is gone: wait for nobody)
    try:
        if size > 1:
            with suppress(DistributedError):
                barrier()
                met = True
    finally:
        _GROUP = None
        _SHUTDOWNS += 1
        key = f"polyprune/shutdown/{_SHUTDOWNS}"
        if rank != 0 or store is None or not met:
            dist.destroy_process_group()
            if store is not None and met:
                with suppress(Exception):
                    store.add(key, 1)
        else:
            deadline = time.monotonic() + wait
            with suppress(Exception):
                while store.add(key, 0) < size - 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
            dist.destroy_process_group()


_SHUTDOWNS = 0  # teardowns by this process: the same sequence on every rank


def _short(text: str | None) -> str:
    return "?" if text is None else text if len(text) <= 80 else text[:77] + "..."


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
