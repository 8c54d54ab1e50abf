"""Private (foundation): writing files and result directories safely (a save replaces only an
earlier polyprune result of its kind, when asked, and all at once), reading saved files back,
fingerprints of files, and exceptions in one line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from . import _validate

__all__ = [
    "MANIFEST",
    "TargetExists",
    "atomic_directory",
    "atomic_write",
    "check_file_target",
    "check_result_directory",
    "check_writable_directory",
    "describe",
    "first_line",
    "load_saved",
    "read_manifest",
    "save_torch",
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


class TargetExists(FileExistsError, ValueError):
    """Something is at the target of a save that the save may not replace: a ``FileExistsError``
    and a ``ValueError`` (as ``io.UnsupportedOperation`` is an ``OSError`` and a ``ValueError``)."""


#: The manifest of a result directory: ``{"polyprune": KIND, "format": 1, "files": [...]}``.
MANIFEST = "polyprune.json"
#: Names of polyprune's temporary files and directories beside a target called ``NAME``:
#: ``.NAME.polyprune-XXXXXXXX.tmp`` (a file), ``.NAME.writing-XXXXXXXX``, ``.NAME.old-XXXXXXXX``.
_RANDOM = "[a-z0-9_]{8}"


def _listing(directory: Path) -> list[str]:
    """Every file under ``directory``, as sorted POSIX paths relative to it."""
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir()
    )


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest polyprune wrote into ``directory``; None when there is none or it is not
    one of polyprune's (a user's ``polyprune.json`` is not ours)."""
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("polyprune"), str):
        return None
    files = data.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return data


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_result_directory(
    path: str | os.PathLike[str],
    kind: str,
    *,
    overwrite: bool = False,
    what: str = "directory",
    force: str = "overwrite=True",
    protect: tuple[tuple[str, str | os.PathLike[str]], ...] = (),
) -> Path:
    """``path`` as the directory a save of a ``kind`` result (``"study"``, ``"scan"``, ...) may
    write, checked before any work; a one-line ``ValueError`` (:class:`TargetExists` for
    something already there) that says what is there and what to do, else the path.

    Accepted: a new directory (its parent need not exist), an empty one, and, with
    ``overwrite``, one that holds an earlier result of the same kind and nothing else (its
    :data:`MANIFEST` lists every file in it). Refused: ``""``, the current directory or one
    that holds it, a file, a folder with other files, a result of another kind, and any
    directory that is, holds or lies inside a ``protect`` path (``(flag, path)`` pairs such
    as ``("--data", folder)``). ``what`` names the path in messages (``"--out X"``); ``force``
    is how to ask for a replacement (``"overwrite=True"``, ``"--force"``).
    """
    overwrite = _validate.flag("overwrite", overwrite)
    if os.fspath(path) == "":
        raise ValueError(f"{what} is empty: give the name of a new directory")
    out = Path(path)
    full = out.resolve()
    try:
        cwd: Path | None = Path.cwd().resolve()
    except OSError:  # a current directory that was deleted holds nothing
        cwd = None
    if cwd is not None and _inside(cwd, full):
        where = "the current directory" if full == cwd else "a parent of the current directory"
        raise TargetExists(f"{what} {out} is {where}: give the name of a new directory")
    for flag, other in protect:
        theirs = Path(other).resolve()
        if _inside(theirs, full) or _inside(full, theirs):
            rel = "is" if full == theirs else "holds" if full in theirs.parents else "lies in"
            raise TargetExists(
                f"{what} {out} {rel} the {flag} folder {other}: give a directory outside it"
            )
    if out.exists() and not out.is_dir():
        raise TargetExists(f"{what} {out} is a file, not a directory: give another directory")
    if out.is_dir():
        _check_replaceable(out, kind, overwrite, what, force)
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


def _check_replaceable(out: Path, kind: str, overwrite: bool, what: str, force: str) -> None:
    """Refuse the existing directory ``out`` unless it is empty or (with ``overwrite``) holds
    only an earlier ``kind`` result. Only a result's own (small) tree is walked: a large folder
    of the user's is refused by its first level."""
    try:
        manifest = read_manifest(out)
        if manifest is None:
            entries = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        else:
            files = _listing(out)
    except OSError as exc:
        raise ValueError(f"{what} {out} cannot be read ({exc.strerror or exc})") from exc
    if manifest is None:
        if not entries:
            return
        raise TargetExists(
            f"{what} {out} already holds {_shown(entries)} and is no polyprune {kind}: give a "
            "new or empty directory"
        )
    if manifest["polyprune"] != kind:
        raise TargetExists(
            f"{what} {out} holds a polyprune {manifest['polyprune']}, not a {kind}: give "
            "another directory"
        )
    foreign = [f for f in files if f not in set(manifest["files"]) | {MANIFEST}]
    if foreign:
        raise TargetExists(
            f"{what} {out} holds a polyprune {kind} and files it did not write "
            f"({_shown(foreign)}): move them out or give another directory"
        )
    if not overwrite:
        raise TargetExists(
            f"{what} {out} holds an earlier polyprune {kind}: pass {force} to replace it, "
            "or give another directory"
        )


