"""The README's numbers about the installation are what constraints.txt pins and what that
installs. (Its two commands are checked in test_demo.py, the demo figure's caption on the demo's
own run there too, and its Python blocks in test_docs.py.)"""

from __future__ import annotations

import importlib.metadata
import re

import torch
import torchvision
from helpers import ROOT


def _readme() -> str:
    """README.md with its line breaks and indents as single spaces."""
    return " ".join((ROOT / "README.md").read_text().split())


def _pins() -> dict[str, str]:
    return dict(re.findall(r"^([\w.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))


def test_the_readme_names_the_pinned_versions_and_they_are_installed():
    pins, text = _pins(), _readme()
    assert f"PyTorch {pins['torch']} and torchvision {pins['torchvision']}" in text
    assert f"`torch=={pins['torch']}`" in text
    home = " ".join((ROOT / "docs" / "index.md").read_text().split())
    assert f"PyTorch {pins['torch']}, the CUDA {torch.version.cuda} build" in home
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]


def test_the_pinned_wheel_is_the_cuda_build_with_the_nvidia_libraries_the_readme_says():
    text = _readme()
    version = re.search(r"`torch.__version__` is `([^`]+)`", text)
    cuda = re.search(r"is the CUDA ([\d.]+) build", text)
    size = re.search(r"installs about ([\d.]+) GB of NVIDIA libraries", text)
    assert version and cuda and size, "the README no longer says what the torch wheel installs"
    assert torch.__version__ == version[1] and torch.version.cuda == cuda[1]
    nvidia = [
        d
        for d in importlib.metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("nvidia-")
    ]
    total = sum(f.size or 0 for d in nvidia for f in d.files or ())
    assert round(total / 1e9, 1) == float(size[1]), f"{len(nvidia)} packages, {total / 1e9:.2f} GB"
