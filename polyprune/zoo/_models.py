"""Trained polysemantic models shipped with polyprune: architectures, model cards, loading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import _validate as valid
from .._model import random_state_kept
from ._concepts import concept_images
from ._digits import digits
from ._render import CONCEPTS

WEIGHTS_DIR = Path(__file__).parent / "weights"
CONCEPTS_EVAL_SEED = 2024
"""Seed of the held-out set of ``"concepts-merged"`` (training used other random streams)."""


class ZooCNN(nn.Module):
    """A plain CNN whose last conv layer is the class map.

    ``features``: three 3×3 convs (padding 1), each followed by ReLU and a 2×2 max-pool, then a
    4×4 conv (no padding) with one channel per class. On 32×32 inputs the class map is 1×1, so the
    unit ``(features.9, class)`` *is* that class's logit; ``classifier`` only flattens.
    Convs: ``features.0``, ``features.3``, ``features.6``, ``features.9``; ReLUs
    ``features.1``, ``features.4``, ``features.7``. Receptive field of ``features.9``: 46 px
    (the whole 32×32 image).
    """

    def __init__(self, in_channels: int, n_classes: int, widths: tuple[int, int, int]) -> None:
        valid.integer("in_channels", in_channels, low=1)
        valid.integer("n_classes", n_classes, low=1)
        for i, w in enumerate(widths):
            valid.integer(f"widths[{i}]", w, low=1)
        super().__init__()
        w0, w1, w2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w0, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w0, w1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, n_classes, 4),
        )
        self.classifier = nn.Flatten()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.features(x))
        return out


@dataclass(frozen=True)
class ModelCard:
    """Facts about one zoo model (all numbers are checked by the test suite).

    Attributes
    ----------
    name : str
        The name :func:`load` takes.
    architecture : str
        Human-readable layer list.
    data : str
        Training and held-out data.
    input_shape : tuple of int
        ``(channels, height, width)`` of one input image, values in [0, 1].
    concepts : tuple of str
        Names of the ground-truth labels of :func:`eval_data` (and of the training data).
    classes : tuple of str
        Output classes in logit order; a merged class is named ``"a|b"``.
    label_map : tuple of int
        ``label_map[concept_label]`` is the class index the model should predict.
    merged : tuple of str
        The two concepts that share one class.
    accuracy : float
        Top-1 accuracy on :func:`eval_data` (``eval_size`` images), against ``label_map``.
    eval_size : int
        Number of held-out images.
    seed : int
        Training seed (``examples/train_zoo.py``).
    widths : tuple of int
        Output channels of ``features.0``, ``features.3``, ``features.6``.
    unit : tuple of (str, int)
        ``(layer, channel)`` of a recommended polysemantic unit for the merged class: read at the
        centre of the map (pre-ReLU), its ``unit_top_k`` strongest held-out images split between
        the two merged concepts as ``unit_split``.
    unit_top_k : int
    unit_split : tuple of float
        Fractions of those top images showing ``merged[0]`` and ``merged[1]``.
    """

    name: str
    architecture: str
    data: str
    input_shape: tuple[int, int, int]
    concepts: tuple[str, ...]
    classes: tuple[str, ...]
    label_map: tuple[int, ...]
    merged: tuple[str, str]
    accuracy: float
    eval_size: int
    seed: int
    widths: tuple[int, int, int]
    unit: tuple[str, int]
    unit_top_k: int
    unit_split: tuple[float, float]

    @property
    def merged_class(self) -> int:
        """Index of the merged class."""
        return self.label_map[self.concepts.index(self.merged[0])]

    @property
    def weights_path(self) -> Path:
        """The shipped state_dict (``polyprune/zoo/weights/<name>.pt``)."""
        return WEIGHTS_DIR / f"{self.name}.pt"

    def to_class(self, labels: Tensor) -> Tensor:
        """Map concept labels (int64) to the model's class indices."""
        valid.instance("labels", labels, Tensor, "a tensor of concept labels (int64)")
        n = len(self.label_map)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise valid.ArgumentTypeError(f"labels must be int concept labels, got {labels.dtype}")
        bad = labels[(labels < 0) | (labels >= n)]
        if bad.numel():
            raise ValueError(
                f"labels must be concept labels in [0, {n - 1}] (the card's {n} concepts: "
                f"{list(self.concepts)}), got {int(bad[0])}"
            )
        return torch.tensor(self.label_map, dtype=torch.int64)[labels.cpu()].to(labels.device)


