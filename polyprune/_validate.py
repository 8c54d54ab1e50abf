"""Private (foundation): argument checks, written once.

Every public function checks its arguments here before any work. Each check returns the value
in its canonical form (``int``, ``float``, ``torch.device`` ...) or raises with a message that
names the argument, says what was wrong and what is valid::

    k = integer("k", k, low=1)
    keep = fraction("keep", keep)
    gen = torch.Generator().manual_seed(seed("seed", seed))

A value of the wrong type raises :class:`ArgumentTypeError`, a ``TypeError`` that is also a
``ValueError`` (as scikit-learn's ``InvalidParameterError``; 0.2 raised ``ValueError`` for some
of these, and ``except ValueError`` keeps working); a value out of range raises ``ValueError``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "SEED_MAX",
    "ArgumentTypeError",
    "choice",
    "decoder",
    "device",
    "flag",
    "floating_model",
    "fraction",
    "instance",
    "integer",
    "mapping",
    "model",
    "names",
    "number",
    "options",
    "path",
    "position",
    "seed",
    "size",
    "tensor_dict",
    "vector",
    "wrap_seed",
]

#: The largest seed: torch's generators take up to 2**64 - 1, numpy's any int ≥ 0; 2**63 - 1
#: also fits an int64 tensor and every JSON reader.
SEED_MAX = 2**63 - 1

T = TypeVar("T")
R = TypeVar("R")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ``ValueError``, as 0.2 raised for some)."""


def _got(value: object) -> str:
    text = " ".join(repr(value).split())  # one line, also for a tensor's repr
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '≥'} {low}"
    if high is not None:
        return f"{'<' if high_open else '≤'} {high}"
    return ""


