"""study(): the paper's pipeline on ground truth, the report, and the not-polysemantic path."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

import polyprune as pp
from polyprune import zoo


@pytest.fixture(scope="module")
def planted_study() -> tuple[pp.results.StudyResult, list[str], dict[str, pp.Masks]]:
    model, truth = zoo.planted_network()
    images, labels = zoo.concept_images(1200, size=zoo.PLANTED_SIZE, seed=1)
    result = pp.study(
        model, pp.Unit(*zoo.PLANTED_TARGET), images, k=240, methods=("cs", "snip"),
        config=pp.CSConfig(epochs=15), progress=False,
    )  # fmt: skip
    concepts = [zoo.CONCEPTS[i] for i in labels[result.top.indices].tolist()]
    return result, concepts, truth


def test_planted_clusters_are_the_planted_concepts(planted_study):
    result, concepts, _ = planted_study
    assert set(concepts) == {"hstripes", "rings"}  # the top crops are the two planted concepts
    assert result.is_polysemantic and result.clustering.n_clusters == 2
    assert adjusted_rand_score(concepts, result.clustering.labels) >= 0.8


def test_planted_subnetworks_separate_on_fitted_and_held_out_crops(planted_study):
    result, _, _ = planted_study
    for method in ("cs", "snip"):
        for label, ev in result.evaluations[method].clusters.items():
            assert ev.after_held_out is not None
            assert ev.after.auroc > 0.9 and ev.after_held_out.auroc > 0.9, (method, label)
            assert 0 < ev.kept_fraction < 0.5
    snip = result.subnetworks["snip"][0]  # cut path-aware: 5 % on kept input→unit paths
    assert snip.raw_masks is not None and 0.05 <= snip.kept_fraction < 0.06
    assert result.evaluations["snip"].clusters[0].kept_fraction == snip.kept_fraction
    assert snip.kept_fraction <= snip.raw_masks.kept_fraction()
    assert set(result.activations) >= {"original"} and len(result.activations) == 5
    assert len(result.fit_index) + len(result.held_index) == 240


def test_report_is_written(planted_study, tmp_path):
    result, _, _ = planted_study
    report = result.save(tmp_path / "report")
    assert report.name == "report.html" and report.exists()
    for name in ("crops.png", "histograms.png", "kept.png", "report.md", "results.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data["clustering"]["n_clusters"] == 2 and len(data["rows"]) == 4
    assert data["rows"][0]["auroc_after"] == pytest.approx(result.rows()[0]["auroc_after"])
    assert "crops.png" in report.read_text() and "polysemantic" in result.summary()


@pytest.mark.parametrize("name", ["concepts-merged", "digits-merged"])
def test_trained_models_cluster_into_their_merged_concepts(name):
    card = zoo.model_card(name)
    images, labels = zoo.demo_data(name)
    top = pp.top_activating(zoo.load(name), pp.Unit(*card.unit), images, k=100, crop=False,
                            progress=False)  # fmt: skip
    concepts = [card.concepts[i] for i in labels[top.indices].tolist()]
    clusters = pp.cluster(top.codes)
    assert clusters.is_polysemantic
    assert adjusted_rand_score(concepts, clusters.labels) >= 0.8


def test_not_polysemantic_stops_after_clustering():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    with torch.no_grad():
        model.get_parameter("2.bias").add_(
            1.0
        )  # positive: a live unit (a dead one stops for that reason)
    result = pp.study(model, pp.Unit("2", 0), torch.rand(60, 3, 12, 12), k=30, progress=False)
    assert not result.is_polysemantic and result.flags == []
    assert result.subnetworks == {} and result.evaluations == {}
    assert "not polysemantic" in result.summary()


def test_bad_arguments_fail_before_work():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    x = torch.rand(20, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown method 'lottery'"):
        pp.study(model, pp.Unit("0", 0), x, methods=("lottery",), progress=False)
    with pytest.raises(ValueError, match="held_out"):
        pp.study(model, pp.Unit("0", 0), x, held_out=1.0, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        pp.study(model, pp.Unit("0", 9), x, progress=False)
    with pytest.raises(TypeError, match=r"write methods=\['snip'\]"):
        pp.study(model, pp.Unit("0", 0), x, methods="snip", progress=False)
    with pytest.raises(TypeError, match=r"config must be a polyprune\.CSConfig"):
        pp.study(model, pp.Unit("0", 0), x, config={"seed": 3}, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"keep must be .* in \(0, 1\]"):
        pp.study(model, pp.Unit("0", 0), x, keep=1.5, progress=False)

    def never_read():  # clustering options are checked before the data is read
        raise AssertionError("the data was read")
        yield x

    for options, match in (
        ({"min_cluster_size": 1}, r"min_cluster_size must be an int in \[2, 20\] \(k=20\)"),
        ({"min_cluster_size": 21}, r"min_cluster_size must be an int in \[2, 20\] \(k=20\)"),
        ({"cluster_options": {"eps": 1}}, r"unknown cluster_options \['eps'\]"),
        (
            {"cluster_options": {"cluster_selection_method": "x"}},
            r"must be one of \['eom', 'leaf'\]",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            pp.study(model, pp.Unit("0", 0), never_read(), k=20, progress=False, **options)


def test_random_baseline_draws_independently_per_cluster(planted_study):
    result, _, _ = planted_study
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(1200, size=zoo.PLANTED_SIZE, seed=1)
    random = pp.study(model, result.unit, images, k=240, methods=("random",), keep=0.1,
                      progress=False)  # fmt: skip
    masks = random.subnetworks["random"]
    assert masks[0].masks.iou(masks[1].masks) < 0.5  # the same seed would give IoU 1.0
    assert random.evaluations["random"].overlaps[(0, 1)].p_value > 1e-6
