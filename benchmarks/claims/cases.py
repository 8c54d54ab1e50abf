"""The cases: a model, its polysemantic unit, the images searched and their true concepts.

The planted variants (:func:`polyprune.zoo.planted_network`, circuits known kernel by kernel;
the claims use the default pairs, distractors and cross scale, :mod:`benchmarks.claims.faithful`
other ones too) and the trained zoo models (``concepts-merged``, ``digits-merged``) on their
held-out data (:func:`trained_case`) or on the demo's data (:func:`demo_case`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

import polyprune as pp
from polyprune import zoo

from .config import IMAGE_SEED, PLANTED_PAIRS, Config


@dataclass(frozen=True)
class Case:
    """One model, its polysemantic unit, the images searched and their true concepts."""

    name: str
    family: str
    seed: int
    model: nn.Module
    unit: pp.Unit
    images: Tensor
    concepts: list[str]
    pair: tuple[str, str]
    k: int
    truth: Mapping[str, pp.Masks] | None = None

    def true_circuit(self, concept: str) -> pp.Masks | None:
        """The planted circuit of ``concept`` (None: not planted, or no such circuit)."""
        return None if self.truth is None else self.truth.get(concept)


def planted_case(
    seed: int,
    cfg: Config,
    pair: tuple[str, str] | None = None,
    distractors: int = 2,
    cross: float = 1.0,
    identifiable: bool = False,
) -> Case:
    """Planted variant ``seed``: pair ``PLANTED_PAIRS[seed % 3]`` unless ``pair`` is given,
    hidden-channel shuffle, distractors and cross kernels drawn by seed
    (:func:`polyprune.zoo.planted_network`).

    Named ``planted-<seed>`` with the default pair, distractors and cross scale (the claims'
    cases), else ``planted-<a>-<b>-d<distractors>-x<cross>-<seed>`` (``-id`` before the seed:
    the identifiable variant, ``zoo.planted_network(identifiable=True)``, whose unit is
    ``model.target``).
    """
    default = pair is None and distractors == 2 and cross == 1.0 and not identifiable
    pair = PLANTED_PAIRS[seed % len(PLANTED_PAIRS)] if pair is None else pair
    model, truth = zoo.planted_network(
        pair, distractors=distractors, seed=seed, cross=cross, identifiable=identifiable
    )
    images, labels = zoo.concept_images(
        cfg.planted_images, size=zoo.PLANTED_SIZE, seed=IMAGE_SEED + seed
    )
    names = [zoo.CONCEPTS[i] for i in labels.tolist()]
    name = (
        f"planted-{seed}"
        if default
        else f"planted-{'-'.join(pair)}-d{distractors}-x{cross:g}{'-id' * identifiable}-{seed}"
    )
    return Case(
        name, "planted", seed, model, pp.Unit(*model.target), images, names, pair,
        cfg.planted_k, truth,
    )  # fmt: skip


def trained_case(name: str, seed: int, cfg: Config) -> Case:
    """A trained zoo model on the demo's data; ``seed`` changes the split, CS order and Random,
    and for concepts-merged the images (seed 0: ``zoo.eval_data``, then fresh held-out sets)."""
    card = zoo.model_card(name)
    if name == "digits-merged":  # the data set is fixed: all 1,797 digits, as the demo
        images, labels = zoo.digits("all")
    else:
        images, labels = zoo.eval_data(name, seed)
    names = [card.concepts[i] for i in labels.tolist()]
    return Case(
        f"{name}-{seed}", name, seed, zoo.load(name), pp.Unit(*card.unit), images, names,
        card.merged, cfg.trained_k,
    )  # fmt: skip


def demo_case(name: str, seed: int, cfg: Config) -> Case:
    """A trained zoo model on the images ``polyprune demo`` searches (:func:`polyprune.zoo.
    demo_data`: 4,000 concept images of seed 7, or all 1,797 digits); ``seed`` changes the
    held-out split and the CS batch order only."""
    card = zoo.model_card(name)
    images, labels = zoo.demo_data(name)
    names = [card.concepts[i] for i in labels.tolist()]
    return Case(
        f"{name}-demo-{seed}", name, seed, zoo.load(name), pp.Unit(*card.unit), images, names,
        card.merged, cfg.trained_k,
    )  # fmt: skip


def cases(cfg: Config) -> list[Callable[[], Case]]:
    """Lazy constructors of every case of ``cfg`` (built one at a time)."""
    out: list[Callable[[], Case]] = [partial(planted_case, s, cfg) for s in cfg.planted_seeds]
    for name in cfg.trained:
        out += [partial(trained_case, name, s, cfg) for s in cfg.trained_seeds]
    return out
