"""Feature visualization of a unit (own, lucent-style) and the figures of a study.

:func:`visualize` optimises images to excite a unit, on the original model or under any
:class:`Masks`. The ``plot_*`` functions draw with matplotlib's object API (no pyplot state,
any backend) and save to a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._fvis import FourierImage, random_transform
from ._hooks import eval_mode, first_in_channels, model_dtype_device
from ._unit_io import resolve_position, unit_activation
from .masks import Masks
from .targets import Unit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_crops", "plot_histograms", "plot_images", "plot_kept_per_layer", "visualize"]


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
    unit.validate(model)
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if steps < 1 or batch < 1 or lr <= 0:
        raise ValueError(f"steps and batch must be ≥ 1 and lr > 0, got {steps}, {batch}, {lr}")
    channels = first_in_channels(model)
    position = resolve_position(model, unit, hw, channels)  # transforms keep the image size
    gen = torch.Generator().manual_seed(seed)
    dtype, device = model_dtype_device(model)
    image = FourierImage(batch, hw, generator=gen, channels=channels).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    ctx: AbstractContextManager[Any] = masks.applied(model) if masks is not None else nullcontext()
    with ctx, eval_mode(model):
        for _ in tqdm(range(steps), disable=not progress, desc=f"visualize {unit}"):
            x = image().to(dtype)
            if transforms:
                x = random_transform(x, gen)
            x = normalize(x) if normalize is not None else x
            value = unit_activation(model, x, unit, position)
            (grad,) = torch.autograd.grad(-value.mean(), image.spectrum)
            image.spectrum.grad = grad
            optimizer.step()
    with torch.no_grad():
        result: Tensor = image().detach().cpu()
    return result


def _to_hwc(image: Tensor) -> NDArray[Any]:
    x = image.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:  # show any range by rescaling per image
        x = (x - lo) / (hi - lo if hi > lo else 1.0)
    array: NDArray[Any] = x.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure  # imported here: keeps `import polyprune` light

    return Figure(figsize=figsize)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def plot_crops(
    images: Tensor,
    labels: Tensor | NDArray[Any],
    path: str | os.PathLike[str],
    *,
    per_cluster: int = 8,
    title: str | None = None,
) -> Path:
    """A grid with one row of top-activating crops per cluster (noise, label -1, last)."""
    y = np.asarray(labels)
    rows = sorted({int(v) for v in y}, key=lambda v: (v < 0, v))
    fig = _figure((1.3 * per_cluster, 1.4 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), per_cluster, squeeze=False)
    for r, label in enumerate(rows):
        idx = np.flatnonzero(y == label)[:per_cluster]
        for c in range(per_cluster):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(idx):
                ax.imshow(_to_hwc(images[int(idx[c])]), cmap="gray")
        name = "noise" if label < 0 else f"cluster {label}"
        axes[r][0].set_title(f"{name} ({int((y == label).sum())})", fontsize=9, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_histograms(
    panels: Mapping[str, Tensor],
    labels: Tensor | NDArray[Any],
    path: str | os.PathLike[str],
    *,
    bins: int = 30,
    title: str | None = None,
) -> Path:
    """The paper's Figure 4: one panel per network, the unit's activations per cluster.

    ``panels`` maps a panel title (e.g. ``"original"``, ``"cs → cluster 0"``) to the unit's
    activation on every image; ``labels`` gives each image's cluster (-1: noise, not drawn).
    """
    y = np.asarray(labels)
    clusters = sorted(int(v) for v in set(y.tolist()) if v >= 0)
    fig = _figure((5.0, 1.9 * len(panels) + 0.5))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], panels.items(), strict=True):
        v = values.detach().float().cpu().numpy()
        edges = np.histogram_bin_edges(v[y >= 0] if (y >= 0).any() else v, bins=bins)
        for label in clusters:
            ax.hist(v[y == label], bins=edges, alpha=0.55, label=f"cluster {label}")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("images")
    axes[-1, 0].set_xlabel("unit activation")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_kept_per_layer(
    masks: Mapping[str, Masks], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Grouped bars: the kept fraction of every layer, one bar per subnetwork."""
    layers = list(dict.fromkeys(name for m in masks.values() for name in m))
    fig = _figure((max(5.0, 0.9 * len(layers) + 2) + 2.0, 3.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(masks))
    for k, (name, m) in enumerate(masks.items()):
        fractions = m.layer_kept_fractions()
        ax.bar(
            np.arange(len(layers)) + k * width,
            [fractions.get(layer, np.nan) for layer in layers],
            width=width,
            label=f"{name} ({m.kept_fraction():.1%})",
        )
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels([layer.removesuffix(".weight") for layer in layers], rotation=30)
    ax.set_ylabel("kept fraction")
    ax.set_yscale("log")
    # outside the axes: with a log scale there is no empty corner to put it in
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_images(
    images: Mapping[str, Tensor], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Images side by side with their names (e.g. visualizations before and after pruning)."""
    fig = _figure((2.2 * len(images), 2.5))
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, (name, image) in zip(axes, images.items(), strict=True):
        ax.imshow(_to_hwc(image[0] if image.dim() == 4 else image), cmap="gray")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)
