"""Private (foundation): the model's mode, dtype and device, and the images that go into it.

polyprune reads a model; it never trains it. Every forward pass runs in eval mode (BatchNorm uses
its running statistics and never updates them, dropout is off), and each module's own
``training`` flag comes back afterwards. Images follow the model: they are moved to its device
and cast to its floating-point dtype batch by batch; integer images are refused, because a
``uint8`` image in [0, 255] fed to a model trained on [0, 1] floats gives a silently wrong answer.
The caller's global random generators are left as found too (:func:`random_state_kept`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "conv_input_ndim",
    "eval_mode",
    "first_in_channels",
    "gradients_on",
    "model_dtype_device",
    "random_state_kept",
    "to_model",
]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, restoring each one's own ``training`` flag after."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def first_in_channels(model: nn.Module) -> int:
    """The input channel count of the first module that declares one (3 when none does)."""
    for m in model.modules():
        channels = getattr(m, "in_channels", None)
        if isinstance(channels, int):
            return channels
    return 3


def conv_input_ndim(model: nn.Module) -> int | None:
    """The batch rank the model's convolutions take when they all have one (4 for a CNN of
    ``Conv2d``); None when it has none or several kinds (any rank ≥ 2 is accepted then)."""
    kernels = [
        getattr(m, "kernel_size", None) for m in model.modules() if hasattr(m, "in_channels")
    ]
    ranks = {len(k) for k in kernels if isinstance(k, tuple)}
    return ranks.pop() + 2 if len(ranks) == 1 else None


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating-point parameter (float32/cpu if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    for b in model.buffers():
        if b.is_floating_point():
            return b.dtype, b.device
    return torch.float32, torch.device("cpu")


def to_model(images: Tensor, model: nn.Module, *, non_blocking: bool = False) -> Tensor:
    """``images`` on the model's device, in its floating-point dtype (see the module docstring)."""
    dtype, device = model_dtype_device(model)
    return images.to(device=device, dtype=dtype, non_blocking=non_blocking)


@contextlib.contextmanager
def gradients_on() -> Iterator[None]:
    """Autograd on, also inside a caller's ``torch.no_grad()`` or ``torch.inference_mode()``.

    Scorers, Continuous Sparsification and feature visualization need gradients; without this a
    caller's ``no_grad`` block would make them return all-zero scores or fail deep in autograd.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def random_state_kept() -> Iterator[None]:
    """Leave the caller's global random generators as found (also as a decorator): torch's CPU
    generator, every CUDA device's generator (when CUDA is initialized on entry), numpy's global
    one and Python's ``random``, restored on the way out, also when the body raises.

    polyprune's own draws use seeded generators of their own, but what it drives draws from the
    global ones: a ``DataLoader`` draws its base seed from torch's on every pass (also one
    polyprune makes for a Dataset), and a first ``import hdbscan`` draws from Python's (via
    ``rich``). Draws of the caller's own code inside the call (a Dataset's random transform)
    are undone with them; another thread's draws during the call too.
    """
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    # a CUDA generator exists only once CUDA is initialized (a model or tensor on a GPU)
    initialized = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    cuda = torch.cuda.get_rng_state_all() if initialized else None
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
