"""The demo's cases: the planted network and the trained zoo models, with data and settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..masks import Masks
from ..sparsify import CSConfig
from ..targets import Unit
from ._concepts import concept_images
from ._digits import digits
from ._models import available, load, model_card
from ._planted import PLANTED_SIZE, PLANTED_TARGET, planted_network
from ._render import CONCEPTS

__all__ = ["DemoCase", "demo_cases", "demo_data"]


@dataclass(frozen=True)
class DemoCase:
    """One model, unit and data set of ``polyprune demo``, with the demo's settings.

    ``concepts`` is the true concept of every image; ``truth`` the exact circuit of each
    concept where it is known (the planted network).
    """

    name: str
    model: nn.Module
    unit: Unit
    images: Tensor
    concepts: list[str]  # ground-truth concept name of every image
    k: int
    truth: dict[str, Masks] | None = None
    keep: float = 0.05  # the scorers' kept fraction
    #: Continuous Sparsification settings (small problems: 25 epochs suffice).
    cs: CSConfig = field(default_factory=lambda: CSConfig(epochs=25))


def demo_cases() -> list[DemoCase]:
    """The planted network (exact circuits known) and the two trained zoo models.

    Examples
    --------
    >>> from polyprune import zoo
    >>> [(c.name, c.k, c.cs.epochs) for c in zoo.demo_cases()]
    [('planted', 300, 25), ('concepts-merged', 100, 25), ('digits-merged', 100, 25)]
    """
    planted, truth = planted_network()
    images, labels = concept_images(1500, size=PLANTED_SIZE, seed=1)
    cases = [
        DemoCase("planted", planted, Unit(*PLANTED_TARGET), images,
                 [CONCEPTS[i] for i in labels.tolist()], k=300, truth=truth),
    ]  # fmt: skip
    for name in available():
        card = model_card(name)
        x, y = demo_data(name)
        names = [card.concepts[i] for i in y.tolist()]
        # the unit is a class logit: its top 100 are mostly the two merged concepts
        cases.append(DemoCase(name, load(name), Unit(*card.unit), x, names, k=100))
    return cases


def demo_data(name: str) -> tuple[Tensor, Tensor]:
    """Images for a trained zoo model's study: enough that its top 100 are the merged concepts.

    ``concepts-merged``: 4,000 fresh concept images (seed 7); ``digits-merged``: all 1,797 digits.
    """
    if name == "digits-merged":
        return digits("all")
    return concept_images(4000, size=model_card(name).input_shape[1], seed=7)
