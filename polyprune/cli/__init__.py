"""Command line: ``polyprune demo``, ``study``, ``scan`` and ``report``.

``polyprune demo`` runs the study on the shipped zoo models and writes one report each::

    polyprune demo --out polyprune-demo

``polyprune study`` studies one unit: its top-``k`` images (cut to the unit's receptive field
unless ``--no-crop``), their clusters and, if the unit is polysemantic, one sparse subnetwork
per cluster and method, evaluated and written to ``--out`` (report, masks, ``study.pt``)::

    polyprune study --model torchvision:alexnet --weights DEFAULT --layer features.10 \\
        --unit 255 --data imagenet/val --k 1000 --out alexnet-255

``--data`` is a folder of class folders (torchvision's ``ImageFolder``) or of image files.
``--weights`` is for torchvision models (zoo models ship their weights): ``DEFAULT`` or a
torchvision weights name such as ``IMAGENET1K_V1`` reads torchvision's pretrained weights from the
local torch hub cache (never downloaded: a missing file is an error naming the URL and where to
put it), anything else is a state_dict file; its path and SHA-256 go into the provenance of the
study (or scan). Without ``--weights`` a torchvision model has random weights drawn from
``--seed`` (one warning line says so): the same seed, the same weights. ``--paper`` uses the paper's
Continuous Sparsification settings (``CSConfig.paper()``); ``--epochs`` still applies.

``polyprune scan`` ranks every channel of whole layers by how polysemantic it is, in one pass::

    polyprune scan --model zoo:planted --layer features.6 --data images/ --k 300 --out scan

``polyprune report`` reads a saved study or scan, writes its report again (in place, or to
``--out``) and prints its summary; for a scan, ``--data`` (the folder it read) draws the crop
grids again::

    polyprune report alexnet-255
    polyprune report scan --data images/ --out scan-again

Every option's range is checked while parsing, and the output directory, the model name, the
weights file and the image folder before any work. ``--out`` must be a new or empty directory,
or hold an earlier result of the same command, replaced only with ``--force``; a folder with
other files, the current directory (or one holding it) and the ``--data`` folder (or one holding
it, or one inside it) are refused. Errors are one line on stderr, never a
traceback: a user error (a bad argument or file, an image that cannot be decoded) is
``polyprune: error: ...`` with exit status 2; anything unexpected is ``polyprune: error:
TYPE: MESSAGE`` with exit status 1 (set ``POLYPRUNE_DEBUG=1`` for the traceback); Ctrl-C is
``polyprune: interrupted``, exit status 130.

``scan`` and ``study`` run on several processes when launched by ``torchrun`` (which sets
``RANK`` and ``WORLD_SIZE``): the command initializes the process group itself — ``gloo`` on the
CPU, ``nccl`` on CUDA (each rank on GPU ``LOCAL_RANK``; ``--device auto``, the default, takes
CUDA where it is available) — shards the data over the ranks, and only rank 0 prints and writes
the report; errors name the rank::

    torchrun --nproc-per-node 2 -m polyprune scan --model zoo:planted --layer features.6 \\
        --data images/ --k 100
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from .._progress import lines_only
from .._startup import release
from ._commands import COMMANDS
from ._errors import BadImage, describe, first_line
from ._errors import CLIError as CLIError
from ._inputs import image_data as image_data
from ._inputs import import_plugins as import_plugins
from ._inputs import load_model as load_model
from ._launch import process_group as process_group
from ._launch import rank_note, resolve_device
from ._parser import build_parser, exit_code

__all__ = ["main"]

#: Set to anything but ``""`` or ``"0"`` to get the traceback of an unexpected error.
DEBUG_ENV = "POLYPRUNE_DEBUG"


def _say(message: str) -> None:
    print(f"polyprune: {message}", file=sys.stderr, flush=True)


def _import_what_cs_imports(args: Any) -> None:
    """Import ``torch._dynamo`` now when the command fits Continuous Sparsification: torch
    imports it lazily inside ``torch.optim.SGD()``, and a Ctrl-C there left it partially
    initialized (``AttributeError: partially initialized module 'torch._dynamo'``) instead of
    ending the command."""
    if args.command == "demo" or (args.command == "study" and "cs" in args.methods):
        import torch._dynamo  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polyprune`` command; returns the exit status.

    0: done; 1: an unexpected error (one line; ``POLYPRUNE_DEBUG=1`` re-raises it); 2: a user
    error, one line ``polyprune: error: ...``; 130: interrupted (Ctrl-C).
    """
    if argv is not None and (
        not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv)
    ):
        raise TypeError(f"argv must be a list of str (as sys.argv[1:]) or None, got {argv!r}")
    note = rank_note()
    try:
        release()  # the start-up guard's work is done: Ctrl-C is KeyboardInterrupt again
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a bad argument (one line printed)
            return exit_code(exc)
    except KeyboardInterrupt:
        _say(f"interrupted{note}")
        return 130
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        _import_what_cs_imports(args)
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        quiet = lines_only() if getattr(args, "quiet", 0) == 1 else nullcontext()
        with process_group(getattr(args, "device", "cpu")), quiet:
            return COMMANDS[args.command](args)
    except CLIError as exc:  # ours are one line; a wrapped message may not be
        _say(f"error{note}: {first_line(exc)}")
        return 2
    except BadImage as exc:  # also when re-raised from a DataLoader worker
        _say(f"error{note}: {exc.line()}")
        return 2
    except KeyboardInterrupt:
        _say(f"interrupted{note}")
        return 130
    except Exception as exc:
        if debug:
            raise
        _say(f"error{note}: {describe(exc)}")
        print(f"(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr, flush=True)
        return 1
