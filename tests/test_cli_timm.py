"""``--model timm:NAME`` (issue 24 §4): a timm model built with ``pretrained=False``, its random
weights drawn from ``--seed`` as for a torchvision model; one-line errors without timm or for an
unknown name."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from polyprune.cli import main
from polyprune.cli._inputs import load_model

pytest.importorskip("timm")  # an optional extra; CI installs it with [dev]

TINY = ["--model", "timm:test_resnet", "--layer", "layer2.0.conv1", "--image-size", "32",
        "--k", "20", "--quiet"]  # fmt: skip


def test_a_timm_model_is_scanned_with_weights_from_the_seed(folder, tmp_path, capsys):
    assert main(["scan", *TINY, "--data", str(folder), "--seed", "2", "--crops", "0",
                 "--out", str(tmp_path / "scan")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "polyprune: warning: timm:test_resnet has random weights (drawn from --seed 2)" in err
    scanned = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert scanned["provenance"]["weights"] == {"random": True, "seed": 2}
    assert len(scanned["table"]) > 0


def test_the_seed_draws_the_weights_of_a_timm_model(capsys):
    def weights(seed: int) -> dict[str, torch.Tensor]:
        model, size, normalize = load_model("timm:test_resnet", None, seed)
        assert size == 160 and normalize and not model.training  # timm's pretrained_cfg size
        return model.state_dict()

    state = torch.get_rng_state()
    a, again, other = weights(0), weights(0), weights(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_an_unknown_timm_model_is_one_line(folder, tmp_path, capsys, no_work):
    argv = ["scan", "--model", "timm:resnet18x", "--layer", "x", "--data", str(folder),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyprune: error: unknown timm model 'resnet18x'") and "\n" not in err
    assert "resnet18" in err  # close names are offered


def test_without_timm_the_error_says_how_to_install_it(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    argv = ["scan", *TINY, "--data", str(folder), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "polyprune: error: --model timm:NAME needs the timm package, which is not installed: "
        "pip install 'polyprune[timm]'"
    )
