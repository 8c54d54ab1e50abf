"""Private (cli): the weights of a torchvision model — a state_dict file (``--weights FILE``),
torchvision's pretrained weights from the local torch hub cache (``--weights DEFAULT`` or a
weights name such as ``IMAGENET1K_V1``; never downloaded), or random weights built from
``--seed`` — with one-line errors that say what is wrong, and the file's fingerprint for the
study's provenance."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .._files import sha256_file
from ._errors import CLIError, first_line

__all__ = [
    "Pretrained",
    "build_random",
    "build_torchvision",
    "check_weights_file",
    "load_weights",
    "pretrained",
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


def weights_provenance(path: str | os.PathLike[str], name: str | None = None) -> dict[str, str]:
    """The weights file for a study's provenance: its absolute path and SHA-256 (and ``name``,
    torchvision's name of pretrained weights)."""
    found = {"path": os.fspath(Path(path).resolve()), "sha256": sha256_file(path)}
    return found if name is None else {"torchvision": name, **found}


# ------------------------------------------------------------------ torchvision's own weights


@dataclass(frozen=True)
class Pretrained:
    """torchvision's pretrained weights of a model, found in the torch hub cache."""

    weights: Any  # a member of the model's torchvision WeightsEnum
    file: Path

    @property
    def name(self) -> str:
        """``"AlexNet_Weights.IMAGENET1K_V1"``."""
        return f"{type(self.weights).__name__}.{self.weights.name}"


def pretrained(model: str, which: str) -> Pretrained | None:
    """torchvision's pretrained weights ``which`` (``"DEFAULT"`` or a name such as
    ``"IMAGENET1K_V1"``) of the torchvision model ``model`` in the local torch hub cache; None
    when ``which`` names none of its weights. Not cached is a :class:`CLIError` saying where
    the file is expected and where to get it: polyprune never downloads."""
    import torch.hub
    import torchvision

    weights = torchvision.models.get_model_weights(model).__members__.get(which)
    if weights is None:
        return None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not file.is_file():
        raise CLIError(
            f"--weights {which}: {model}'s pretrained weights are not in the torch hub cache "
            f"(polyprune never downloads): put {weights.url} at {file} (TORCH_HOME moves it)"
        )
    return Pretrained(weights, file)


def _check_hash(found: Pretrained) -> None:
    """The SHA-256 prefix torchvision puts in the file name, as ``torch.hub`` checks it."""
    prefix = re.search(r"-([a-f0-9]+)\.", found.file.name)
    if prefix is not None and not sha256_file(found.file).startswith(prefix.group(1)):
        raise CLIError(
            f"--weights: {found.file} is not the file of {found.name} (its SHA-256 does not "
            f"start with {prefix.group(1)}, as its name says): download it again"
        )


@contextmanager
def _from_cache(found: Pretrained) -> Iterator[None]:
    """torchvision's model builders read ``found`` from the cache with ``weights_only=True``
    (no code is unpickled) instead of ``torch.hub.load_state_dict_from_url``, which would
    download a missing file and unpickle it with ``weights_only=False``."""
    import torchvision.models._api as api

    def cached(url: str, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if url != found.weights.url:  # pragma: no cover - torchvision reads only its own url
            raise CLIError(f"--weights: torchvision asked for {url}, not {found.weights.url}")
        return read_state_dict(found.file)

    with mock.patch.object(api, "load_state_dict_from_url", cached):
        yield


def build_torchvision(
    name: str, found: Pretrained | None, seed: int, *, warn: bool = True
) -> nn.Module:
    """The torchvision model ``name``: with torchvision's pretrained weights ``found`` (built
    as torchvision builds it for them), else with random weights drawn from ``seed`` — the
    same seed, the same weights — without changing the caller's random state; then, with
    ``warn`` (not when a weights file is loaded next), one warning line on stderr says the
    weights are random and how to pass real ones."""
    import torchvision

    if found is not None:
        _check_hash(found)
        with _from_cache(found):
            try:
                model: nn.Module = torchvision.models.get_model(name, weights=found.weights)
            except RuntimeError as exc:  # load_state_dict: the file is not of this model
                raise CLIError(
                    f"--weights: {found.file} does not fit {name}: {first_line(exc)}"
                ) from exc
        return model
    return build_random(
        lambda: torchvision.models.get_model(name, weights=None),
        f"torchvision:{name}",
        seed,
        "--weights DEFAULT for torchvision's pretrained weights (from the torch hub cache) or "
        "--weights FILE",
        warn=warn,
    )


def build_random(
    build: Callable[[], nn.Module], spec: str, seed: int, real: str, *, warn: bool = True
) -> nn.Module:
    """``build()`` with its random weights drawn from ``seed`` — the same seed, the same
    weights — without changing the caller's random state; with ``warn``, one warning line on
    stderr (rank 0 only) says the weights of ``spec`` are random and how to give ``real`` ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    if warn and os.environ.get("RANK", "0") == "0":
        print(
            f"polyprune: warning: {spec} has random weights (drawn from --seed {seed}): give "
            f"{real}",
            file=sys.stderr,
            flush=True,
        )
    return model
