"""Private (foundation): what produced a result — software, machine, model and data — as JSON."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ._dist.world import world

__all__ = ["data_description", "environment", "file_paths", "model_description", "now"]

_PACKAGES = ("polyprune", "torch", "torchvision", "numpy", "scikit-learn", "hdbscan")


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    """Versions, Python, platform, CPU count, torch threads, CUDA device and process count."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "processes": world()[1],
    }


def model_description(model: nn.Module) -> dict[str, Any]:
    """The model's class, size, device and dtype, and a SHA-256 of its parameters and buffers.

    The fingerprint hashes every tensor of the ``state_dict`` in order (names, shapes, dtypes
    and bytes): the same weights give the same hex digest on any machine.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    first = next(iter(model.parameters()), None)
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": None if first is None else str(first.device),
        "dtype": None if first is None else str(first.dtype),
        "sha256": digest.hexdigest(),
    }


def _dataset(data: Any) -> Any:
    return data.dataset if isinstance(data, DataLoader) else data


def data_description(data: Any, count: int | None = None) -> dict[str, Any]:
    """The kind of data, where it lives (a folder's root) and how many images were read
    (``count``; by default the data's length, None when it has none)."""
    source = _dataset(data)
    if count is None:
        with contextlib.suppress(TypeError):  # no length: an iterable, an IterableDataset
            count = len(source)
    root = getattr(source, "root", None)
    shape = tuple(data.shape) if isinstance(data, torch.Tensor) else None
    return {
        "kind": type(data).__name__,
        "dataset": type(source).__name__ if source is not data else None,
        "root": None if root is None else os.fspath(root),
        "shape": None if shape is None else list(shape),
        "images": count,
    }


def file_paths(data: Any, indices: list[int]) -> list[str] | None:
    """The files of the items at ``indices`` for folder data (an ``ImageFolder``'s samples, or
    a ``Subset`` of one), else None."""
    source = _dataset(data)
    offsets: list[int] | None = None
    while isinstance(source, Subset):
        offsets = [int(source.indices[i]) for i in (indices if offsets is None else offsets)]
        source = source.dataset
    samples = getattr(source, "samples", None) or getattr(source, "files", None)
    if not isinstance(source, Dataset) or not isinstance(samples, list | tuple):
        return None
    paths = []
    for i in offsets if offsets is not None else indices:
        item = samples[i]
        paths.append(os.fspath(item[0] if isinstance(item, tuple | list) else item))
    return paths
