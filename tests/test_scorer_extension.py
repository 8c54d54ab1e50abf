"""The scorer extension point, as a user writes it: one class, usable by name everywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import installed_plugin, study_by_plugin

import polyprune as pp
from polyprune import zoo
from polyprune.cli import main

# What a user writes (13 lines): the mean |weight × gradient|², registered as "snipsq".
USER_SCORER = '''
import torch
from polyprune.scoring import BaseScorer, mask_gradients, reduce_to


class SquaredSNIP(BaseScorer, name="snipsq"):
    """SNIP's |w·∂f/∂w|, squared before the mean over each mask element."""

    def compute(self, job):
        ones = {name: torch.ones(shape) for name, shape in job.mask_shapes.items()}
        grads = mask_gradients(job, ones)
        return {name: reduce_to(g.square(), job.granularity) for name, g in grads.items()}
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with installed_plugin(tmp_path_factory.mktemp("plugin"), "my_scorers", USER_SCORER) as name:
        yield name


def test_the_user_scorer_is_short_and_registered(plugin: str) -> None:
    code = [line for line in USER_SCORER.strip().splitlines() if line.strip()]
    assert len(code) < 15
    assert "snipsq" in pp.scoring.available()
    assert "snipsq" in pp.subnetwork.methods()
    assert type(pp.scoring.create("snipsq", keep=0.1)).__name__ == "SquaredSNIP"


def test_fit_subnetwork_by_name_and_instance(plugin: str) -> None:
    net = zoo.handbuilt()
    members = torch.tensor([True, True, True, False, False, False])
    by_name = pp.fit_subnetwork(net.model, net.unit, net.images, members, "snipsq", keep=0.1)
    instance = pp.scoring.create("snipsq", keep=0.1)
    by_instance = pp.fit_subnetwork(net.model, net.unit, net.images, members, instance)
    assert by_name.method == by_instance.method == "snipsq"
    assert all(torch.equal(by_name.masks[n], by_instance.masks[n]) for n in by_name.masks)
    # squaring keeps the ranking of SNIP's scores: the same subnetwork
    snip = pp.fit_subnetwork(net.model, net.unit, net.images, members, "snip", keep=0.1)
    assert all(torch.equal(by_name.masks[n], snip.masks[n]) for n in snip.masks)
    found = pp.evaluation.circuit_scores(by_name.masks, net.truth)
    assert found.precision == 1.0  # only circuit kernels have a gradient


def test_study_by_name(plugin: str) -> None:
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(600, size=zoo.PLANTED_SIZE, seed=2)
    result = pp.study(
        model, pp.Unit(*zoo.PLANTED_TARGET), images, k=120, methods=["snipsq"], keep=0.1,
        progress=False,
    )  # fmt: skip
    assert result.is_polysemantic and set(result.subnetworks) == {"snipsq"}
    assert all(s.method == "snipsq" for s in result.subnetworks["snipsq"].values())
    assert result.evaluations["snipsq"].clusters[0].kept_fraction == pytest.approx(0.1, abs=0.01)


def test_cli_by_name_with_import(plugin: str, tmp_path: Path, capsys) -> None:
    code, out = study_by_plugin(tmp_path, "snipsq", plugin)
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / "images"
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["methods"] == ["snipsq"]
    assert main(["study", "--import", "no_such_module_here", "--model", "zoo:concepts-merged",
                 "--layer", "features.9", "--unit", "3", "--data", str(folder)]) == 2  # fmt: skip
    assert "--import no_such_module_here" in capsys.readouterr().err


def test_registry_refuses_a_second_class_under_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered as 'snip'"):

        class Other(pp.scoring.BaseScorer, name="snip"):
            pass

    with pytest.raises(ValueError, match="already registered as 'cs'"):  # CS is a method too

        class CS(pp.scoring.BaseScorer, name="cs"):
            pass
