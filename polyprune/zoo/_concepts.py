"""Procedural concept images: :func:`concept_images`, :class:`ConceptDataset`,
:func:`write_image_folder`.

See :mod:`polyprune.zoo._render` for how an image is drawn. Image ``i`` of a seed is the same
whatever ``n`` is: images come in independently seeded blocks of 256.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .. import _validate as valid
from ._render import BLOCK, CONCEPTS, MIN_SIZE, block_labels, render_block


def _validate_concepts(concepts: Sequence[str] | str) -> tuple[str, ...]:
    """Check ``concepts`` names known concepts without repeats; return them as a tuple."""
    if isinstance(concepts, str):
        concepts = (concepts,)
    names = tuple(concepts)
    if not names:
        raise ValueError(f"concepts must name at least one concept; valid names: {CONCEPTS}")
    unknown = [c for c in names if c not in CONCEPTS]
    if unknown:
        raise ValueError(
            f"concepts holds unknown concept name(s) {unknown}; valid names: {CONCEPTS}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"concepts must not repeat a name, got {names}")
    return names


def _validate_size(size: int) -> None:
    valid.integer("size", size, low=MIN_SIZE, why=" (pixels)")


def _generate(n: int, names: tuple[str, ...], size: int, seed: int) -> tuple[Tensor, Tensor]:
    images = torch.empty(n, 3, size, size)
    labels = torch.empty(n, dtype=torch.int64)
    for b in range(-(-n // BLOCK)):
        lab = block_labels(seed, len(names), b)
        lo, hi = b * BLOCK, min(n, (b + 1) * BLOCK)
        if hi - lo == BLOCK:
            render_block(seed, 0, b, names, lab, size, out=images[lo:hi])
        else:
            images[lo:hi] = render_block(seed, 0, b, names, lab, size, count=hi - lo)
        labels[lo:hi] = lab[: hi - lo]
    return images, labels


def concept_images(
    n: int,
    concepts: Sequence[str] | str = CONCEPTS,
    size: int = 64,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Render ``n`` procedural concept images with balanced labels.

    Parameters
    ----------
    n : int
        Number of images (> 0).
    concepts : sequence of str or str, default :data:`CONCEPTS`
        Which concepts to draw; labels index this sequence in its given order.
    size : int, default 64
        Image side in pixels (>= 16). Pattern scales are relative to ``size``.
    seed : int, default 0
        Non-negative seed. The result is a deterministic function of ``(n, concepts, size, seed)``,
        and image ``i`` does not depend on ``n``.

    Returns
    -------
    images : Tensor
        float32, shape ``(n, 3, size, size)``, values in [0, 1].
    labels : Tensor
        int64, shape ``(n,)``; ``concepts[labels[i]]`` is the concept of image ``i``. Every block of
        256 consecutive images holds each concept equally often (up to one).

    Raises
    ------
    ValueError
        If a concept name is unknown or repeated, ``n <= 0``, ``size < 16`` or ``seed < 0``.

    Notes
    -----
    Concepts: ``hstripes``, ``vstripes``, ``dstripes`` (±45°), ``rings``, ``checker``, ``dots`` (a
    lattice) and ``blobs`` (four Gaussian blobs). Each image draws its pattern in a foreground
    colour over a background colour (every channel 0.35–0.65 apart) inside a soft disc whose centre
    is within ``0.125 * size`` of the image centre on each axis and whose radius is 0.30–0.55 ×
    ``size``, so the disc of radius ``0.12 * size`` around the image centre always shows the
    pattern. Period (0.09–0.20 × ``size``), phase, orientation (±10°), sharpness, background
    clutter and luminance noise vary per image.

    Examples
    --------
    >>> from polyprune import zoo
    >>> images, labels = zoo.concept_images(8, concepts=("hstripes", "rings"), size=32)
    >>> tuple(images.shape), labels.dtype
    ((8, 3, 32, 32), torch.int64)
    >>> bool(images.min() >= 0) and bool(images.max() <= 1)
    True
    """
    names = _validate_concepts(concepts)
    valid.integer("n", n, low=1)
    _validate_size(size)
    valid.seed("seed", seed)
    return _generate(n, names, size, seed)


