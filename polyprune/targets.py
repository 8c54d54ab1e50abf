"""Units (one channel of one layer at one map position) and the objectives built on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._graph import check_layer
from ._hooks import eval_mode, first_in_channels, forward_until, model_dtype_device

__all__ = ["OBJECTIVE_KINDS", "Objective", "Unit", "as_objective"]

_CHANNEL_ATTRS = ("out_channels", "out_features", "num_features")


@dataclass(frozen=True)
class Unit:
    """One unit of a CNN: ``channel`` of the module ``layer`` at map ``position``.

    Parameters
    ----------
    layer : str
        Module name as in ``model.named_modules()``, e.g. ``"features.10"``. The unit reads that
        module's output (for a Conv2d followed by an in-place ReLU: the pre-activation; name the
        ReLU module instead to read post-activation values).
    channel : int
        Output channel of ``layer``.
    position : tuple[int, int] or None
        ``(i, j)`` in the layer's map; ``None`` means the map's center,
        :attr:`ReceptiveField.center`.

    Examples
    --------
    >>> import torchvision, polyprune as pp
    >>> unit = pp.Unit("features.10", 255).validate(torchvision.models.alexnet())
    >>> unit
    Unit(layer='features.10', channel=255, position=None)
    """

    layer: str
    channel: int
    position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f"Unit.layer must be a non-empty module name, got {self.layer!r}")
        if isinstance(self.channel, bool) or not isinstance(self.channel, int):
            raise TypeError(f"Unit.channel must be an int, got {self.channel!r}")
        if self.channel < 0:
            raise ValueError(f"Unit.channel must be ≥ 0, got {self.channel}")
        if self.position is not None:
            pos = tuple(self.position)
            if len(pos) != 2 or not all(isinstance(p, int) and p >= 0 for p in pos):
                raise ValueError(
                    f"Unit.position must be None or a pair of ints ≥ 0, got {self.position!r}"
                )
            object.__setattr__(self, "position", (int(pos[0]), int(pos[1])))

    def validate(self, model: nn.Module, input_size: tuple[int, int] | None = None) -> Unit:
        """Check the layer exists and the channel (and position) are in range; return ``self``.

        The channel count is read from the module (``out_channels``/``out_features``/
        ``num_features``); for other modules, or when ``position`` is set and ``input_size`` is
        given, one forward pass on a zero image finds the map's shape.

        Raises
        ------
        ValueError
            Unknown layer (closest names listed), channel or position out of range.
        """
        module = check_layer(model, self.layer)
        channels = next(
            (v for a in _CHANNEL_ATTRS if isinstance(v := getattr(module, a, None), int)), None
        )
        shape: tuple[int, ...] | None = None
        if channels is None or (self.position is not None and input_size is not None):
            shape = layer_output_shape(model, self.layer, input_size or (224, 224))
            channels = shape[1]
        if self.channel >= channels:
            raise ValueError(
                f"channel {self.channel} is out of range for {self.layer!r}, which has "
                f"{channels} channels (valid: 0..{channels - 1})"
            )
        if shape is not None and self.position is not None and len(shape) == 4:
            i, j = self.position
            if i >= shape[2] or j >= shape[3]:
                raise ValueError(
                    f"position {self.position} is outside the {shape[2]}×{shape[3]} map of "
                    f"{self.layer!r} at input size {input_size}"
                )
        return self


def layer_output_shape(
    model: nn.Module, layer: str, input_size: tuple[int, int], in_channels: int | None = None
) -> tuple[int, ...]:
    """Shape of ``layer``'s output for one zero image of ``input_size`` (model left unchanged)."""
    dtype, device = model_dtype_device(model)
    channels = in_channels if in_channels is not None else first_in_channels(model)
    x = torch.zeros(1, channels, *input_size, dtype=dtype, device=device)
    with eval_mode(model), torch.no_grad():
        return tuple(forward_until(model, x, [layer])[layer].shape)


# -- objectives --------------------------------------------------------------------------------

