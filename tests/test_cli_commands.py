"""What the command line exposes: study's and scan's options reach the library, ``--paper``,
``--weights`` in the provenance, ``polyprune report``, and the help text."""

from __future__ import annotations

import hashlib
import importlib
import json
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

import polyprune.cli
from polyprune import CSConfig, Unit
from polyprune._provenance import model_description
from polyprune.cli import main
from polyprune.cli._commands import cs_config
from polyprune.cli._parser import build_parser

PLANTED = ["--model", "zoo:planted", "--layer", "features.6", "-qq"]


class _Stop(Exception):
    """Raised by the spies instead of running the pipeline."""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """``study`` and ``scan`` replaced by spies that keep their arguments and stop."""
    seen: dict[str, dict[str, Any]] = {}
    for name in ("study", "scan"):

        def spy(*args: Any, _name: str = name, **kwargs: Any) -> None:
            seen[_name] = {"args": args, **kwargs}
            raise _Stop

        monkeypatch.setattr(importlib.import_module(f"polyprune.{name}"), name, spy)
    return seen


def test_study_options_reach_study(folder, tmp_path, calls, capsys):
    argv = ["study", *PLANTED, "--unit", "0", "--data", str(folder), "--k", "30",
            "--position", "2", "5", "--no-crop", "--batch-size", "8", "--workers", "1",
            "--min-cluster-size", "4", "--min-samples", "2", "--cluster-selection-method",
            "leaf", "--standardize", "--loss", "preserve", "--epochs", "7", "--held-out", "0.3",
            "--keep", "0.1", "--seed", "5", "--visualize", "--methods", "cs", "snip",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 1  # the spy's _Stop: an unexpected error
    assert "_Stop" in capsys.readouterr().err
    got = calls["study"]
    assert got["args"][1] == Unit("features.6", 0, (2, 5)) and len(got["args"][2]) == 70
    expected = {
        "k": 30, "crop": False, "batch_size": 8, "workers": 1, "min_cluster_size": 4,
        "cluster_options": {"standardize": True, "min_samples": 2,
                            "cluster_selection_method": "leaf"},
        "config": CSConfig(loss="preserve", epochs=7), "held_out": 0.3, "keep": 0.1, "seed": 5,
        "visualize": True, "methods": ["cs", "snip"], "progress": False,
    }  # fmt: skip
    assert {key: got[key] for key in expected} == expected
    assert tuple(got["args"][2][0][0].shape) == (3, 32, 32)


def test_a_position_outside_the_map_is_refused_before_any_work(folder, calls, capsys):
    argv = ["study", *PLANTED, "--unit", "0", "--data", str(folder), "--k", "30",
            "--position", "8", "0"]  # fmt: skip
    assert main(argv) == 2 and "study" not in calls
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyprune: error: position (8, 0)") and len(err.splitlines()) == 1


def test_paper_settings():
    parser = build_parser()

    def config(*args: str) -> CSConfig:
        return cs_config(parser.parse_args(["study", "--model", "m", "--layer", "l", "--unit",
                                            "0", "--data", "d", *args]))  # fmt: skip

    assert config() == CSConfig()
    assert config("--epochs", "9") == CSConfig(epochs=9)
    assert config("--loss", "separate") == CSConfig(loss="separate")
    assert config("--paper") == CSConfig.paper()
    assert config("--paper", "--epochs", "20") == CSConfig.paper(epochs=20, milestones=(16, 19))
    assert config("--paper", "--epochs", "2").milestones == ()


def test_scan_options_reach_scan(folder, tmp_path, calls):
    argv = ["scan", "--model", "zoo:planted", "--layer", "features.6", "features.3", "--data",
            str(folder), "--k", "25", "--no-crop", "--batch-size", "16", "--min-cluster-size",
            "5", "--standardize", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 1
    got = calls["scan"]
    assert got["args"][1] == ["features.6", "features.3"]
    expected = {
        "k": 25, "crop": False, "batch_size": 16, "workers": 0, "min_cluster_size": 5,
        "cluster_options": {"standardize": True, "min_samples": None,
                            "cluster_selection_method": "eom"},
    }  # fmt: skip
    assert {key: got[key] for key in expected} == expected


def test_weights_are_loaded_and_recorded_in_study_and_scan_provenance(folder, tmp_path, capsys):
    torch.manual_seed(1)
    model = torchvision.models.squeezenet1_1(weights=None)
    saved = tmp_path / "checkpoint.pt"  # a DataParallel model's training checkpoint
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, saved)
    out = tmp_path / "out"
    argv = ["study", "--model", "torchvision:squeezenet1_1", "--weights", str(saved),
            "--layer", "features.0", "--unit", "0", "--data", str(folder), "--k", "20",
            "--image-size", "32", "--methods", "snip", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    provenance = json.loads((out / "results.json").read_text())["provenance"]
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert provenance["weights"] == {"path": str(saved.resolve()), "sha256": digest}
    assert provenance["model"]["sha256"] == model_description(model)["sha256"]
    argv = ["scan", "--model", "torchvision:squeezenet1_1", "--weights", str(saved), "--layer",
            "features.0", "--data", str(folder), "--k", "20", "--image-size", "32", "--crops", "0",
            "--quiet", "--out", str(tmp_path / "scan")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    provenance = json.loads((tmp_path / "scan" / "scan.json").read_text())["provenance"]
    assert provenance["weights"] == {"path": str(saved.resolve()), "sha256": digest}
    assert provenance["model"]["sha256"] == model_description(model)["sha256"]


# ---------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def saved(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A study (polysemantic, so with subnetworks) and a scan written by the command line."""
    root = tmp_path_factory.mktemp("saved")
    assert main(["study", *PLANTED, "--unit", "0", "--data", str(folder), "--k", "20",
                 "--methods", "snip", "--out", str(root / "study")]) == 0  # fmt: skip
    assert main(["scan", *PLANTED, "--data", str(folder), "--k", "20", "--crops", "1",
                 "--out", str(root / "scan")]) == 0  # fmt: skip
    return {"study": root / "study", "scan": root / "scan"}


def test_report_writes_a_saved_study_again(saved, tmp_path, capsys):
    capsys.readouterr()
    study = tmp_path / "study"
    shutil.copytree(saved["study"], study)
    assert main(["report", str(study), "--out", str(tmp_path / "again")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("unit features.6[0] at (3, 3): ") and "snip" in printed
    assert printed.rstrip().endswith(f"report: {tmp_path / 'again' / 'report.html'}")
    for name in ("report.html", "report.md", "crops.png", "results.json", "study.pt"):
        assert (tmp_path / "again" / name).stat().st_size > 0, name
    (study / "report.html").unlink()
    assert main(["report", str(study), "--crops-per-cluster", "2"]) == 0  # in place
    assert (study / "report.html").exists() and (study / "study.pt").exists()
    assert main(["report", str(study), "--data", "x"]) == 2
    assert "--data: for scans; " in capsys.readouterr().err


def test_report_writes_a_saved_scan_again(saved, folder, tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", str(saved["scan"]), "--out", str(tmp_path / "plain")]) == 0
    printed = capsys.readouterr().out
    assert "features.6[" in printed and "(no crop grids: give --data FOLDER" in printed
    assert not list((tmp_path / "plain").glob("crops_*.png"))
    argv = ["report", str(saved["scan"]), "--data", str(folder), "--crops", "1"]
    assert main([*argv, "--out", str(tmp_path / "crops")]) == 0
    assert len(list((tmp_path / "crops").glob("crops_features.6_*.png"))) == 1
    assert main([*argv[:2], "--data", str(folder / "rings"), "--out", str(tmp_path / "x")]) == 2
    assert "has 10 images, the scan read 70" in capsys.readouterr().err
    assert main(["report", str(saved["scan"]), "--crops-per-cluster", "3"]) == 2
    assert "--crops-per-cluster: for studies" in capsys.readouterr().err


def test_report_of_a_folder_without_a_saved_result(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    for where, message in [
        (tmp_path, f"{tmp_path} holds no saved study (study.pt) or scan (scan.json and scan.pt)"),
        (tmp_path / "gone", f"{tmp_path / 'gone'} not found"),
        (tmp_path / "notes.txt", "is not a directory"),
    ]:
        assert main(["report", str(where)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("polyprune: error: ") and message in err and "\n" not in err
    (tmp_path / "study.pt").write_bytes(b"garbage")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a readable polyprune study" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ help


def test_help_lists_the_commands_and_shows_defaults(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for command in ("demo", "study", "scan", "report"):
        assert f"\n    {command}  " in top, command
    assert main(["study", "--help"]) == 0
    study = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "top activating images (cropped to the unit's receptive field unless --no-crop) " \
           "(default: 1000)" in study  # fmt: skip
    for shown in ("images per forward pass (default: 64)", "scorers (default: 0.05)",
                  "(scan) (default: 0.05)", "(default: eom)",
                  "(default: polyprune-study)", "(default: auto)", "(default: True)"):  # fmt: skip
        assert study.count(shown) == 1, shown
    assert "(default: None)" not in study and "(default: False)" not in study
    assert "default 1000" not in study and "default 64" not in study  # not written twice
    assert main(["scan", "--help"]) == 0
    assert "crop grids of the N most polysemantic channels (default: 4)" in " ".join(
        capsys.readouterr().out.split()
    )
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"polyprune {polyprune.__version__}"


def test_the_module_docstring_shows_every_command():
    doc = polyprune.cli.__doc__ or ""
    for command in ("demo", "study", "scan", "report"):
        assert f"\n    polyprune {command} " in doc, command


def test_python_m_polyprune_cli_runs_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["polyprune", "demo", "--out", "/proc/polyprune-x"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("polyprune.cli", run_name="__main__")
    assert done.value.code == 2
    assert "polyprune: error: --out /proc/polyprune-x cannot be" in capsys.readouterr().err
