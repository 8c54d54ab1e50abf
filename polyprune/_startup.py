"""Private (foundation): Ctrl-C while the command line starts — while ``import polyprune``
loads torch, before :func:`polyprune.cli.main` can catch it — ends the command with one line,
not a traceback.

Importing it guards (:func:`guard`). Only the ``polyprune`` command (the console script,
``python -m polyprune`` or ``python -m polyprune.cli``, also as torchrun's workers) is
affected: ``import polyprune`` in the user's own program never changes its signal handlers.
Standard library only, so it runs before the heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

__all__ = ["guard", "launched_as_cli", "release"]

_MODULES = ("polyprune", "polyprune.cli")
#: Options of ``python`` that take the next argument as their value.
_WITH_VALUE = ("-X", "-W", "--check-hash-based-pycs")


def _interrupted(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("polyprune: interrupted\n")
    sys.stderr.flush()
    raise SystemExit(130)


def launched_as_cli() -> bool:
    """Whether this process is the ``polyprune`` command line."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    if os.path.splitext(script)[0] in ("polyprune", "polyprune-script"):
        return True
    argv = list(getattr(sys, "orig_argv", []))[1:]
    while argv:
        arg = argv.pop(0)
        if arg == "-m":
            return bool(argv) and argv[0] in _MODULES
        if arg.startswith("-m"):
            return arg[2:] in _MODULES
        if arg in _WITH_VALUE:
            argv = argv[1:]
        elif arg == "-c" or not arg.startswith("-"):  # a command or a script: the user's
            return False
    return False


def guard() -> None:
    """In the command line, until :func:`release`: Ctrl-C prints ``polyprune: interrupted``
    and exits with status 130. Kept as it is when SIGINT is not Python's default (ignored in
    a background job, or the user's own handler)."""
    if not launched_as_cli() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    with contextlib.suppress(ValueError):  # not the main thread: signals cannot be set there
        signal.signal(signal.SIGINT, _interrupted)


def release() -> None:
    """Ctrl-C raises ``KeyboardInterrupt`` again (``main`` turns it into the same line)."""
    if signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


guard()  # on import: ``polyprune/__init__`` imports this module before anything heavy
