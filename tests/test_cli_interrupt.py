"""Ctrl-C at any moment of a command is one line and exit status 130 (issue 20 §7): also while
``import polyprune`` loads torch, before ``main`` can catch it, and at the first Continuous
Sparsification fit, where torch imports ``torch._dynamo`` lazily.

A real SIGINT is sent to a child started as from a terminal: SIGINT back to its default first. A
process started as a background job of a non-interactive shell (``cmd &`` in a CI script)
inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest

from polyprune import _startup
from polyprune.cli import _import_what_cs_imports

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "POLYPRUNE_DEBUG": ""}


def _as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _loaded(line: str, module: str) -> bool:
    """Whether ``line`` of ``-X importtime`` says ``module`` is loaded."""
    return line.rsplit("|", 1)[-1].strip() == module


def test_ctrl_c_while_torch_loads_is_one_line(tmp_path):
    argv = [sys.executable, "-X", "importtime", "-m", "polyprune", "study", "--model",
            "zoo:planted", "--layer", "features.6", "--unit", "0", "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
        preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # -X importtime: one line as each module is loaded
        seen.append(line)
        if _loaded(line, "torch"):  # torch is loaded, polyprune's own modules come next
            break
    assert _loaded(seen[-1], "torch"), "".join(seen[-5:])
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-2000:]  # before: a KeyboardInterrupt traceback
    said = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert said == ["polyprune: interrupted"], rest[-2000:]


def test_a_command_that_fits_cs_imports_torch_dynamo_before_any_work(tmp_path):
    """torch imports ``torch._dynamo`` lazily (inside ``torch.optim.SGD()`` where nothing
    imported it before; here torchvision does, when the images are opened), and a Ctrl-C during
    that import became ``AttributeError: partially initialized module 'torch._dynamo'``. A
    command that will fit CS imports it before any work, inside ``main``'s Ctrl-C handling;
    others do not pay for it (it takes seconds)."""
    check = (
        "import sys; from polyprune.cli import main, _commands; "
        "assert 'torch._dynamo' not in sys.modules; opened = _commands.open_images; "
        "_commands.open_images = lambda *a: print('torch._dynamo' in sys.modules) or opened(*a); "
        "main(sys.argv[1:])"
    )
    study = ["study", "--model", "zoo:planted", "--layer", "features.6", "--unit", "0",
             "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]  # fmt: skip
    argv = [sys.executable, "-c", check, *study, "--methods", "cs", "snip"]
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
    assert done.stdout.strip() == "True", done.stderr  # imported when the images are opened
    assert "--data must be a folder of images" in done.stderr  # the study stops there
    args = argparse.Namespace(command="study", methods=["snip"])
    with patch.dict(sys.modules, {"torch._dynamo": None}):  # importing it would fail
        _import_what_cs_imports(args)  # no CS: not imported


@pytest.mark.parametrize(
    ("argv0", "orig", "cli"),
    [
        ("/usr/bin/polyprune", ["python", "/usr/bin/polyprune", "study"], True),
        ("-m", ["python", "-m", "polyprune", "scan"], True),
        ("-m", ["python", "-X", "importtime", "-u", "-m", "polyprune.cli"], True),
        ("-m", ["python", "-mpolyprune"], True),
        ("-m", ["python", "-m", "pytest"], False),
        ("-c", ["python", "-c", "import polyprune"], False),
        ("train.py", ["python", "train.py", "-m", "polyprune"], False),
    ],
)
def test_only_the_command_line_guards_start_up(monkeypatch, argv0, orig, cli):
    monkeypatch.setattr(sys, "argv", [argv0])
    monkeypatch.setattr(sys, "orig_argv", orig)
    assert _startup.launched_as_cli() is cli


def test_importing_polyprune_leaves_the_users_sigint_handler_alone():
    assert "polyprune" in sys.modules and not _startup.launched_as_cli()  # pytest imported it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
