"""Ground truth for polyprune: procedural concept images, a planted-superposition network with an
exact circuit per concept, and small trained polysemantic models shipped with the package.
"""

from __future__ import annotations

from ._concepts import ConceptDataset, concept_images, write_image_folder
from ._render import CONCEPTS

__all__ = [
    "CONCEPTS",
    "ConceptDataset",
    "concept_images",
    "write_image_folder",
]
