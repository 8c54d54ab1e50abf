"""Private (distributed): the error every rank raises when a section fails, and the
collectives' timeout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from .._files import describe
from .world import DEFAULT_TIMEOUT, TIMEOUT_ENV

__all__ = ["DistributedError", "timeout"]


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
    text = describe(exc)
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
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return timedelta(seconds=seconds)
