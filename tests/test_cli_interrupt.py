"""Ctrl-C always ends a command with status 130 and one line, never a traceback: a real SIGINT
while Continuous Sparsification trains; an interrupt that is lost once (as one raised inside a
garbage-collector finalizer is) is raised again; and a process that drops every interrupt still
ends, ``GIVE_UP`` seconds after the SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from polyprune import zoo
from polyprune.cli import _interrupt

ROOT = Path(__file__).resolve().parents[1]

# A scorer plugin (--import) that drops the first STUBBORN_SWALLOW interrupts (-1: all of them).
STUBBORN = """
import os, sys, time
from polyprune.scoring import BaseScorer


class Stubborn(BaseScorer, name="stubborn"):
    def compute(self, job):
        left, told = int(os.environ["STUBBORN_SWALLOW"]), False
        while True:
            try:  # "waiting" is printed inside the try: the test's SIGINT cannot land outside it
                if not told:
                    told = True
                    print("stubborn: waiting", file=sys.stderr, flush=True)
                while True:
                    time.sleep(0.05)
            except KeyboardInterrupt:
                if left == 0:
                    raise
                left -= 1
                print("stubborn: swallowed", file=sys.stderr, flush=True)
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.write_image_folder(tmp_path_factory.mktemp("images") / "data", 10, size=32, seed=3)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    (root / "stubborn_scorer.py").write_text(textwrap.dedent(STUBBORN))
    return root


def interrupt(argv: list[str], ready: str, env: dict[str, str]) -> tuple[int, str, float]:
    """Start ``python -m polyprune ARGV``, send one SIGINT once stderr shows ``ready``: (exit
    status, the rest of stderr, seconds from the SIGINT to the exit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POLYPRUNE_DEBUG": "", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "polyprune", *argv],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:  # progress lines: wait for the stage
        seen.append(line)
        if ready in line:
            break
    assert seen and ready in seen[-1], "".join(seen)
    proc.send_signal(signal.SIGINT)
    start = time.perf_counter()
    try:
        _, rest = proc.communicate(timeout=_interrupt.GIVE_UP + 50)
    finally:
        proc.kill()
    return proc.returncode, rest, time.perf_counter() - start


def study(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["study", "--model", "zoo:planted", "--layer", "features.6", "--unit", "0",
            "--data", str(folder), "--k", "20", "--threads", "1", "--out", str(out),
            *extra]  # fmt: skip


def test_ctrl_c_during_a_study_exits_130_without_a_traceback(folder, tmp_path):
    """A real SIGINT to ``python -m polyprune`` while Continuous Sparsification trains."""
    argv = study(folder, tmp_path / "out", "--methods", "cs", "--epochs", "100000")
    code, rest, _ = interrupt(argv, "3/4 fitting", {})
    assert code == 130, rest
    assert rest.strip().splitlines()[-1] == "polyprune: interrupted"
    assert "Traceback" not in rest and not (tmp_path / "out").exists()


def test_a_lost_interrupt_is_raised_again(folder, plugin, tmp_path):
    argv = study(folder, tmp_path / "out", "--methods", "stubborn", "--import", "stubborn_scorer")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{plugin}", "STUBBORN_SWALLOW": "1"}
    code, rest, seconds = interrupt(argv, "stubborn: waiting", env)
    assert code == 130, rest
    assert rest.count("stubborn: swallowed") == 1  # the second one ended the command
    assert rest.strip().splitlines()[-1] == "polyprune: interrupted"
    assert "Traceback" not in rest and not (tmp_path / "out").exists()
    assert _interrupt.RETRY * 0.9 < seconds < _interrupt.GIVE_UP


def test_a_process_that_drops_every_interrupt_still_ends(folder, plugin, tmp_path):
    argv = study(folder, tmp_path / "out", "--methods", "stubborn", "--import", "stubborn_scorer")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{plugin}", "STUBBORN_SWALLOW": "-1"}
    code, rest, seconds = interrupt(argv, "stubborn: waiting", env)
    assert code == 130, rest
    repeats = int(_interrupt.GIVE_UP / _interrupt.RETRY)  # the SIGINT, then every RETRY s
    assert repeats - 1 <= rest.count("stubborn: swallowed") <= repeats + 1  # timer jitter
    assert rest.strip().splitlines()[-1] == "polyprune: interrupted"
    assert "Traceback" not in rest and not (tmp_path / "out").exists()
    assert _interrupt.GIVE_UP * 0.9 < seconds < _interrupt.GIVE_UP + 30


def test_the_handler_is_restored_and_left_alone_off_the_main_thread():
    import signal as s
    import threading

    before = s.getsignal(s.SIGINT)
    with _interrupt.Interrupts():
        inside = s.getsignal(s.SIGINT)
    assert s.getsignal(s.SIGINT) is before
    if before is s.default_int_handler:
        assert inside is not before  # ours, while the command runs
    seen = []
    thread = threading.Thread(target=lambda: seen.append(_interrupt.Interrupts().__enter__()))
    thread.start()
    thread.join()
    assert s.getsignal(s.SIGINT) is before and seen and not seen[0]._installed
