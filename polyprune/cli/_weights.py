"""Private (cli): reading ``--weights`` — a state_dict file for a torchvision model — with one-line
errors that say what is wrong with the file, and its fingerprint for the study's provenance."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._files import sha256_file
from ._errors import CLIError, first_line

__all__ = [
    "check_weights_file",
    "load_weights",
    "read_state_dict",
    "state_dict_mismatch",
    "weights_provenance",
]


def check_weights_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as an existing file, else a :class:`CLIError` (not found, not a file)."""
    file = Path(path)
    if not file.exists():
        raise CLIError(f"weights file not found: {os.fspath(path)}")
    if not file.is_file():
        raise CLIError(f"--weights {os.fspath(path)} is not a file")
    return file


#: Keys under which training scripts nest the model's state_dict in a checkpoint.
_WRAPPERS = ("state_dict", "model")
#: How many missing or unexpected keys a message names.
_SHOWN = 3


def _unreadable(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words."""
    text = str(exc)
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "the file is empty"
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # torch.save: zip; before 1.6: pickle
        return f"neither a zip archive nor a pickle: it starts with {head!r}"
    if "Weights only load failed" in text:
        detail = text.partition("WeightsUnpickler error: ")[2].split(". ")[0].strip()
        reason = "it holds pickled Python objects that are not tensors"
        return f"{reason}: {detail}" if detail else reason
    first = text.strip().splitlines()[0].split(". ")[0][:100] if text.strip() else ""
    error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return f"a truncated or corrupt archive, {error}" if head.startswith(b"PK") else error


def _kind(value: object) -> str:
    """A value's type as a user would name it, with its article: ``a Tensor``, ``an int``."""
    name = "Tensor" if isinstance(value, Tensor) else type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state_dict in ``path``, read with ``torch.load(weights_only=True)`` (no code runs).

    Accepts a bare state_dict and checkpoints that nest it under ``"state_dict"`` or
    ``"model"``; strips the ``module.`` prefix of ``DataParallel``/``DistributedDataParallel``
    saves when every key has it. Anything else is a :class:`CLIError` naming the file.
    """
    file = check_weights_file(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise here
            warnings.simplefilter("ignore")
            state: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises EOFError, RuntimeError, UnpicklingError, IndexError…
        raise CLIError(
            f"cannot read weights from {file}: not a PyTorch state_dict file "
            f"({_unreadable(file, exc)})"
        ) from exc
    expected = "expected a state_dict: a dict of parameter names to tensors"
    if isinstance(state, Mapping):
        for key in _WRAPPERS:
            if key in state and isinstance(state[key], Mapping | list | tuple):
                if not isinstance(state[key], Mapping):
                    raise CLIError(
                        f"cannot use weights from {file}: its {key!r} holds "
                        f"{_kind(state[key])}, {expected}"
                    )
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise CLIError(f"cannot use weights from {file}: it holds {_kind(state)}, {expected}")
    if not state:
        raise CLIError(f"cannot use weights from {file}: it holds an empty dict, {expected}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CLIError(
                f"cannot use weights from {file}: its entry {key!r} is {_kind(value)}, {expected}"
            )
    prefix = "module."
    if all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return dict(state)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (", …" if len(keys) > _SHOWN else "")


def state_dict_mismatch(model: nn.Module, state: Mapping[str, Tensor]) -> str | None:
    """How ``state`` does not fit ``model`` (missing and unexpected keys, the first shape that
    differs), in one line; None when it fits."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_names(unexpected)})")
    for key, tensor in own.items():
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            parts.append(
                f"first shape mismatch: {key} is {tuple(state[key].shape)} in the file, "
                f"{tuple(tensor.shape)} in the model"
            )
            break
    return "; ".join(parts) or None


def load_weights(model: nn.Module, path: str | os.PathLike[str], name: str) -> None:
    """Load the state_dict in ``path`` into ``model`` (the model ``name``), exactly (strict)."""
    state = read_state_dict(path)
    mismatch = state_dict_mismatch(model, state)
    if mismatch is not None:
        raise CLIError(f"weights in {os.fspath(path)} do not fit {name}: {mismatch}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise CLIError(
            f"weights in {os.fspath(path)} do not fit {name}: {first_line(exc)}"
        ) from exc


def weights_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """The weights file for a study's provenance: its absolute path and SHA-256."""
    return {"path": os.fspath(Path(path).resolve()), "sha256": sha256_file(path)}