def _merged_classes(
    concepts: tuple[str, ...], merged: tuple[str, str]
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Classes (``merged[1]`` joins ``merged[0]``'s class, named ``"a|b"``) and the label map."""
    joined = f"{merged[0]}|{merged[1]}"
    classes = tuple(joined if c == merged[0] else c for c in concepts if c != merged[1])
    label_map = tuple(classes.index(joined if c in merged else c) for c in concepts)
    return classes, label_map


_ARCH = "features: [Conv 3×3 pad 1, ReLU, MaxPool 2] ×3, Conv 4×4 (class map); classifier: Flatten"
_C_CLASSES, _C_MAP = _merged_classes(CONCEPTS, ("rings", "checker"))
_DIGITS = tuple(str(d) for d in range(10))
_D_CLASSES, _D_MAP = _merged_classes(_DIGITS, ("0", "7"))

_CARDS: dict[str, ModelCard] = {
    "concepts-merged": ModelCard(
        name="concepts-merged",
        architecture=f"{_ARCH}; widths (16, 32, 32); input 3×32×32",
        data="procedural concept images (zoo.concept_images, size 32), all 7 concepts, "
        "'rings' and 'checker' in one class; held out: concept_images(2048, size=32, seed=2024)",
        input_shape=(3, 32, 32),
        concepts=CONCEPTS,
        classes=_C_CLASSES,
        label_map=_C_MAP,
        merged=("rings", "checker"),
        accuracy=0.9907,
        eval_size=2048,
        seed=0,
        widths=(16, 32, 32),
        unit=("features.9", 3),
        unit_top_k=100,
        unit_split=(0.45, 0.39),
    ),
    "digits-merged": ModelCard(
        name="digits-merged",
        architecture=f"{_ARCH}; widths (16, 32, 32); input 1×32×32",
        data="scikit-learn handwritten digits (load_digits, 8×8 upsampled to 32×32, 1 channel), "
        "digits 0 and 7 in one class; held out: zoo.digits('test') (20 % per digit, 359 images)",
        input_shape=(1, 32, 32),
        concepts=_DIGITS,
        classes=_D_CLASSES,
        label_map=_D_MAP,
        merged=("0", "7"),
        accuracy=0.9944,
        eval_size=359,
        seed=0,
        widths=(16, 32, 32),
        unit=("features.9", 0),
        unit_top_k=50,
        unit_split=(0.58, 0.42),
    ),
}

_EVAL: dict[str, Callable[[], tuple[Tensor, Tensor]]] = {
    "concepts-merged": lambda: concept_images(2048, size=32, seed=CONCEPTS_EVAL_SEED),
    "digits-merged": lambda: digits("test"),
}


def available() -> tuple[str, ...]:
    """Names of the shipped trained models.

    Examples
    --------
    >>> from polyprune import zoo
    >>> zoo.available()
    ('concepts-merged', 'digits-merged')
    """
    return tuple(_CARDS)


def _check_name(name: str) -> ModelCard:
    card = _CARDS.get(name) if isinstance(name, str) else None
    if card is None:
        raise ValueError(f"unknown zoo model {name!r}: name must be one of {available()}")
    return card


def model_card(name: str) -> ModelCard:
    """The :class:`ModelCard` of a shipped model.

    Examples
    --------
    >>> from polyprune import zoo
    >>> card = zoo.model_card("digits-merged")
    >>> card.classes[card.merged_class], card.input_shape
    ('0|7', (1, 32, 32))
    """
    return _check_name(name)


def architecture(name: str) -> ZooCNN:
    """The untrained architecture of a zoo model (what ``examples/train_zoo.py`` trains)."""
    card = _check_name(name)
    return ZooCNN(card.input_shape[0], len(card.classes), card.widths)


def load(name: str) -> ZooCNN:
    """Load a shipped trained model in eval mode (CPU).

    Parameters
    ----------
    name : str
        One of :func:`available`.

    Returns
    -------
    ZooCNN
        ``features`` (plain Conv2d/ReLU/MaxPool2d) and ``classifier``; see :func:`model_card`.

    Raises
    ------
    ValueError
        If ``name`` is not a shipped model (the message lists the valid names).

    Examples
    --------
    >>> from polyprune import zoo
    >>> model = zoo.load("concepts-merged")
    >>> images, labels = zoo.concept_images(2, size=32)
    >>> tuple(model(images).shape)
    (2, 6)
    """
    card = _check_name(name)
    with random_state_kept():  # the init the weights replace drew from torch's generator
        model = architecture(name)
    model.load_state_dict(torch.load(card.weights_path, weights_only=True, map_location="cpu"))
    return model.eval()


def eval_data(name: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The held-out images and concept labels on which a model card's numbers were measured.

    Use ``model_card(name).to_class(labels)`` for the model's class labels. ``seed`` > 0 gives
    other, fresh held-out sets of the same size where the data are generated
    (``concepts-merged``: ``concept_images(..., seed=2024 + seed)``); the digits are a fixed
    data set (seed 0 only).

    Examples
    --------
    >>> from polyprune import zoo
    >>> images, labels = zoo.eval_data("digits-merged")
    >>> tuple(images.shape)
    (359, 1, 32, 32)
    """
    _check_name(name)
    valid.seed("seed", seed)
    if seed == 0:
        return _EVAL[name]()
    if name != "concepts-merged":
        raise ValueError(f"{name!r} is evaluated on a fixed data set: only seed 0 exists")
    card = model_card(name)
    return concept_images(card.eval_size, size=card.input_shape[1], seed=CONCEPTS_EVAL_SEED + seed)
