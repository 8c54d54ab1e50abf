"""Private (kernel): writing result directories safely, and fingerprints of files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory", "check_writable_directory", "sha256_file"]


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