class ConceptDataset(Dataset[tuple[Tensor, int]]):
    """Map-style dataset of procedural concept images, rendered lazily in blocks of 256.

    Item ``i`` equals ``concept_images(n, concepts, size, seed)`` at index ``i`` (same image, same
    label). Blocks are cached (the most recent ``cache_blocks`` of them), so sequential or
    block-local access renders each block once.

    Parameters
    ----------
    n : int
        Number of items (> 0).
    concepts : sequence of str or str, default :data:`CONCEPTS`
        Concepts to draw; labels index this sequence.
    size : int, default 64
        Image side in pixels (>= 16).
    seed : int, default 0
        Non-negative seed.
    transform : callable, optional
        Applied to each image tensor ``(3, size, size)`` before it is returned.
    cache_blocks : int, default 4
        How many rendered blocks to keep in memory.

    Attributes
    ----------
    concepts : tuple of str
        The concept names; ``concepts[label]`` names an item's concept.
    targets : list of int
        All labels, computed without rendering images (as in torchvision's ``ImageFolder``).

    Examples
    --------
    >>> from polyprune import zoo
    >>> ds = zoo.ConceptDataset(10, concepts=("rings", "dots"), size=32)
    >>> image, label = ds[3]
    >>> tuple(image.shape), ds.concepts[label] in ("rings", "dots")
    ((3, 32, 32), True)
    """

    def __init__(
        self,
        n: int,
        concepts: Sequence[str] | str = CONCEPTS,
        size: int = 64,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
        cache_blocks: int = 4,
    ) -> None:
        self.concepts = _validate_concepts(concepts)
        valid.integer("n", n, low=1)
        _validate_size(size)
        valid.seed("seed", seed)
        valid.integer("cache_blocks", cache_blocks, low=1)
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {type(transform).__name__}")
        self.n, self.size, self.seed = n, size, seed
        self.transform = transform
        self._cache_blocks = cache_blocks
        self._cache: OrderedDict[int, Tensor] = OrderedDict()
        n_blocks = -(-n // BLOCK)
        labels = [block_labels(seed, len(self.concepts), b) for b in range(n_blocks)]
        self.targets: list[int] = torch.cat(labels)[:n].tolist()

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> Tensor:
        if b in self._cache:
            self._cache.move_to_end(b)
            return self._cache[b]
        lab = block_labels(self.seed, len(self.concepts), b)
        images = render_block(self.seed, 0, b, self.concepts, lab, self.size)
        self._cache[b] = images
        while len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return images

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for ConceptDataset of length {self.n}")
        index %= self.n
        image = self._block(index // BLOCK)[index % BLOCK].clone()
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def write_image_folder(
    root: str | os.PathLike[str],
    n_per_concept: int,
    concepts: Sequence[str] | str = CONCEPTS,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    image_format: Literal["png", "jpeg"] = "png",
) -> Path:
    """Write concept images as a torchvision ``ImageFolder`` tree of PNGs (or JPEGs).

    Creates ``root/<concept>/<index:05d>.png`` (``.jpg`` with ``image_format="jpeg"``, quality
    90, as a photo data set would be), ``n_per_concept`` images per concept. Each concept
    uses its own random stream (keyed by its position in :data:`CONCEPTS`), so the images of one
    concept do not depend on which other concepts are written.

    Parameters
    ----------
    root : str or path-like
        Destination folder; created if missing.
    n_per_concept : int
        Images per concept (> 0).
    concepts : sequence of str or str, default :data:`CONCEPTS`
        Concepts to write, one sub-folder each.
    size : int, default 64
        Image side in pixels (>= 16).
    seed : int, default 0
        Non-negative seed.
    overwrite : bool, default False
        Allow writing into a ``root`` that already has entries (existing PNGs of the same names are
        replaced). Without it a non-empty ``root`` raises :class:`FileExistsError`.
    image_format : {"png", "jpeg"}, default "png"
        PNG is lossless; JPEG decodes like real photo data sets (benchmarks of data loading).

    Returns
    -------
    Path
        ``root``. Note that ``ImageFolder`` sorts class folders by name, so its class indices follow
        ``sorted(concepts)``, not ``concepts``.

    Examples
    --------
    >>> import tempfile
    >>> from torchvision.datasets import ImageFolder
    >>> from polyprune import zoo
    >>> root = zoo.write_image_folder(tempfile.mkdtemp(), 2, concepts=("rings", "dots"), size=32)
    >>> ImageFolder(root).classes
    ['dots', 'rings']
    """
    names = _validate_concepts(concepts)
    valid.integer("n_per_concept", n_per_concept, low=1)
    _validate_size(size)
    valid.seed("seed", seed)
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    path = valid.path("root", root)
    suffix = ".png" if image_format == "png" else ".jpg"
    options: dict[str, Any] = {"quality": 90} if image_format == "jpeg" else {}  # PIL's save
    if path.exists() and not path.is_dir():
        raise ValueError(f"root must be a directory, got the file {path}")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} is not empty; pass overwrite=True to write into it")
    for name in names:
        folder = path / name
        folder.mkdir(parents=True, exist_ok=True)
        stream = 2 + CONCEPTS.index(name)
        for b in range(-(-n_per_concept // BLOCK)):
            lab = torch.zeros(BLOCK, dtype=torch.int64)
            count = min(BLOCK, n_per_concept - b * BLOCK)
            images = render_block(seed, stream, b, (name,), lab, size, count=count)
            pixels = (images[:count] * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j in range(count):
                target = folder / f"{b * BLOCK + j:05d}{suffix}"
                Image.fromarray(pixels[j]).save(target, **options)
    return path
