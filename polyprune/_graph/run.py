"""Private (engine): run a forward pass only as far as some named modules, and read a unit.

Everything that reads a layer goes through :func:`forward_until` (hooks that never leak, the
forward stopped right after the last layer needed), and everything that reads *one unit* of a map
goes through :func:`read_unit` with a position from :func:`resolve_position` (the map's center
``((H - 1) // 2, (W - 1) // 2)`` unless a position is given). One rule, written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._model import eval_mode
from .regions import last_declared_channels

__all__ = [
    "LayerHooks",
    "center",
    "check_unit_layout",
    "does_not_run",
    "forward_until",
    "layer_output_shape",
    "read_unit",
    "resolve_position",
    "run_images",
]

Capture = Callable[[str, Tensor], Tensor]


class _Stop(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class _LayerError(ValueError):
    """A layer polyprune reads misbehaves (runs twice, never runs, returns no tensor): raised
    by polyprune itself, never by the model, so :func:`run_images` passes it on unchanged."""


def _submodule(model: nn.Module, layer: str) -> nn.Module:
    """The module ``layer`` of ``model``. Names are checked once, by the public call that takes
    them (``trace.check_layer``, with the closest names); one that slipped through is a
    polyprune bug, still a ``ValueError``."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise _LayerError(f"unknown layer {layer!r} in {type(model).__name__}") from None


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
        self.modules = {name: _submodule(model, name) for name in layers}
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
                raise _LayerError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor; record a "
                    "submodule that returns a feature map"
                )
            seen = self._seen
            if seen is not None:
                if name in seen:
                    raise _LayerError(
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
            raise _LayerError(f"layers {missing} never ran in {type(self.model).__name__}.forward")


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


def center(spatial: Sequence[int]) -> tuple[int, ...]:
    """The middle position of a map of shape ``spatial``: ``(s - 1) // 2`` in every dimension."""
    return tuple((int(s) - 1) // 2 for s in spatial)


def resolve_position(
    position: Sequence[int] | None, spatial: Sequence[int], where: str
) -> tuple[int, ...]:
    """``position`` checked against a map of shape ``spatial``, or the map's :func:`center`.

    ``where`` names the layer (and input size) for the error message.
    """
    if position is None:
        return center(spatial)
    pos = tuple(int(p) for p in position)
    if len(pos) != len(spatial) or any(not 0 <= p < s for p, s in zip(pos, spatial, strict=True)):
        valid = ", ".join(f"0 ≤ {name} < {s}" for name, s in zip("ijk", spatial, strict=False))
        raise ValueError(
            f"position {tuple(position)} is outside the {'×'.join(map(str, spatial))} map of "
            f"{where} (valid: {valid})"
        )
    return pos


def read_unit(output: Tensor, channel: int | None, position: Sequence[int] | None) -> Tensor:
    """One unit of a layer's output ``(N, C, *spatial)`` (or ``(N, C)``): shape ``(N,)``.

    ``position`` must already be resolved (:func:`resolve_position`); ``None`` for a map-less
    ``(N, C)`` output. ``channel=None`` reads every channel at that position: ``(N, C)``.
    """
    index: tuple[Any, ...] = (slice(None), slice(None) if channel is None else channel)
    if position is not None:
        index += tuple(position)
    return output[index]


def layer_output_shape(model: nn.Module, layer: str, sample: Tensor) -> tuple[int, ...]:
    """Shape of ``layer``'s output for the one-image batch ``sample`` (model left unchanged)."""
    with eval_mode(model), torch.no_grad():
        return tuple(run_images(model, sample, [layer])[layer].shape)


def run_images(model: nn.Module, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """:func:`forward_until` on the caller's own images: an error the model itself raises
    (images of a size or channel count it cannot run on, e.g. a hybrid conv-attention model
    below the size its attention was built for) becomes one ``ValueError`` that names it and
    says what to pass instead. Unknown or misbehaving layers raise as in :func:`forward_until`.
    """
    try:
        return forward_until(model, images, layers)
    except _LayerError:
        raise
    except Exception as exc:  # the model's own error: it does not run on these images
        raise does_not_run(model, tuple(images.shape)[1:], layers, exc) from exc


def does_not_run(
    model: nn.Module,
    shape: Sequence[int],
    layers: Sequence[str],
    exc: Exception,
    what: str = "images with the channels and the size",
) -> ValueError:
    """The one-line error for a model that raised ``exc`` on images of ``shape`` (C, H, W);
    ``what`` says what to pass instead (arguments named as the caller takes them)."""
    lines = str(exc).strip().splitlines() or [""]
    return ValueError(
        f"{type(model).__name__} does not run on images of shape {tuple(shape)} (C, H, W) up to "
        f"{', '.join(map(repr, layers))} ({type(exc).__name__}: {lines[0]}); pass {what} "
        "the model was built for (a model with attention or "
        "position tables of a fixed size, such as a hybrid conv-attention model, runs only at "
        "that size)"
    )


def check_unit_layout(model: nn.Module, layer: str, shape: tuple[int, ...]) -> None:
    """Refuse layer outputs that are neither a map ``(N, C, H, W)`` nor a vector ``(N, C)``,
    and 4-D outputs whose last axis holds the channels the module declares (channels-last)."""
    if len(shape) not in (2, 4):
        hint = (
            " (this looks like a sequence of tokens (N, L, D), as in a vision transformer: "
            "polyprune reads channels of convolutional maps)"
            if len(shape) == 3
            else ""
        )
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(shape)}: polyprune reads units of maps "
            f"(N, C, H, W) or vectors (N, C), so this layer cannot be used{hint}; choose a "
            "layer with such an output"
        )
    declared = last_declared_channels(model.get_submodule(layer))
    if len(shape) == 4 and declared not in (None, shape[1]) and declared == shape[-1]:
        raise ValueError(
            f"layer {layer!r} outputs channels-last maps {tuple(shape)} ({declared} channels "
            "last): polyprune reads units of (N, C, H, W) maps; choose a layer after the "
            "permute back to channels-first"
        )
