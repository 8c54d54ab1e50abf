"""Private: run a forward pass only as far as some named modules, with hooks that never leak."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._graph import check_layer

__all__ = [
    "LayerHooks",
    "eval_mode",
    "first_in_channels",
    "forward_until",
    "has_batch_dependent_layers",
    "model_dtype_device",
    "warn_if_training",
]

Capture = Callable[[str, Tensor], Tensor]


class _Stop(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class LayerHooks:
    """Forward hooks on named modules that hand each output to ``on_output(name, output)``.

    :meth:`run` performs one forward pass that stops as soon as every layer has run (the
    modules downstream of the last one are never computed). Hooks exist only between
    :meth:`attach` and :meth:`detach`; callers detach in ``finally``.
    """

    def __init__(
        self, model: nn.Module, layers: Sequence[str], on_output: Callable[[str, Tensor], None]
    ) -> None:
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
        self.model = model
        self.modules = {name: check_layer(model, name) for name in layers}
        self._on_output = on_output
        self._handles: list[Any] = []
        self._seen: set[str] | None = None  # layers seen in the current run(), if any

    def attach(self) -> None:
        if not self._handles:
            self._handles = [
                module.register_forward_hook(self._hook(name))
                for name, module in self.modules.items()
            ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise ValueError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor; record a "
                    "submodule that returns a feature map"
                )
            seen = self._seen
            if seen is not None:
                if name in seen:
                    raise ValueError(
                        f"layer {name!r} runs more than once in one forward pass; record a "
                        "module that is called once"
                    )
                seen.add(name)
            self._on_output(name, output)
            if seen is not None and len(seen) == len(self.modules):
                raise _Stop

        return hook

    def run(self, inputs: Any, call: Callable[[Any], Any] | None = None) -> None:
        """One forward pass of ``model(inputs)`` (or ``call(inputs)``), stopped right after the
        last layer ran."""
        self._seen = set()
        try:
            with contextlib.suppress(_Stop):
                (call or self.model)(inputs)
            missing = [name for name in self.modules if name not in self._seen]
        finally:
            self._seen = None
        if missing:
            raise ValueError(f"layers {missing} never ran in {type(self.model).__name__}.forward")


def forward_until(
    model: nn.Module,
    inputs: Any,
    layers: Sequence[str],
    capture: Capture = lambda name, out: out,
    call: Callable[[Any], Any] | None = None,
) -> dict[str, Tensor]:
    """Run ``model(inputs)`` and stop right after the last of ``layers`` has run.

    Each layer's output is passed through ``capture(name, output)`` (e.g. detach + clone) and
    returned by name. ``call`` replaces ``model`` as the callable that runs the forward (e.g. a
    :func:`torch.func.functional_call`). Hooks are removed in ``finally``, whatever the forward
    raises.

    Raises
    ------
    ValueError
        If a layer is unknown, runs twice before all have run, returns a non-tensor, or never runs.
    """
    out: dict[str, Tensor] = {}
    hooks = LayerHooks(model, layers, lambda name, t: out.__setitem__(name, capture(name, t)))
    try:
        hooks.attach()
        hooks.run(inputs, call)
    finally:
        hooks.detach()
    return out


def has_batch_dependent_layers(model: nn.Module) -> bool:
    """Whether ``model`` is training and contains BatchNorm or Dropout (batch-dependent output)."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    return any(m.training and isinstance(m, kinds) for m in model.modules())


def warn_if_training(model: nn.Module, stacklevel: int = 3) -> None:
    """Warn when recorded activations would depend on the batch (and BatchNorm stats change)."""
    if has_batch_dependent_layers(model):
        warnings.warn(
            f"{type(model).__name__} is in training mode with BatchNorm/Dropout layers: "
            "activations depend on the batch and BatchNorm running statistics are updated; "
            "call model.eval() first",
            UserWarning,
            stacklevel=stacklevel,
        )


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


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating-point parameter (float32/cpu if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")
