"""Private (foundation): which ``torch.distributed`` backend serves which device, in one place.

A :class:`Backend` says how polyprune runs on one device type: the backend of the process
group the command line initializes under ``torchrun`` (``gloo`` on the CPU, ``nccl`` on CUDA),
whether each process first selects the device of its ``LOCAL_RANK`` (one accelerator per
process), and the backend of polyprune's own side group, which moves pickled results between
hosts (``gloo`` everywhere: see ``_dist/__init__.py``, "Transport"). ``cli/_launch.py`` and
``_dist/comm.py`` read it through :func:`backend_for` and :func:`side_backend`; a new backend
(another accelerator, MPI) is one :func:`register_backend` call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Backend", "backend_for", "register_backend", "select_local_device", "side_backend"]


@dataclass(frozen=True)
class Backend:
    """How polyprune runs on one device type under ``torch.distributed``.

    Attributes
    ----------
    process_group : str
        The backend of the default process group (``dist.init_process_group``).
    pin_device : bool
        Select the device ``LOCAL_RANK`` of this type before initializing (one per process).
    side : str
        The backend of polyprune's side group for pickled bytes between hosts.
    """

    process_group: str
    pin_device: bool = False
    side: str = "gloo"


_BACKENDS: dict[str, Backend] = {
    "cpu": Backend("gloo"),
    "cuda": Backend("nccl", pin_device=True),
}


def register_backend(device_type: str, backend: Backend) -> None:
    """Run processes on devices of ``device_type`` (``"xpu"``, ...) with ``backend``."""
    if not isinstance(device_type, str) or not device_type:
        raise ValueError(f"device_type must be a device type such as 'cpu', got {device_type!r}")
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a Backend, got {type(backend).__name__}")
    _BACKENDS[device_type] = backend


def backend_for(device: str | torch.device) -> Backend:
    """The :class:`Backend` of ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...)."""
    kind = torch.device(device).type
    if kind not in _BACKENDS:
        raise ValueError(
            f"no torch.distributed backend is registered for {kind!r} devices; "
            f"registered: {sorted(_BACKENDS)}"
        )
    return _BACKENDS[kind]


def select_local_device(device: str | torch.device) -> None:
    """Make this process's current device the one of its ``LOCAL_RANK``, when ``device``'s
    backend pins one device per process (CUDA); nothing otherwise."""
    kind = torch.device(device).type
    if backend_for(kind).pin_device:
        torch.get_device_module(kind).set_device(int(os.environ.get("LOCAL_RANK", "0")))


def side_backend() -> str:
    """The backend of polyprune's side group: that of the registered backend whose process
    group is the one initialized, else ``gloo``."""
    current = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
    for backend in _BACKENDS.values():
        if backend.process_group == current:
            return backend.side
    return "gloo"
