"""Shared fixtures and pytest settings only: random-init torchvision models (no downloads), the
command line's image folder. Helpers that tests import live in ``helpers.py``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import settings
from torch import nn

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# One torch thread per test process: pytest runs two worker processes (-n 2 in pyproject), and
# most tensors here are tiny, where a second thread costs more in synchronisation than it gains
# (measured ~5x slower on a busy 2-core machine).
torch.set_num_threads(1)


def _random_init(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = factory()
    return model.eval()


@pytest.fixture(scope="session")
def alexnet() -> nn.Module:
    return _random_init(torchvision.models.alexnet)


@pytest.fixture(scope="session")
def vgg11() -> nn.Module:
    return _random_init(torchvision.models.vgg11)


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    return _random_init(torchvision.models.resnet18)


# ---------------------------------------------------------------------- the command line's tests


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image folder (7 concept classes of 10 images, 32×32) for the command line."""
    from polyprune import zoo

    return zoo.write_image_folder(tmp_path_factory.mktemp("images") / "data", 10, size=32, seed=3)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads a model or runs the demo."""
    from polyprune.cli import _commands

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(_commands, "load_model", loaded)
    monkeypatch.setattr("polyprune._demo.run_demo", loaded)
