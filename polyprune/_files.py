"""Private (kernel): writing result directories safely, reading saved files back, fingerprints
of files, and exceptions in one line."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_directory",
    "check_writable_directory",
    "describe",
    "first_line",
    "load_saved",
    "sha256_file",
]


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, stripped (``""`` when none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def describe(exc: BaseException) -> str:
    """``"TYPE: first line"``, or ``"TYPE"`` when the message is empty."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_saved(path: str | os.PathLike[str], what: str, fmt: str | None = None) -> Any:
    """What polyprune saved at ``path`` with ``torch.save``, read onto the CPU with
    ``weights_only=True``. A file that cannot be read (empty, truncated, not torch's) or, with
    ``fmt``, is not a dict of that ``"format"`` is a ``ValueError`` naming it as not a
    polyprune ``what``; a missing file is ``FileNotFoundError``."""
    where = os.fspath(path)
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises EOFError, RuntimeError, pickle errors, ...
        raise ValueError(f"{where!r} is not a readable polyprune {what}: {describe(exc)}") from exc
    if fmt is not None and (not isinstance(data, dict) or data.get("format") != fmt):
        raise ValueError(f"{where!r} is not a polyprune {what}")
    return data


def check_writable_directory(path: str | os.PathLike[str], what: str = "the output") -> Path:
    """``path`` as a directory that can be written, checked before any work is done.

    Refuses (``ValueError`` naming the path) an existing file, a path under a file, and a place
    where no directory can be created or written. Creates nothing that stays behind.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{what} {out} is a file, not a directory")
    parent = out if out.exists() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {out} lies under the file {parent}")
    try:
        with tempfile.TemporaryDirectory(dir=parent, prefix=".polyprune-check-"):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {out} cannot be written ({exc.strerror or exc})") from exc
    return out


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a directory all at once: yield a temporary sibling, then move it in place.

    If the body raises, the temporary directory is removed and an earlier ``path`` is left
    whole; if it succeeds, ``path`` holds exactly what the body wrote (no stale file of an
    earlier result survives).
    """
    out = Path(path)
    check_writable_directory(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.writing-"))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); results are to be shared
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "previous")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
