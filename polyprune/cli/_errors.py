"""Private (cli): the errors the command line turns into one line and exit status 2."""

from __future__ import annotations

from .._files import describe, first_line

__all__ = ["BadImage", "CLIError", "describe", "first_line"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class BadImage(OSError):
    """An image file that cannot be read, raised while the data is streamed.

    Its message starts with ``"cannot read image PATH"``. It may be raised in a ``DataLoader``
    worker process: torch re-raises it in the main process as the same class, built from one
    string (so the constructor takes exactly one), that holds the worker's whole traceback;
    :meth:`line` finds the original message in it.
    """

    PREFIX = "cannot read image "

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def line(self) -> str:
        """The one line to show: the original message, also after a worker's re-raise."""
        text = str(self)
        for line in reversed(text.splitlines()):
            at = line.find(self.PREFIX)
            if at >= 0:
                return line[at:]
        return first_line(self) or "cannot read an image"