def integer(
    name: str, value: object, *, low: int | None = None, high: int | None = None, why: str = ""
) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (numpy ints too; never a bool or a float).

    ``why``: the reason for the bounds, shown in the message, e.g. ``" (the codes are
    clustered)"``.
    """
    valid = " ".join(("an int", _range(low, high, False, False))).strip() + why
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}")
    number_ = int(value)
    if (low is not None and number_ < low) or (high is not None and number_ > high):
        raise ValueError(f"{name} must be {valid}, got {number_}")
    return number_


def number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> float:
    """``value`` as a finite ``float`` within the bounds (open or closed); never a bool."""
    valid = " ".join(("a finite number", _range(low, high, low_open, high_open))).strip() + why
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}")
    x = float(value)
    if (
        not math.isfinite(x)
        or (low is not None and (x <= low if low_open else x < low))
        or (high is not None and (x >= high if high_open else x > high))
    ):
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return x


def fraction(name: str, value: object, *, one: bool = True, why: str = "") -> float:
    """A number in ``(0, 1]`` (``one``) or ``(0, 1)``."""
    return number(name, value, low=0, high=1, low_open=True, high_open=not one, why=why)


def size(name: str, value: object) -> tuple[int, int]:
    """An image size ``(height, width)`` from a positive int or a pair of them."""
    pair = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a positive int or a pair (height, width), got {value!r}")
    return integer(f"{name}[0]", pair[0], low=1), integer(f"{name}[1]", pair[1], low=1)


def seed(name: str, value: object) -> int:
    """A seed: an int in ``[0, SEED_MAX]`` (what every torch and numpy generator accepts)."""
    return integer(name, value, low=0, high=SEED_MAX)


def wrap_seed(value: int) -> int:
    """A seed derived by arithmetic from checked seeds (``seed + channel``, ...) wrapped into
    ``[0, SEED_MAX]``: deterministic, and never out of range however large the parts are."""
    return value % (SEED_MAX + 1)


def flag(name: str, value: object) -> bool:
    """``True`` or ``False`` (numpy's bools too), nothing else."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentTypeError(f"{name} must be True or False, got {_got(value)}")
    return bool(value)


def choice(name: str, value: T, options: Collection[T]) -> T:
    """One of ``options``."""
    if not isinstance(value, str | int | float | tuple | type(None)) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {_got(value)}")
    return value


def instance(name: str, value: object, kind: type[T] | tuple[type, ...], what: str) -> T:
    """``value`` if it is a ``kind`` (``what``: how the message names the kind)."""
    if not isinstance(value, kind):
        raise ArgumentTypeError(f"{name} must be {what}, got {_got(value)}")
    return value  # type: ignore[return-value]


def options(name: str, value: object) -> Mapping[str, Any]:
    """A dict of keyword options, or ``None`` for none (``{}``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"{name} must be a dict of options or None, got {_got(value)}")
    return value


def device(name: str, value: object) -> torch.device:
    """A ``torch.device`` from a device or its name (``"cpu"``, ``"cuda:0"`` ...)."""
    if isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise ArgumentTypeError(
            f"{name} must be a torch.device or a device name such as 'cpu' or 'cuda:0', "
            f"got {_got(value)}"
        )
    try:
        return torch.device(value)
    except RuntimeError:
        raise ValueError(
            f"{name} must name a device such as 'cpu', 'cuda' or 'cuda:0', got {value!r}"
        ) from None


def model(name: str, value: object) -> nn.Module:
    """A ``torch.nn.Module`` whose weights are real: none on the meta device."""
    if not isinstance(value, nn.Module):
        raise ArgumentTypeError(f"{name} must be a torch.nn.Module, got {_got(value)}")
    for what, t in _tensors(value):
        if t.is_meta:
            raise ValueError(
                f"{name} has {what} on the meta device (no values): load its weights first, "
                "e.g. model.to_empty(device='cpu') then model.load_state_dict(...)"
            )
    return value


def floating_model(name: str, value: object, *, finite: bool = False) -> nn.Module:
    """:func:`model` whose floating parameters are all float32 or float64 (the gradients and
    masks polyprune computes are not reliable in half precision); ``finite``: and hold no NaN
    or infinite value (scores and fits of such a model are NaN). Buffers are not read for
    ``finite``: some models keep ``-inf`` attention masks there."""
    checked = model(name, value)
    for what, t in _tensors(checked):
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"{name} has {what} in {t.dtype}; polyprune needs float32 or float64 weights: "
                "convert a copy with model.float()"
            )
    for n, p in checked.named_parameters() if finite else ():
        bad = int((~torch.isfinite(p.detach())).sum()) if p.is_floating_point() else 0
        if bad:
            raise ValueError(
                f"{name} has parameter {n!r} with {bad} NaN or infinite value(s) of "
                f"{p.numel()}: its scores and subnetworks would be NaN; load finite weights "
                "(a diverged training run?)"
            )
    return checked


def _tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    found: list[tuple[str, Tensor]] = [
        (f"parameter {n!r}", p) for n, p in module.named_parameters()
    ]
    return found + [(f"buffer {n!r}", b) for n, b in module.named_buffers()]


def path(name: str, value: object) -> Path:
    """A file or directory path: a non-empty ``str`` or ``os.PathLike``."""
    if not isinstance(value, str | os.PathLike):
        raise ArgumentTypeError(f"{name} must be a path (a str or Path), got {_got(value)}")
    if os.fspath(value) == "":
        raise ValueError(f"{name} is empty: name a file or folder ('.' is the current directory)")
    return Path(value)


def decoder(
    from_dict: Callable[[type[T], Mapping[str, Any]], R],
) -> Callable[[type[T], Mapping[str, Any]], R]:
    """Decorate a ``from_dict(cls, data)`` (under ``@classmethod``): ``data`` must be a dict, and a
    missing or malformed field raises one ``ValueError`` naming the class and the field."""

    @functools.wraps(from_dict)
    def decode(cls: type[T], data: Mapping[str, Any]) -> R:
        where = f"{cls.__name__}.from_dict"
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(
                f"{where}: data must be a dict (as {cls.__name__}.to_dict returns), "
                f"got {_got(data)}"
            )
        try:
            return from_dict(cls, data)
        except KeyError as exc:
            raise ValueError(
                f"{where}: data lacks the field {exc.args[0]!r} (or a field inside it) that "
                f"{cls.__name__}.to_dict writes"
            ) from exc
        except (
            TypeError,
            ValueError,
            AttributeError,
            IndexError,
            RuntimeError,
            OverflowError,
        ) as exc:
            raise ValueError(
                f"{where}: data is not what {cls.__name__}.to_dict writes: {exc}"
            ) from exc

    return decode


def tensor_dict(name: str, value: object, *, finite: bool = True) -> Mapping[str, torch.Tensor]:
    """A non-empty mapping of weight names (str) to non-empty tensors (finite ones)."""
    valid = "a non-empty dict of weight names (str) to tensors, as model.named_parameters()"
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}")
    if not value:
        raise ValueError(f"{name} must be {valid}, got an empty {type(value).__name__}")
    for key, t in value.items():
        if not isinstance(key, str):
            raise ArgumentTypeError(f"{name} must be {valid}; its key {key!r} is not a str")
        if not isinstance(t, torch.Tensor):
            raise ArgumentTypeError(f"{name}[{key!r}] must be a tensor, got {_got(t)}")
        if t.numel() == 0:
            raise ValueError(f"{name}[{key!r}] is empty (shape {tuple(t.shape)})")
        if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}[{key!r}] contains NaN or infinite values")
    return value


def vector(name: str, value: object, *, finite: bool = True, what: str = "values") -> Tensor:
    """A non-empty 1-D tensor (CPU, detached) from a tensor, numpy array or list of numbers;
    ``finite``: no NaN or infinite value. ``what``: how the message names one entry."""
    valid = f"a non-empty 1-D tensor, array or list of {what}"
    if isinstance(value, Tensor):
        t = value.detach().cpu()
    elif isinstance(value, np.ndarray | list | tuple):
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}") from None
    else:
        raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be {valid}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must be {valid}, got an empty one")
    if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s) of {t.numel()}")
    return t


def position(name: str, value: object, shape: tuple[int, int]) -> tuple[int, int]:
    """A map position ``(i, j)``: a pair of ints with ``0 ≤ i < shape[0]``, ``0 ≤ j < shape[1]``."""
    h, w = shape
    valid = f"a pair (i, j) of ints with 0 ≤ i < {h}, 0 ≤ j < {w}"
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}")
    return (
        integer(f"{name}[0]", value[0], low=0, high=h - 1),
        integer(f"{name}[1]", value[1], low=0, high=w - 1),
    )


def mapping(
    name: str,
    value: object,
    what: str,
    *,
    of: type | tuple[type, ...] | None = None,
    each: str = "",
) -> Mapping[Any, Any]:
    """A non-empty mapping (``what``: how the message names it); with ``of``, every value is an
    ``of`` (``each``: how the message names one value)."""
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"{name} must be {what}, got {_got(value)}")
    if not value:
        raise ValueError(f"{name} must be {what} with at least one entry, got an empty one")
    if of is not None:
        for key, item in value.items():
            instance(f"{name}[{key!r}]", item, of, each)
    return value


def names(name: str, value: object) -> tuple[str, ...]:
    """Module names: one ``str`` or a non-empty list/tuple of distinct ``str``."""
    valid = "a module name (str) or a non-empty list of them, e.g. 'features.10'"
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        raise ArgumentTypeError(f"{name} must be {valid}, got {_got(value)}")
    if not value:
        raise ValueError(
            f"{name} must name at least one module (e.g. 'features.10'), got an empty "
            f"{type(value).__name__}"
        )
    for item in value:
        if not isinstance(item, str):
            raise ArgumentTypeError(f"{name} must be {valid}; it holds {_got(item)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} contains duplicates: {list(value)}")
    return tuple(value)
