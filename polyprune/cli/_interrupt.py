"""Private (cli): Ctrl-C always ends a command.

Python turns SIGINT into a ``KeyboardInterrupt`` in whatever Python code runs at that moment.
When that code is a finalizer (a ``__del__`` or a ``weakref`` callback run by the garbage
collector: a progress bar of an earlier stage, say), Python prints "Exception ignored" and goes
on, and the interrupt is lost; code that catches and drops ``KeyboardInterrupt`` (a plugin's)
loses it too. A person presses Ctrl-C again; a script that sent one SIGINT waits forever.

So while a command runs, SIGINT raises ``KeyboardInterrupt`` as usual and starts a watchdog
thread. Until the command reports it has stopped (:meth:`Interrupts.stopped`), the watchdog
raises the interrupt again every :data:`RETRY` seconds, and :data:`GIVE_UP` seconds after the
first SIGINT it prints ``polyprune: interrupted`` and ends the process with status 130 at once
(``os._exit``: no further clean-up, which a command-line process does not need).
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any

__all__ = ["GIVE_UP", "RETRY", "Interrupts"]

#: Seconds between repeats of an interrupt that did not end the command.
RETRY = 2.0
#: Seconds after the first SIGINT when the process ends at once, whatever it is doing.
GIVE_UP = 10.0


class Interrupts:
    """Context manager: SIGINT handling while a command runs (module docstring).

    Installed only in the main thread and only over Python's default SIGINT handler (a shell
    that started the process with SIGINT ignored, or an embedding program with its own handler,
    keeps it); the previous handler is restored on exit.
    """

    def __init__(self, message: str = "polyprune: interrupted") -> None:
        self._message = message
        self._stopped = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupts:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopped()
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def stopped(self) -> None:
        """The command has stopped (the interrupt reached it, or it ended): no more repeats."""
        self._stopped.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._stopped.is_set():  # a repeat that came after the command stopped
            return
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="polyprune-interrupt")
            self._watchdog.daemon = True
            self._watchdog.start()
        raise KeyboardInterrupt

    def _watch(self) -> None:
        deadline = time.monotonic() + GIVE_UP
        while not self._stopped.wait(min(RETRY, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                print(self._message, file=sys.stderr, flush=True)
                os._exit(130)
            _thread.interrupt_main(signal.SIGINT)
