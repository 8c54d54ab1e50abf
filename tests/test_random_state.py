"""The caller's global random generators come back as found (torch's CPU generator, numpy's
global one, Python's ``random``): polyprune draws from seeded generators of its own, but a
``DataLoader`` draws its base seed from torch's generator on every pass, and the first import of
hdbscan / scikit-learn draws from Python's."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import polyprune as pp
from polyprune import zoo

UNIT = pp.Unit("features.6", 0)


def _states() -> tuple[torch.Tensor, Any, Any]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_unchanged(call: Callable[[], Any]) -> Any:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = _states()
    result = call()
    after = _states()
    assert torch.equal(before[0], after[0]), "torch's global generator moved"
    assert all(np.array_equal(a, b) for a, b in zip(before[1], after[1], strict=True)), "numpy's"
    assert before[2] == after[2], "Python's random moved"
    return result


@pytest.fixture(scope="module")
def planted() -> tuple[torch.nn.Module, torch.Tensor]:
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(100, size=zoo.PLANTED_SIZE, seed=1)
    return model, images


def test_a_study_on_a_dataset_leaves_the_global_generators_alone(planted):
    model, images = planted
    result = _assert_unchanged(
        lambda: pp.study(
            model, UNIT, TensorDataset(images), k=20, methods=["snip", "random"], progress=False
        )
    )
    assert result.clustering.is_polysemantic and result.subnetworks  # the fits ran


@pytest.mark.parametrize("shuffle", [False, True])
def test_data_loaders_leave_the_global_generators_alone(planted, shuffle):
    model, images = planted
    loader = DataLoader(TensorDataset(images), batch_size=32, shuffle=shuffle)
    members = torch.arange(20) < 10
    if not shuffle:  # only a loader in dataset order gives indices
        _assert_unchanged(lambda: pp.top_activating(model, UNIT, loader, k=20, progress=False))
        _assert_unchanged(lambda: pp.scan(model, "features.6", loader, k=20, progress=False))
    _assert_unchanged(lambda: pp.scoring.create("snip", keep=0.1).score(model, loader, UNIT))
    _assert_unchanged(
        lambda: pp.fit_subnetwork(
            model, UNIT, images[:20], members, "cs", progress=False, config=pp.CSConfig(epochs=2)
        )
    )


def _first_call_keeps_random(module: str, call: str) -> None:
    """In a fresh process, where ``module`` is not imported yet, ``call`` leaves Python's
    ``random`` and torch's generator as found."""
    code = (
        "import random, sys, torch, numpy as np, polyprune as pp\n"
        "from polyprune import zoo\n"
        f"assert {module!r} not in sys.modules\n"
        "random.seed(5); state = random.getstate()\n"
        "torch.manual_seed(5); t = torch.get_rng_state()\n"
        f"{call}\n"
        "assert random.getstate() == state, 'random moved'\n"
        "assert torch.equal(torch.get_rng_state(), t), 'torch moved'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_first_clustering_of_a_process_leaves_pythons_random_alone():
    # hdbscan imports scikit-learn, which imports rich, which draws from `random` on import
    _first_call_keeps_random("hdbscan", "pp.cluster(np.random.default_rng(0).normal(size=(30, 3)))")


def test_the_first_digits_of_a_process_leave_pythons_random_alone():
    # zoo.digits imports scikit-learn lazily (its bundled data set), which draws on import
    _first_call_keeps_random("sklearn", "zoo.digits('test')")


@pytest.mark.parametrize(
    "build",
    [
        lambda: zoo.load("concepts-merged"),
        lambda: zoo.planted_network(),
        lambda: zoo.planted_network(identifiable=True),
    ],
    ids=["load", "planted", "planted-identifiable"],
)
def test_zoo_models_leave_the_global_generators_alone(build):
    _assert_unchanged(build)  # their modules' default init drew from torch's generator


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generators_come_back_as_found():
    from polyprune._model import random_state_kept

    torch.cuda.manual_seed_all(7)
    before = torch.cuda.get_rng_state_all()
    with random_state_kept():
        torch.rand(3, device="cuda")  # a draw inside (a DataLoader worker seed, a dropout)
    assert all(
        torch.equal(a, b) for a, b in zip(before, torch.cuda.get_rng_state_all(), strict=True)
    )
