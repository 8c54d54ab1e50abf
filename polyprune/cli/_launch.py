"""Private (cli): where a command runs — the device, and the process group when ``torchrun``
started it as one of several processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ._errors import CLIError

__all__ = ["launched", "process_group", "rank_note", "resolve_device"]


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher) started this process as one of several."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_note() -> str:
    """``" (rank N)"`` for a message of one of several processes, else ``""``."""
    if not launched() or os.environ["WORLD_SIZE"] == "1":
        return ""
    return f" (rank {os.environ['RANK']})"


def resolve_device(device: str) -> str:
    """``--device``: ``"auto"`` is ``"cuda"`` where CUDA is available, else ``"cpu"``; a
    ``"cuda"`` without CUDA is a :class:`CLIError`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available here")
    return device


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Initialize ``torch.distributed`` when launched by torchrun and not yet initialized, with
    the backend registered for ``device``'s type (``_dist.backends``: ``gloo`` on the CPU,
    ``nccl`` on CUDA with each rank on GPU ``LOCAL_RANK``), for ``device`` ``"cpu"``,
    ``"cuda"`` or ``"auto"`` (see :func:`resolve_device`); destroyed on exit. Otherwise
    nothing."""
    import torch.distributed as dist

    from .._dist import backend_for, select_local_device, shutdown, timeout

    if not launched() or not dist.is_available() or dist.is_initialized():
        yield
        return
    device = resolve_device(device)
    select_local_device(device)
    dist.init_process_group(backend_for(device).process_group, timeout=timeout())
    try:
        yield
    finally:
        shutdown()  # every rank done before any tears down; rank 0 last
