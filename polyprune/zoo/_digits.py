"""scikit-learn's bundled handwritten digits (8×8), upsampled, with a fixed stratified split."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validate as valid
from .._model import random_state_kept

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
"""Fraction of each digit's images in the ``"test"`` split (rounded per digit)."""
_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    with random_state_kept():  # sklearn's first import draws from Python's `random`
        from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


def _test_indices(labels: np.ndarray) -> np.ndarray:
    """Stratified test indices: per digit, the first ``round(0.2 * count)`` of a seeded shuffle."""
    rng = np.random.RandomState(_SPLIT_SEED)  # legacy generator: stream fixed across numpy versions
    picked = []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        idx = idx[rng.permutation(idx.size)]
        picked.append(idx[: round(TEST_FRACTION * idx.size)])
    return np.sort(np.concatenate(picked))


def digits(split: str = "test", size: int = 32) -> tuple[Tensor, Tensor]:
    """Handwritten digits (``sklearn.datasets.load_digits``) as single-channel image tensors.

    The 1797 8×8 images (grey levels 0–16) are scaled to [0, 1] and bilinearly upsampled to
    ``size × size``. The split is fixed: per digit, 20 % of its images (rounded), chosen by a seeded
    shuffle, form ``"test"`` (359 images); the rest form ``"train"`` (1438).

    Parameters
    ----------
    split : {"train", "test", "all"}, default "test"
        Which images to return (``"all"`` keeps the dataset's order).
    size : int, default 32
        Output side in pixels (>= 8). The ``"digits-merged"`` model expects 32.

    Returns
    -------
    images : Tensor
        float32, shape ``(n, 1, size, size)``, values in [0, 1].
    labels : Tensor
        int64 digits 0–9 (the concepts; see a model card's ``label_map`` for its classes).

    Raises
    ------
    ValueError
        If ``split`` or ``size`` is invalid.

    Examples
    --------
    >>> from polyprune import zoo
    >>> images, labels = zoo.digits("test")
    >>> tuple(images.shape), int(labels.bincount().min())
    ((359, 1, 32, 32), 35)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    valid.integer("size", size, low=8, why=" (pixels)")
    raw, target = _raw()
    if split == "all":
        idx = np.arange(target.size)
    else:
        test = _test_indices(target)
        idx = test if split == "test" else np.setdiff1d(np.arange(target.size), test)
    images = torch.from_numpy(raw[idx] / 16.0).unsqueeze(1)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp_(0.0, 1.0).contiguous(), torch.from_numpy(target[idx])
