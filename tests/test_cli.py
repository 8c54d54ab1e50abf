"""The command line: `polyprune study` end to end, and one-line errors for bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polyprune import zoo
from polyprune.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    return zoo.write_image_folder(root / "concepts", 10, size=32, seed=3)


def test_study_on_an_image_folder(folder, tmp_path, capsys):
    out = tmp_path / "study"
    code = main([
        "study", "--model", "zoo:concepts-merged", "--layer", "features.9", "--unit", "3",
        "--data", str(folder), "--out", str(out), "--k", "40", "--methods", "cs", "snip",
        "--epochs", "3", "--quiet",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "unit features.9[3]" in printed and f"report: {out / 'report.html'}" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["k"] == 40 and data["unit"]["layer"] == "features.9"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "keras:vgg"], "--model must be torchvision:NAME, timm:NAME or zoo:NAME"),
        (["--model", "torchvision:alexnett"], "unknown torchvision model 'alexnett'"),
        (["--model", "zoo:digits"], "unknown zoo model 'digits'"),
        (["--layer", "features.90"], "unknown layer 'features.90'"),
        (["--unit", "6"], "channel 6 is out of range"),
        (["--data", "/nonexistent/images"], "not found: /nonexistent/images"),
        (["--k", "1000"], "--k 1000 is larger than the 70 images"),
        (["--model", "torchvision:alexnet", "--weights", "/nope.pt"], "weights file not found"),
        (["--threads", "0"], "--threads: must be ≥ 1, got 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(folder, capsys, args, message):
    base = {"--model": "zoo:concepts-merged", "--layer": "features.9", "--unit": "3",
            "--data": str(folder), "--k": "10"}  # fmt: skip
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["study", "--quiet"] + [item for pair in base.items() for item in pair]
    if "torchvision:alexnet" in args:
        argv[argv.index("features.9")] = "features.10"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyprune: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_is_installed_and_reports_usage():
    script = Path(sys.executable).parent / "polyprune"  # installed by `pip install -e .`
    done = subprocess.run([str(script), "study"], capture_output=True, text=True)
    assert done.returncode == 2 and "required" in done.stderr
