"""The examples run end to end (the tutorial, and the paper's AlexNet script on random weights)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import load_script

import polyprune as pp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    return load_script(f"examples/{name}.py")


def test_tutorial(tmp_path, capsys):
    out = _load("tutorial").main(tmp_path)
    rf = out["rf"]
    assert (rf.size, rf.stride, rf.output_size, rf.center) == ((18, 18), (4, 4), (8, 8), (3, 3))
    assert "(18, 18) (4, 4) (8, 8) (3, 3)" in capsys.readouterr().out
    assert out["clusters"].n_clusters == 2  # type: ignore[attr-defined]
    assert abs(out["snip"].kept_fraction - 0.05) < 0.005  # type: ignore[attr-defined]
    cluster0 = out["report"].clusters[0]  # type: ignore[attr-defined]
    assert cluster0.after.auroc > cluster0.before.auroc
    assert (tmp_path / "report.html").exists()


def test_docs_tutorial_sections_exist():
    text = (EXAMPLES / "tutorial.py").read_text()
    doc = (EXAMPLES.parent / "docs" / "tutorial.md").read_text()
    for section in ("model", "crop", "top", "fit", "evaluate", "study"):
        assert f'"examples/tutorial.py:{section}"' in doc
        assert f"[start:{section}]" in text and f"[end:{section}]" in text


def test_alexnet_imagenet_script_end_to_end_on_random_weights(tmp_path):
    from polyprune import zoo

    data = zoo.write_image_folder(tmp_path / "imagenet", 6, size=240, seed=0)  # 42 images
    script = _load("alexnet_imagenet")
    args = script.parser().parse_args([
        "--data", str(data), "--units", "features.10:255", "features.8:25", "--k", "20",
        "--methods", "cs", "snip", "--epochs", "2", "--out", str(tmp_path / "out"), "--quiet",
        "--min-cluster-size", "2",
    ])  # fmt: skip
    torch.manual_seed(0)  # random AlexNet: the pipeline runs, whatever the clusters are
    results = script.run(args)
    assert set(results) == {"features.10:255", "features.8:25"}
    for spec, result in results.items():
        layer, channel = spec.split(":")
        assert isinstance(result, pp.results.StudyResult) and len(result.top) == 20
        # small clusters on random weights: every stage runs, fits included
        assert result.is_polysemantic and set(result.subnetworks) == {"cs", "snip"}
        assert result.top.inputs is not None and result.top.inputs.shape[2] <= 177
        report = tmp_path / "out" / f"{layer}_{channel}" / "report.html"
        assert report.exists()
    with pytest.raises(SystemExit, match="LAYER:CHANNEL"):
        script.parse_unit("features.10-255")
