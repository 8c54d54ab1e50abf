"""What one run of the faithfulness benchmark does (settings, seeds, models), and its rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import polyprune as pp

from ..config import (
    OBJECTIVES,
    Config,
    Objective,
    as_tuples,
)
from ..rows import FitRow
from .methods import IdentRow

#: How the benchmark is run (the command recorded in the report's header).
COMMAND = ("python", "-m", "benchmarks.claims.faithful")
#: The untuned seeds.
SEEDS = (10, 11, 12, 13, 14)


@dataclass(frozen=True)
class Setting:
    """Planted networks: ``zoo.planted_network(pair, distractors, seed, cross=cross,
    identifiable=identifiable)`` for each seed (``pair`` None: ``PLANTED_PAIRS[seed % 3]``, as
    the claims benchmark)."""

    name: str
    seeds: tuple[int, ...]
    pair: tuple[str, str] | None = None
    distractors: int = 2
    cross: float = 1.0
    identifiable: bool = False


#: The untuned settings of issue 15, and issue 23's ``cross=0`` (no cross-block kernels) and
#: ``identifiable`` (gated, pruned detectors: the true circuits are identifiable by construction).
SETTINGS: tuple[Setting, ...] = (
    Setting("identifiable", SEEDS, cross=0.0, identifiable=True),
    Setting("cross=0", SEEDS, cross=0.0),
    Setting("default pairs", SEEDS),
    Setting("rings/checker", SEEDS, ("rings", "checker")),
    Setting("blobs/dstripes", SEEDS, ("blobs", "dstripes")),
    Setting("hstripes/vstripes", SEEDS, ("hstripes", "vstripes")),
    Setting("distractors=3", SEEDS, distractors=3),
    Setting("cross=2.0", SEEDS, cross=2.0),
)
#: The tuning set (``--settings tuning``; not part of the default run).
TUNING = Setting("tuning (seeds 0–2)", (0, 1, 2))
#: Settings by the name ``--settings`` takes.
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS} | {"tuning": TUNING}
#: The trained zoo models.
MODELS = ("concepts-merged", "digits-merged")


@dataclass(frozen=True)
class FaithfulConfig:
    """What one run does (``epochs`` None: each objective's default, ``pp.CSConfig().epochs``)."""

    settings: tuple[Setting, ...] = SETTINGS
    models: tuple[str, ...] = MODELS
    model_seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    planted_images: int = 1500
    planted_k: int = 300
    trained_k: int = 100
    objectives: tuple[Objective, ...] = OBJECTIVES
    methods: tuple[str, ...] = ("ablation", "ablation sequential", "attribution")
    #: ``CSConfig`` changes applied to every CS fit (``--cs KEY=VALUE``), e.g. ``(("lam", 0.05),)``
    cs: tuple[tuple[str, Any], ...] = ()

    def claims_config(self) -> Config:
        """The claims benchmark's configuration that builds and runs these cases."""
        return Config(
            planted_images=self.planted_images, planted_k=self.planted_k, trained_k=self.trained_k
        )

    def cs_config(self, loss: Objective) -> pp.CSConfig:
        """CS with objective ``loss`` and its own defaults (but ``epochs`` if set, and the
        changes of :attr:`cs`)."""
        config = pp.CSConfig(loss=loss).replace(**dict(self.cs))
        return config if self.epochs is None else config.replace(epochs=self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaithfulConfig:
        """The inverse of :meth:`to_dict` (or of its JSON)."""
        values = {k: as_tuples(v) for k, v in data.items()}
        values["settings"] = tuple(
            Setting(**{k: as_tuples(v) for k, v in s.items()}) for s in data["settings"]
        )
        return cls(**values)


#: ``--quick``: the default pairs at seed 10 and digits-merged at seed 0, 3 epochs, fewer images.
QUICK = FaithfulConfig(
    settings=(Setting("default pairs", (10,)),),
    models=("digits-merged",),
    model_seeds=(0,),
    epochs=3,
    planted_images=600,
    planted_k=150,
)


@dataclass
class Rows:
    """Every subnetwork of a run (planted: ``family`` is the setting; trained: the model) and
    the cases that gave none (``skipped``: case name → why)."""

    config: FaithfulConfig
    fits: list[FitRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    identifiability: list[IdentRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``--json`` writes, with the wall time and arguments)."""
        return {
            "config": self.config.to_dict(),
            "fits": [r.to_dict() for r in self.fits],
            "skipped": self.skipped,
            "identifiability": [r.to_dict() for r in self.identifiability],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rows:
        """The inverse of :meth:`to_dict`."""
        return cls(
            FaithfulConfig.from_dict(data["config"]),
            [FitRow.from_dict(r) for r in data["fits"]],
            dict(data["skipped"]),
            [IdentRow.from_dict(r) for r in data.get("identifiability", [])],
        )
