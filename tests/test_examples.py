"""The examples run end to end (the paper's AlexNet script on random weights)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import load_script

import polyprune as pp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    return load_script(f"examples/{name}.py")


def test_alexnet_imagenet_script_end_to_end_on_random_weights(tmp_path):
    from polyprune import zoo

    data = zoo.write_image_folder(tmp_path / "imagenet", 6, size=240, seed=0)  # 42 images
    script = _load("alexnet_imagenet")
    args = script.parser().parse_args([
        "--data", str(data), "--units", "features.10:255", "features.8:25", "--k", "20",
        "--methods", "cs", "snip", "--epochs", "2", "--out", str(tmp_path / "out"), "--quiet",
        "--min-cluster-size", "2", "--alpha", "0.9",
    ])  # fmt: skip
    torch.manual_seed(0)  # random AlexNet: the pipeline runs, whatever the clusters are
    results = script.run(args)
    assert set(results) == {"features.10:255", "features.8:25"}
    for spec, result in results.items():
        layer, channel = spec.split(":")
        assert isinstance(result, pp.results.StudyResult) and len(result.top) == 20
        # small clusters on random weights are not significant at the default alpha 0.05 (that
        # is the verdict's job); at alpha 0.9 every stage runs, fits included
        assert result.clustering.n_clusters >= 2 and 0.05 <= result.clustering.p_value < 0.9
        assert result.is_polysemantic and set(result.subnetworks) == {"cs", "snip"}
        assert result.top.inputs is not None and result.top.inputs.shape[2] <= 177
        report = tmp_path / "out" / f"{layer}_{channel}" / "report.html"
        assert report.exists()
    with pytest.raises(SystemExit, match="LAYER:CHANNEL"):
        script.parse_unit("features.10-255")
