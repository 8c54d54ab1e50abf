"""Feature visualization of a unit (own, lucent-style), on the original model or a subnetwork.

:func:`visualize` optimises images to excite a unit, on the original model or under any
:class:`~polyprune.Masks` (paper section 3.4). The figures live in :mod:`polyprune.plot`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from . import _validate as valid
from ._fvis import FourierImage, random_transform
from ._model import eval_mode, first_in_channels, gradients_on, model_dtype_device
from ._progress import staged
from ._unit_io import placed, unit_activation
from .masks import Masks
from .targets import Unit

__all__ = ["visualize"]


@gradients_on()  # also inside a caller's no_grad / inference_mode
def visualize(
    model: nn.Module,
    unit: Unit,
    *,
    masks: Masks | None = None,
    size: int | tuple[int, int] = 64,
    steps: int = 128,
    lr: float = 0.05,
    batch: int = 1,
    seed: int = 0,
    transforms: bool = True,
    normalize: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
) -> Tensor:
    """Optimise ``batch`` images of ``size`` to maximise the unit's activation.

    The unit is read at ``unit.position`` or the center of its map; images are parameterized in
    a decorrelated Fourier basis (lucent's ``fft_image``) and randomly padded, jittered, scaled
    and rotated each step (``transforms=True``). ``normalize`` maps [0, 1] images to the model's
    input range. The model is left as found (training flags restored, no gradients written to
    its parameters, masks removed). Returns images in [0, 1], shape (batch, C, H, W).

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(4, 2, 5))
    >>> images = pp.visualize(model, pp.Unit("2", 1), size=24, steps=8, progress=False)
    >>> tuple(images.shape), bool(images.min() >= 0 and images.max() <= 1)
    ((1, 3, 24, 24), True)
    """
    valid.floating_model("model", model)
    valid.instance("unit", unit, Unit, "a polyprune.Unit")
    valid.instance(
        "masks", masks, (Masks, type(None)), "a polyprune.Masks (a Subnetwork's .masks) or None"
    )
    hw = valid.size("size", size)
    valid.integer("steps", steps, low=1)
    valid.number("lr", lr, low=0, low_open=True)
    valid.integer("batch", batch, low=1)
    valid.seed("seed", seed)
    kinds = (Callable, type(None))  # abc.Callable is a runtime type (mypy sees a special form)
    valid.instance("normalize", normalize, kinds, "a callable or None")  # type: ignore[arg-type]
    unit.validate(model)
    channels = first_in_channels(model)
    dtype, device = model_dtype_device(model)
    sample = torch.zeros(1, channels, *hw, dtype=dtype, device=device)
    at = placed(model, unit, sample)  # transforms keep the image size
    gen = torch.Generator().manual_seed(seed)
    image = FourierImage(batch, hw, generator=gen, channels=channels).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    ctx: AbstractContextManager[Any] = masks.applied(model) if masks is not None else nullcontext()
    with ctx, eval_mode(model):
        for _ in staged(range(steps), f"visualize {unit}", unit="step", show=progress):
            x = image().to(dtype)
            if transforms:
                x = random_transform(x, gen)
            x = normalize(x) if normalize is not None else x
            value = unit_activation(model, x, at)
            (grad,) = torch.autograd.grad(-value.mean(), image.spectrum)
            image.spectrum.grad = grad
            optimizer.step()
    with torch.no_grad():
        result: Tensor = image().detach().cpu()
    return result
