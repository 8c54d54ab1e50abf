"""Ground truth for polyprune: images, networks and models whose polysemantic units are known.

- **Concept images** (:func:`concept_images`, :class:`ConceptDataset`, :func:`write_image_folder`):
  deterministic procedural families ("hstripes", "rings", ...; :data:`CONCEPTS`).
- **Planted superposition** (:func:`planted_network`): a CNN whose unit :data:`PLANTED_TARGET` fires
  for several concepts through disjoint circuits known exactly, kernel by kernel.
- **A hand-built circuit** (:func:`handbuilt`): three convolutions whose unit depends on 15 known
  kernels, with decoys larger than the circuit.
- **Trained polysemantic models** (:func:`load`, :func:`available`, :func:`model_card`,
  :func:`eval_data`, :func:`digits`): small CNNs trained with two concepts merged into one class,
  shipped as weights inside the package.

Examples
--------
>>> from polyprune import zoo
>>> model, truth = zoo.planted_network(("hstripes", "rings"))
>>> zoo.PLANTED_TARGET
('features.6', 0)
>>> zoo.available()
('concepts-merged', 'digits-merged')
"""

from __future__ import annotations

from ._cases import DemoCase, demo_cases, demo_data
from ._concepts import ConceptDataset, concept_images, write_image_folder
from ._digits import digits
from ._handbuilt import HandBuilt, handbuilt
from ._models import ModelCard, ZooCNN, architecture, available, eval_data, load, model_card
from ._planted import PLANTED_SIZE, PLANTED_TARGET, PlantedNetwork, planted_network
from ._render import CONCEPTS
from ._training import accuracy, recommend_unit, train, train_planted

__all__ = [
    "CONCEPTS",
    "PLANTED_SIZE",
    "PLANTED_TARGET",
    "ConceptDataset",
    "DemoCase",
    "HandBuilt",
    "ModelCard",
    "PlantedNetwork",
    "ZooCNN",
    "accuracy",
    "architecture",
    "available",
    "concept_images",
    "demo_cases",
    "demo_data",
    "digits",
    "eval_data",
    "handbuilt",
    "load",
    "model_card",
    "planted_network",
    "recommend_unit",
    "train",
    "train_planted",
    "write_image_folder",
]
