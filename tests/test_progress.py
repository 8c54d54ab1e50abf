"""The progress facility: plain stage lines off a terminal, heartbeats, nesting, CLI -q/-qq."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

import polyprune as pp
from polyprune import _progress
from polyprune._dist import run_jobs
from polyprune.cli import main


def _clean(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, repr(text)


def test_a_stage_is_one_line_with_its_count_and_time(capsys):
    with _progress.stage("top-3 of features.6[0]", 10, unit="img") as s:
        for _ in range(5):
            s.update(2)
    err = capsys.readouterr().err
    _clean(err)
    assert err.count("\n") == 1
    assert err.startswith("[polyprune] top-3 of features.6[0]: 10/10 img, ") and err.endswith(
        " s\n"
    )


def test_unknown_totals_are_counted_and_nested_stages_stay_silent(capsys):
    with _progress.stage("outer", unit="round") as outer:
        for _ in range(3):
            list(_progress.staged(range(4), "inner"))
            outer.update()
    err = capsys.readouterr().err
    assert err.splitlines() == [err.splitlines()[0]] and "outer: 3 round" in err
    assert "inner" not in err


def test_a_long_stage_prints_a_heartbeat_naming_every_running_stage(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "HEARTBEAT_S", 0.0)
    with _progress.stage("FORCE", 2, unit="round") as outer:
        with _progress.stage("FORCE round 1", 6, unit="img") as inner:
            inner.update(3)
        outer.update()
    lines = capsys.readouterr().err.splitlines()
    assert any("FORCE: 0/2 round" in line and "FORCE round 1: 3/6 img" in line for line in lines)
    assert lines[-1].startswith("[polyprune] FORCE: 1/2 round")


def test_no_heartbeat_before_its_time(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "HEARTBEAT_S", 3600.0)
    monkeypatch.setitem(_progress._state, "said", -1e9)  # long silent: the stage's start counts
    with _progress.stage("quick", 100) as s:
        for _ in range(100):
            s.update()
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_a_failed_stage_prints_nothing_and_leaves_no_stage_running(capsys):
    with pytest.raises(ZeroDivisionError), _progress.stage("doomed", 2) as s:
        s.update()
        _ = 1 // 0
    assert capsys.readouterr().err == "" and not _progress._running


def test_bars_on_a_terminal_become_lines_with_lines_only(monkeypatch, capsys):
    tty = io.StringIO()
    monkeypatch.setattr(tty, "isatty", lambda: True)
    monkeypatch.setattr("sys.stderr", tty)
    with _progress.stage("bar", 2) as s:
        s.update(2)
    assert "\r" in tty.getvalue()  # tqdm draws a bar
    tty.seek(0)
    tty.truncate()
    with _progress.lines_only(), _progress.stage("line", 2) as s:
        s.update(2)
    assert tty.getvalue().startswith("[polyprune] line: 2/2 it, ")
    _clean(tty.getvalue())


def test_run_jobs_prints_one_line_with_its_total(capsys):
    assert run_jobs([1, 2, 3], lambda j: j + 1, progress=True, what="jobs") == [2, 3, 4]
    err = capsys.readouterr().err
    _clean(err)
    assert err == "[polyprune] jobs: 3/3 jobs\n"


def test_units_read_as_layer_and_channel():
    assert str(pp.Unit("features.6", 0)) == "features.6[0]"
    assert str(pp.Unit("features.6", 0, (3, 4))) == "features.6[0]@(3, 4)"


def _small() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))


def test_library_stage_lines_use_human_labels(capsys):
    pp.top_activating(_small(), pp.Unit("2", 1), torch.randn(9, 3, 12, 12), k=2, batch_size=4)
    err = capsys.readouterr().err
    _clean(err)
    assert err.startswith("[polyprune] top-2 of 2[1]: 9/9 img, ") and "Unit(" not in err


@pytest.mark.parametrize(("flags", "lines"), [([], True), (["-q"], True), (["-qq"], False)])
def test_cli_quiet_levels(tmp_path, capsys, flags, lines):
    data = tmp_path / "images"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (12, 12), (40 * i, 9 * i, 200)).save(data / label / f"{i}.png")
    argv = ["scan", "--model", "zoo:planted", "--layer", "features.6", "--data", str(data),
            "--k", "10", "--crops", "0", "--out", str(tmp_path / "o"), *flags]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    _clean(err)
    assert ("[polyprune] scan features.6: 12/12 img, " in err) is lines
    assert ("[polyprune] clustering: " in err) is lines
