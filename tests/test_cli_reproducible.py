"""Every command-line answer can be had again (issue 20 §2): a torchvision model without
``--weights`` gets random weights drawn from ``--seed`` (the same seed, the same weights, the same
SHA-256) and says so in one line; ``--weights DEFAULT`` reads torchvision's pretrained weights
from the torch hub cache and never downloads them."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from polyprune.cli import _weights, main
from polyprune.cli._inputs import load_model

SQUEEZE = ["--model", "torchvision:squeezenet1_1", "--layer", "features.3", "--image-size", "64",
           "--k", "20", "--quiet"]  # fmt: skip
WARNING = "polyprune: warning: torchvision:squeezenet1_1 has random weights (drawn from --seed "


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("polyprune: warning: ")]


def test_a_study_of_the_unit_a_scan_ranked_first_agrees_with_the_scan(folder, tmp_path, capsys):
    args = [*SQUEEZE, "--data", str(folder), "--seed", "3"]
    assert main(["scan", *args, "--crops", "0", "--out", str(tmp_path / "scan")]) == 0
    assert _warnings(capsys.readouterr().err) == [
        f"{WARNING}3): give --weights DEFAULT for torchvision's pretrained weights (from the "
        "torch hub cache) or --weights FILE"
    ]
    scanned = json.loads((tmp_path / "scan" / "scan.json").read_text())
    first = scanned["table"][0]
    assert first["clusters"] >= 2  # ranked first: the strongest evidence of several clusters
    torch.manual_seed(1234)  # another random state: the model is drawn from --seed alone
    argv = ["study", *args, "--unit", str(first["channel"]), "--methods", "snip"]
    assert main([*argv, "--out", str(tmp_path / "study")]) == 0
    assert len(_warnings(capsys.readouterr().err)) == 1
    studied = json.loads((tmp_path / "study" / "results.json").read_text())
    # before: a new unseeded random network per call, "0 clusters (noise 100 %)" here
    assert studied["provenance"]["model"]["sha256"] == scanned["provenance"]["model"]["sha256"]
    assert studied["provenance"]["weights"] == {"random": True, "seed": 3}
    clustering = studied["clustering"]
    assert clustering["n_clusters"] == first["clusters"]
    assert clustering["sizes"] == first["sizes"]
    # the same codes and the same --seed give the same significance test, so the same verdict
    assert clustering["p_value"] == pytest.approx(first["p_value"], rel=1e-6)
    assert clustering["is_polysemantic"] == (first["p_value"] < 0.05)


def test_the_seed_draws_the_weights(capsys):
    def weights(seed: int) -> dict[str, torch.Tensor]:
        return load_model("torchvision:squeezenet1_1", None, seed)[0].state_dict()

    state = torch.get_rng_state()
    a, again, other = weights(0), weights(0), weights(1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)
    assert len(_warnings(capsys.readouterr().err)) == 3  # one line per model built


def test_default_weights_come_from_the_hub_cache_only(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"

    def downloaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("polyprune asked torch.hub to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", downloaded)
    argv = ["scan", *SQUEEZE, "--data", str(folder), "--out", str(tmp_path / "out")]
    for which in ("DEFAULT", "IMAGENET1K_V1"):
        assert main([*argv, "--weights", which]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"polyprune: error: --weights {which}: squeezenet1_1's pretrained weights are not in "
            "the torch hub cache (polyprune never downloads): put https://download.pytorch.org/"
            f"models/squeezenet1_1-b8a52dc0.pth at {expected} (TORCH_HOME moves it)"
        )
    assert main([*argv, "--weights", "IMAGENET1K_V9"]) == 2  # neither a name nor a file
    assert "weights file not found: IMAGENET1K_V9" in capsys.readouterr().err
    expected.parent.mkdir(parents=True)
    torch.manual_seed(5)
    state = torchvision.models.squeezenet1_1(weights=None).state_dict()
    torch.save(state, expected)  # not torchvision's file: its SHA-256 does not fit its name
    assert main([*argv, "--weights", "DEFAULT"]) == 2
    assert "its SHA-256 does not start with b8a52dc0, as its name says" in capsys.readouterr().err
    monkeypatch.setattr(_weights, "_check_hash", lambda found: None)
    found = _weights.pretrained("squeezenet1_1", "DEFAULT")
    assert found is not None and found.name == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    model = _weights.build_torchvision("squeezenet1_1", found, seed=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert _warnings(capsys.readouterr().err) == []  # real weights: no warning
    assert main([*argv, "--weights", "DEFAULT", "--crops", "0"]) == 0
    saved = json.loads((tmp_path / "out" / "scan.json").read_text())["provenance"]["weights"]
    assert saved["torchvision"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    assert saved["path"] == str(expected) and len(saved["sha256"]) == 64