#: Named objectives: the unit's activation at its position, or the sum / sum of |·| of its map.
OBJECTIVE_KINDS: tuple[str, ...] = ("position", "sum", "abs_sum")


@dataclass(frozen=True)
class Objective:
    """The scalar a subnetwork must preserve, computed from one unit's channel of its layer.

    Parameters
    ----------
    unit : Unit
        The layer and channel (and position) to read.
    kind : {"position", "sum", "abs_sum"} or callable
        ``"position"`` (default): the unit's activation at ``unit.position`` (default: the
        map's center ``((H - 1) // 2, (W - 1) // 2)`` for the inputs given); ``"sum"``: the
        sum of the channel's whole map; ``"abs_sum"``: the sum of its absolute values
        (Hamblin et al.'s objective). A callable gets the channel's map ``(N, *spatial)`` and
        returns a scalar. Every kind is summed over the batch.

    Examples
    --------
    >>> import torch
    >>> from polyprune.targets import Objective, Unit
    >>> objective = Objective(Unit("conv", 1), "sum")
    >>> output = torch.arange(2 * 3 * 2 * 2.0).reshape(2, 3, 2, 2)  # a layer's (N, C, H, W)
    >>> float(objective(output))  # channel 1 of both images: 4+5+6+7 + 16+17+18+19
    92.0
    >>> float(Objective(Unit("conv", 1))(output))  # center (0, 0), both images: 4 + 16
    20.0
    """

    unit: Unit
    kind: str | Callable[[Tensor], Tensor] = "position"

    def __post_init__(self) -> None:
        if not isinstance(self.unit, Unit):
            raise TypeError(f"Objective.unit must be a Unit, got {type(self.unit).__name__}")
        if not callable(self.kind) and self.kind not in OBJECTIVE_KINDS:
            raise ValueError(
                f"Objective.kind must be one of {OBJECTIVE_KINDS} or a callable, got {self.kind!r}"
            )

    def __call__(self, output: Tensor) -> Tensor:
        """The objective's value for ``output``, the layer's output ``(N, C, *spatial)``."""
        if output.dim() < 2 or not 0 <= self.unit.channel < output.shape[1]:
            raise ValueError(
                f"channel {self.unit.channel} is out of range for {self.unit.layer!r}, whose "
                f"output has shape {tuple(output.shape)} (channels are dimension 1)"
            )
        channel_map = output[:, self.unit.channel]
        if callable(self.kind):
            value = self.kind(channel_map)
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise ValueError("a callable Objective.kind must return a one-element tensor")
            return value.reshape(())
        if self.kind == "sum":
            return channel_map.sum()
        if self.kind == "abs_sum":
            return channel_map.abs().sum()
        index: tuple[Any, ...] = (slice(None), *self._index(tuple(channel_map.shape[1:])))
        return channel_map[index].sum()

    def _index(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        position = self.unit.position
        if position is None:
            return tuple((s - 1) // 2 for s in spatial)
        if len(position) != len(spatial) or any(
            p >= s for p, s in zip(position, spatial, strict=True)
        ):
            raise ValueError(
                f"position {position} of {self.unit} is outside the map of {self.unit.layer!r}, "
                f"which has spatial shape {spatial} for these inputs"
            )
        return position

    def value(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The objective on ``model(inputs)`` (no gradient; the forward stops at the layer)."""
        with eval_mode(model), torch.no_grad():
            return self(forward_until(model, inputs, [self.unit.layer])[self.unit.layer])


def as_objective(objective: Objective | Unit) -> Objective:
    """An :class:`Objective` as given, or the default one (``"position"``) for a :class:`Unit`.

    Examples
    --------
    >>> from polyprune.targets import Unit, as_objective
    >>> as_objective(Unit("features.10", 3)).kind
    'position'
    """
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, Unit):
        return Objective(objective)
    raise TypeError(
        f"objective must be a polyprune Objective or Unit, got {type(objective).__name__}"
    )
