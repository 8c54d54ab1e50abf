"""Units (one channel of one layer at one map position) and the objectives built on them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import _validate as valid
from ._data import as_images
from ._graph.regions import layer_channels
from ._graph.run import (
    check_unit_layout,
    layer_output_shape,
    read_unit,
    resolve_position,
    run_images,
)
from ._graph.trace import check_layer
from ._model import eval_mode, first_in_channels, model_dtype_device, to_model
from ._unit_io import unit_activations

if TYPE_CHECKING:
    from .masks import Masks

__all__ = ["OBJECTIVE_KINDS", "Objective", "Unit", "as_objective"]


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
    >>> print(unit, pp.Unit("features.10", 255, (6, 6)))
    features.10[255] features.10[255]@(6, 6)
    """

    layer: str
    channel: int
    position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f"Unit.layer must be a non-empty module name, got {self.layer!r}")
        object.__setattr__(self, "channel", valid.integer("Unit.channel", self.channel, low=0))
        if self.position is not None:
            pos = tuple(self.position)
            if len(pos) != 2 or not all(isinstance(p, int) and p >= 0 for p in pos):
                raise ValueError(
                    f"Unit.position must be None or a pair of ints ≥ 0, got {self.position!r}"
                )
            object.__setattr__(self, "position", (int(pos[0]), int(pos[1])))

    def __str__(self) -> str:
        where = "" if self.position is None else f"@({self.position[0]}, {self.position[1]})"
        return f"{self.layer}[{self.channel}]{where}"

    def to_dict(self) -> dict[str, Any]:
        """``{"layer", "channel", "position"}`` as plain JSON-ready values."""
        position = None if self.position is None else list(self.position)
        return {"layer": self.layer, "channel": self.channel, "position": position}

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> Unit:
        """The unit of :meth:`to_dict`.

        Examples
        --------
        >>> from polyprune import Unit
        >>> Unit.from_dict(Unit("features.10", 255, (6, 6)).to_dict())
        Unit(layer='features.10', channel=255, position=(6, 6))
        """
        position = data.get("position")
        return cls(str(data["layer"]), int(data["channel"]),
                   None if position is None else (int(position[0]), int(position[1])))  # fmt: skip

    def validate(
        self, model: nn.Module, sample: Tensor | int | tuple[int, int] | None = None
    ) -> Unit:
        """Check the layer exists and the channel (and position) are in range; return ``self``.

        Without ``sample`` the channel count is read from the module (``out_channels``/
        ``out_features``/``num_features``), or, for a channel-wise layer such as a ReLU, from
        the Conv/Linear behind it in the traced graph; nothing is run. With ``sample`` — a
        batch of the images you will use (its first image is run up to the layer), or an input
        size ``(H, W)`` for a zero image — the layer's output is checked too: it must be a map
        ``(N, C, H, W)`` or a vector ``(N, C)``, and ``position`` must lie inside the map.

        Raises
        ------
        ValueError
            Unknown layer (closest names listed), channel or position out of range, or a layer
            whose output is neither ``(N, C, H, W)`` nor ``(N, C)`` (e.g. transformer tokens,
            channels-last maps).
        """
        check_layer(model, self.layer)
        channels = layer_channels(model, self.layer)
        if sample is not None:
            x = _sample(model, sample)
            shape = layer_output_shape(model, self.layer, x)
            check_unit_layout(model, self.layer, shape)
            channels = shape[1]
            if self.position is not None:
                if len(shape) != 4:
                    raise ValueError(
                        f"{self.layer!r} outputs vectors {tuple(shape)}: it has no map, so a "
                        f"unit of it has no position (got {self.position})"
                    )
                where = f"{self.layer!r} for {x.shape[2]}×{x.shape[3]} images"
                resolve_position(self.position, shape[2:], where)
        if channels is not None and self.channel >= channels:
            raise ValueError(
                f"channel {self.channel} is out of range for {self.layer!r}, which has "
                f"{channels} channels (valid: 0..{channels - 1})"
            )
        return self

    def activations(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        masks: Masks | None = None,
        batch_size: int = 256,
    ) -> Tensor:
        """The unit's activation on every image, shape ``(N,)``, float32 on the CPU.

        The position is :attr:`position` or the center of the layer's map for these images.
        The model runs in eval mode without gradients, in batches of ``batch_size``, with
        ``masks`` applied when given (a subnetwork), and is left exactly as found.

        Examples
        --------
        >>> import torch, polyprune as pp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
        >>> pp.Unit("0", 1).activations(model, torch.rand(5, 1, 7, 7)).shape
        torch.Size([5])
        """
        valid.model("model", model)
        valid.integer("batch_size", batch_size, low=1)
        if masks is not None:
            from .masks import Masks

            valid.instance("masks", masks, Masks, "a polyprune.Masks or None")
        return unit_activations(model, self, as_images(images), masks, batch_size)


def _sample(model: nn.Module, sample: Tensor | int | tuple[int, int]) -> Tensor:
    """One image on the model's device and dtype: the first of a batch, or zeros of a size."""
    if isinstance(sample, Tensor):
        return to_model(as_images(sample, "sample")[:1], model)
    size = (sample, sample) if isinstance(sample, int) else tuple(sample)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(f"sample must be images (N, C, H, W) or a size (H, W), got {sample!r}")
    dtype, device = model_dtype_device(model)
    return torch.zeros(1, first_in_channels(model), *size, dtype=dtype, device=device)


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
        spatial = tuple(output.shape[2:])
        position = resolve_position(self.unit.position, spatial, repr(self.unit.layer))
        return read_unit(output, self.unit.channel, position or None).sum()

    def value(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The objective on ``model(inputs)`` (no gradient; the forward stops at the layer)."""
        valid.model("model", model)
        check_layer(model, self.unit.layer)
        as_images(inputs, "inputs")
        with eval_mode(model), torch.no_grad():
            return self(run_images(model, inputs, [self.unit.layer])[self.unit.layer])


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