def check_writable_directory(path: str | os.PathLike[str], what: str = "the output") -> Path:
    """``path`` as a new directory that can be written (see :func:`check_result_directory`)."""
    return check_result_directory(path, "result", what=what)


def _strays(parent: Path, name: str, *kinds: str) -> list[Path]:
    """polyprune's temporary files or directories of target ``name`` left in ``parent`` by a
    save that was killed (``kinds``: ``"tmp"``, ``"writing"``, ``"old"``)."""
    patterns = {
        "tmp": rf"\.{re.escape(name)}\.polyprune-{_RANDOM}\.tmp",
        "writing": rf"\.{re.escape(name)}\.writing-{_RANDOM}",
        "old": rf"\.{re.escape(name)}\.old-{_RANDOM}",
    }
    wanted = [re.compile(patterns[k]) for k in kinds]
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if any(r.fullmatch(p.name) for r in wanted))


def _clean_strays(out: Path) -> None:
    """Remove what a killed directory save of ``out`` left beside it; an earlier result moved
    aside (``.NAME.old-*/previous``) goes back to ``out`` when ``out`` is missing."""
    for stray in _strays(out.parent, out.name, "writing", "old"):
        previous = stray / "previous"
        if stray.name.startswith(f".{out.name}.old-") and previous.is_dir() and not out.exists():
            os.replace(previous, out)
        shutil.rmtree(stray, ignore_errors=True)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system can
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], kind: str, *, overwrite: bool = False
) -> Iterator[Path]:
    """Write a ``kind`` result directory all at once: yield a new temporary sibling, then move
    it in place.

    Checked first (:func:`check_result_directory`): only a new or empty directory, or with
    ``overwrite`` an earlier ``kind`` result, is replaced; checked again before the move (the
    body may take long). The body's files get a :data:`MANIFEST`. If the body raises, the
    temporary directory is removed and an earlier ``path`` is left whole; if it succeeds,
    ``path`` holds exactly what the body wrote. A save killed between the two renames leaves
    the earlier result in ``.NAME.old-*``; the next save of ``path`` puts it back, then
    removes what killed saves left.
    """
    out = Path(path)
    _clean_strays(out)
    check_result_directory(out, kind, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.writing-"))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); results are to be shared
    try:
        yield tmp
        files = _listing(tmp)
        _write_bytes(tmp / MANIFEST, json.dumps({"polyprune": kind, "format": 1, "files": files},
                                                indent=1).encode())  # fmt: skip
        for name in files:
            _fsync_file(tmp / name)
        _fsync_directory(tmp)
        check_result_directory(out, kind, overwrite=overwrite)  # again: the body took time
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
    _fsync_directory(out.parent)


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def check_file_target(
    path: str | os.PathLike[str],
    what: str,
    *,
    overwrite: bool = False,
    same_kind: Callable[[Path], bool] | None = None,
) -> Path:
    """``path`` as a file a save of a polyprune ``what`` (``"masks file"``) may write, checked
    before any work: its directory exists, and nothing is there or, with ``overwrite``, a file
    ``same_kind`` recognises as an earlier ``what``. Else a one-line ``ValueError``
    (:class:`TargetExists` for something already there) saying what is there and what to do."""
    overwrite = _validate.flag("overwrite", overwrite)
    where = os.fspath(path)
    if where == "":
        raise ValueError(f"the path of the {what} is empty: give a file name")
    out = Path(path)
    if out.is_dir():
        raise TargetExists(f"{where!r} is a directory: give the path of a file in it")
    if not out.parent.is_dir():
        raise ValueError(f"cannot save the {what} to {where!r}: {out.parent} is not a directory")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise TargetExists(
                f"{where!r} already exists: pass overwrite=True to replace an earlier {what}, "
                "or give another path"
            )
        if not out.is_file() or same_kind is None or not same_kind(out):
            raise TargetExists(
                f"{where!r} is not a polyprune {what}, and polyprune replaces only its own: "
                "give another path"
            )
    return out


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write the file ``path`` all at once: ``write`` fills a temporary file beside it, which is
    flushed to disk and renamed over ``path``. A write that fails or is killed leaves the
    earlier file whole; the temporary files of earlier killed writes to ``path`` are removed
    first. Check the target before (:func:`check_file_target`)."""
    out = Path(path)
    for stray in _strays(out.parent, out.name, "tmp"):
        with contextlib.suppress(OSError):
            stray.unlink()
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.polyprune-", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private (0600)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(out.parent)


def save_torch(
    obj: Any, path: str | os.PathLike[str], what: str, fmt: str, *, overwrite: bool = False
) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`), ``path`` checked
    first (:func:`check_file_target`): an existing file is replaced only with ``overwrite`` and
    only when it is a polyprune ``what`` of format ``fmt``."""
    check_file_target(path, what, overwrite=overwrite, same_kind=lambda p: _is_saved(p, fmt))
    atomic_write(path, lambda f: torch.save(obj, f))


def _is_saved(path: Path, fmt: str) -> bool:
    """Whether ``path`` is a file polyprune saved with format ``fmt``."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"PK":  # torch.save writes a zip archive: don't read anything else
                return False
        load_saved(path, fmt, fmt)
    except (OSError, ValueError):
        return False
    return True


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
