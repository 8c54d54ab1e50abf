"""The bad-input contract of every public function and method (issue 20 §5).

A table of bad-argument kinds (wrong type, a model that is not a Module, on the meta device or in
half precision, empty, NaN, wrong rank, images too small for the network or with the wrong
channel count, bad seeds, out-of-range ints, wrong object types) is applied to every public
callable of docs/api.md: each must raise a ``TypeError`` or ``ValueError`` whose message names
the argument, never a raw torch/numpy/hdbscan error. ``test_every_public_callable_has_a_row``
fails when a new public name has no row, so new names must be covered.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from _contract_known import KNOWN_RAW
from helpers import load_script
from torch import nn

import polyprune as pp
from polyprune import ablation, cli, evaluation, plot, scoring, zoo
from polyprune.masks import Scores

NAN = float("nan")
UNIT = pp.Unit("2", 1)


class Fresh:
    """A value built anew for each call (models are changed by some calls)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def __repr__(self) -> str:
        return "Fresh"


def resolve(value: Any) -> Any:
    return value.make() if isinstance(value, Fresh) else value


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()


def meta_net() -> nn.Module:
    with torch.device("meta"):
        return net()


@functools.cache
def images() -> torch.Tensor:
    return torch.rand(24, 3, 10, 10, generator=torch.Generator().manual_seed(0))


@functools.cache
def labels() -> torch.Tensor:
    return torch.arange(24) % 2


@functools.cache
def subnetwork() -> pp.results.Subnetwork:
    return pp.fit_subnetwork(
        net(), UNIT, images(), labels() == 0, "magnitude", keep=0.5, progress=False
    )


def masks() -> pp.Masks:
    return subnetwork().masks


def saved_masks() -> str:
    """A masks file in the current directory (each case runs in its own)."""
    masks().save("masks.pt")
    return "masks.pt"


@functools.cache
def top() -> pp.results.TopActivations:
    return pp.top_activating(net(), UNIT, images(), k=12, progress=False)


@functools.cache
def clustering() -> pp.results.Clustering:
    rng = np.random.default_rng(0)
    return pp.cluster(np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(8, 1, (20, 3))]))


@functools.cache
def study_result() -> pp.results.StudyResult:
    return pp.study(
        net(),
        UNIT,
        images(),
        k=12,
        methods=["magnitude"],
        keep=0.5,
        progress=False,
        min_cluster_size=2,
    )


@functools.cache
def scan_result() -> pp.results.Scan:
    return pp.scan(net(), "2", images(), k=12, progress=False, min_cluster_size=2)


@functools.cache
def evaluation_result() -> pp.results.Evaluation:
    return pp.evaluate(net(), UNIT, images(), labels(), {0: masks(), 1: masks()})


@functools.cache
def field() -> pp.ReceptiveField:
    return pp.ReceptiveField.of(net(), "2", 10)


def zoo_net() -> nn.Module:
    return zoo.load("concepts-merged")


def sparsifier() -> pp.ContinuousSparsifier:
    return pp.ContinuousSparsifier(net(), UNIT)


# ------------------------------------------------------------------------------ bad values


Bad = tuple[str, Any]  # (kind, value)


def bad(kind: str, *values: Any) -> list[Bad]:
    return [(kind, v) for v in values]


MODEL = [
    *bad("non-Module model", 3, "net", None),
    ("meta model", Fresh(meta_net)),
]
HALF = bad("half model", Fresh(lambda: net().half()), Fresh(lambda: net().bfloat16()))
FLOAT_MODEL = MODEL + HALF
IMAGES = [
    *bad("wrong type", "x", [[1.0, 2.0]]),
    ("empty", torch.empty(0, 3, 10, 10)),
    ("NaN", torch.full((4, 3, 10, 10), NAN)),
    ("wrong rank", torch.rand(3, 10, 10)),
    # 24 images, as images(): only their size or channels is wrong (with 4, a call that also
    # takes members/labels/k refused those instead, and the case tested nothing)
    ("too small", torch.rand(24, 3, 2, 2)),
    ("wrong channels", torch.rand(24, 1, 10, 10)),
]
POSITIVE = bad("out-of-range int", 0, -1) + bad("wrong type", 1.5, "2", True)
NON_NEGATIVE = bad("out-of-range int", -1) + bad("wrong type", 1.5, "2", True)
SEED = bad("bad seed", "x", 2**70, -1, True, 1.5)
FRACTION = bad("out-of-range number", 0.0, 1.5, -0.2) + bad("NaN", NAN) + bad("wrong type", "x")
NUMBER = bad("NaN", NAN) + bad("wrong type", "x", None)
UNIT_ARG = bad("wrong type", "2", ("2", 1), 1)
LAYER = bad("wrong type", 2, None) + bad("out-of-range value", "nope")
MASKS = bad("wrong object type", "x", {"0.weight": torch.ones(4, 3)}, Fresh(subnetwork))
PATH = bad("wrong type", 3, None)
SIZE = bad("out-of-range int", 0, (32,), (0, 4)) + bad("wrong type", "x", 1.5)
MAPPING = bad("wrong type", "x", 3, [1, 2])
CODES = bad("wrong type", "x") + bad("wrong rank", np.ones(12)) + bad("NaN", np.full((12, 2), NAN))
CODES += bad("empty", np.ones((0, 2)))
LABELS = bad("wrong type", "x") + bad("empty", torch.zeros(0, dtype=torch.long))
LABELS += bad("wrong rank", torch.zeros(24, 2, dtype=torch.long))
ACTIVATIONS = (
    bad("wrong type", "x") + bad("empty", torch.zeros(0)) + bad("NaN", torch.full((4,), NAN))
)
UNKNOWN_NAME = bad("out-of-range value", "nope", 3)
ZOO_MODEL_ARGS = {"model": MODEL, "name": UNKNOWN_NAME}
DICT = bad("wrong type", "x", 3, None) + bad("empty", {})
#: The path and overwrite flag of a figure (plot.*): a suffix matplotlib does not write too.
FIGURE = {
    "path": PATH + bad("out-of-range value", "figure.txt"),
    "overwrite": bad("wrong type", "yes", 1),
}


#: Arguments that are images; their messages may call them "images" (e.g. "images of shape
#: (1, 10, 10) cannot run through the model").
IMAGES_ARG = {"data": True, "images": True, "inputs": True, "batch": True, "sample": True}


@dataclass(frozen=True)
class Row:
    """One public callable: how to call it with valid arguments (``call(**overrides)``) and the
    bad values of each argument (``args``); ``names`` maps an argument to the name its message
    must contain when that differs (e.g. a config field)."""

    call: Callable[..., Any]
    args: dict[str, list[Bad]]
    names: dict[str, str] | None = None


def call(fn: Callable[..., Any], **defaults: Any) -> Callable[..., Any]:
    def run(**overrides: Any) -> Any:
        kwargs = {k: resolve(v) for k, v in {**defaults, **overrides}.items()}
        return fn(**kwargs)

    return run


def method(make: Callable[[], Any], name: str, **defaults: Any) -> Callable[..., Any]:
    return call(lambda **kw: getattr(make(), name)(**kw), **defaults)


M, Q = Fresh(net), dict(progress=False)
SCORERS = {
    "polyprune.FORCE": scoring.FORCE,
    "polyprune.SNIP": scoring.SNIP,
    "polyprune.ActGrad": scoring.ActGrad,
    "polyprune.Magnitude": scoring.Magnitude,
    "polyprune.Random": scoring.Random,
    "polyprune.scoring.Attribution": getattr(scoring, "Attribution", None),
}
SCORER_ARGS = {"keep": FRACTION, "scope": bad("out-of-range value", "x", 3)}
SCORER_ARGS["normalize"] = bad("out-of-range value", "x", 3)


def _scorer_rows() -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for name, cls in SCORERS.items():
        if cls is None:
            continue
        extra: dict[str, list[Bad]] = {}
        if cls is scoring.FORCE:
            extra = {"rounds": POSITIVE}
        if cls is scoring.Random:
            extra = {"seed": SEED}
        if cls is scoring.ActGrad:
            extra = {"chunk_bytes": POSITIVE}
        rows[name] = Row(call(cls), {**SCORER_ARGS, **extra})
    for name, cls in (
        ("polyprune.Scorer", scoring.SNIP),
        ("polyprune.FORCE", scoring.FORCE),
    ):
        rows[f"{name}.score"] = Row(
            method(
                functools.partial(cls, keep=0.5, progress=False),
                "score",
                model=M,
                inputs=images(),
                objective=UNIT,
            ),
            {
                "model": FLOAT_MODEL,
                "inputs": IMAGES,
                "objective": UNIT_ARG,
                "granularity": bad("out-of-range value", "x"),
                "keep": FRACTION,
            },
        )
    return rows


ROWS: dict[str, Row] = {
    **_scorer_rows(),
    "polyprune.Method.for_cluster": Row(
        method(lambda: scoring.Magnitude(keep=0.5), "for_cluster", seed=0, label=1),
        {"seed": SEED, "label": NON_NEGATIVE},
    ),
    "polyprune.Random.for_cluster": Row(
        method(lambda: scoring.Random(seed=1), "for_cluster", seed=0, label=1),
        {"seed": SEED, "label": NON_NEGATIVE},
    ),
    "polyprune.FORCE.schedule": Row(
        method(lambda: scoring.FORCE(keep=0.5), "schedule"), {"keep": FRACTION}
    ),
    "polyprune.Scorer": Row(call(scoring.Magnitude), SCORER_ARGS),
    "polyprune.Scorer.cut": Row(
        method(lambda: scoring.Magnitude(keep=0.5), "cut", scores={"0.weight": torch.rand(4, 3)}),
        {"scores": bad("wrong type", "x", [1.0]) + bad("empty", {}), "keep": FRACTION},
    ),
    "polyprune.Method": Row(call(pp.Method), {}),
    "polyprune.ContinuousSparsification": Row(
        call(pp.ContinuousSparsification), {"config": bad("wrong type", "x", 3)}
    ),
    "polyprune.ContinuousSparsification.with_config": Row(
        method(pp.ContinuousSparsification, "with_config", config=None),
        {"config": bad("wrong type", "x", 3)},
    ),
    "polyprune.methods.create": Row(
        call(pp.methods.create, name="snip"),
        {"name": UNKNOWN_NAME},
        names={"name": "method"},
    ),
    "polyprune.methods.method_class": Row(
        call(pp.methods.method_class, name="snip"),
        {"name": UNKNOWN_NAME},
        names={"name": "method"},
    ),
    "polyprune.methods.resolve_keep": Row(
        call(pp.methods.resolve_keep, keep=0.5, method=Fresh(scoring.SNIP)),
        {"keep": FRACTION, "method": bad("wrong type", "snip", 3)},
    ),
    "polyprune.sparsify.CSLoss": Row(call(pp.sparsify.CSLoss), {}),
    "polyprune.ablation.Ablation": Row(
        call(ablation.Ablation),
        {
            "tau": NUMBER[:2],
            "loss": bad("out-of-range value", "x"),
            "ablation": bad("out-of-range value", "x"),
            "max_batch": POSITIVE,
        },
    ),
    "polyprune.ablation.removal_effects": Row(
        call(
            ablation.removal_effects,
            model=M,
            unit=UNIT,
            images=images(),
            members=labels() == 0,
            masks=Fresh(masks),
        ),
        {
            "model": MODEL,
            "unit": UNIT_ARG,
            "images": IMAGES,
            "masks": MASKS,
            "batch_size": POSITIVE,
        },
    ),
    "polyprune.ablation.marginal_effects": Row(
        call(
            ablation.marginal_effects,
            model=M,
            unit=UNIT,
            images=images(),
            members=labels() == 0,
            masks=Fresh(masks),
        ),
        {
            "model": MODEL,
            "unit": UNIT_ARG,
            "images": IMAGES,
            "masks": MASKS,
            "batch_size": POSITIVE,
        },
    ),
    "polyprune.clustering.significance": Row(
        call(pp.clustering.significance, codes=np.random.default_rng(0).normal(size=(30, 3))),
        {"codes": CODES, "seed": SEED, "max_draws": POSITIVE},
    ),
    "polyprune.ActivationRecorder": Row(
        call(pp.ActivationRecorder, model=M, layers="2"),
        {
            "model": MODEL,
            "layers": LAYER + bad("empty", []),
            "reduce": bad("out-of-range value", "x", 3),
        },
    ),
    "polyprune.ActivationRecorder.run": Row(
        method(lambda: pp.ActivationRecorder(net(), "2"), "run", batch=images()), {"batch": IMAGES}
    ),
    "polyprune.CSConfig": Row(
        call(pp.CSConfig),
        {
            "epochs": POSITIVE,
            "batch_size": POSITIVE,
            "lam": NUMBER[:2],
            "lr": NUMBER[:2],
            "momentum": NUMBER[:2] + bad("out-of-range number", 1.0, -0.1),
            "gamma": FRACTION,
            "init": FRACTION,
            "milestones": bad("wrong type", "x", (1.5,)),
            "temperature": bad("wrong type", "x", (1,)),
            "loss": bad("out-of-range value", "x"),
            "calibrate": bad("wrong type", "yes"),
        },
    ),
    "polyprune.CSConfig.paper": Row(call(pp.CSConfig.paper), {"epochs": POSITIVE}),
    "polyprune.CSConfig.replace": Row(method(pp.CSConfig, "replace"), {"epochs": POSITIVE}),
    "polyprune.CSConfig.from_dict": Row(call(pp.CSConfig.from_dict), {"data": DICT[:3]}),
    "polyprune.ContinuousSparsifier": Row(
        call(pp.ContinuousSparsifier, model=M, up_to=UNIT),
        {
            "model": FLOAT_MODEL,
            "up_to": UNIT_ARG,
            "init": FRACTION,
            "temperature": NUMBER,
            "seed": SEED,
            "granularity": bad("out-of-range value", "x"),
            "modules": bad("wrong type", 3) + bad("out-of-range value", ["nope"]),
        },
    ),
    "polyprune.ContinuousSparsifier.num_elements": Row(
        method(sparsifier, "num_elements"), {"name": UNKNOWN_NAME}
    ),
    "polyprune.ContinuousSparsifier.penalty": Row(
        method(sparsifier, "penalty"), {"normalized": bad("wrong type", "yes")}
    ),
    "polyprune.ContinuousSparsifier.load_state_dict": Row(
        method(sparsifier, "load_state_dict", state={}),
        {"state": bad("wrong type", "x", 3) + bad("wrong object type", {"logits": "x"})},
    ),
    "polyprune.ExponentialTemperature": Row(
        call(pp.ExponentialTemperature, sparsifier=Fresh(sparsifier)),
        {
            "sparsifier": bad("wrong object type", "x", 3),
            "start": NUMBER,
            "end": NUMBER,
            "steps": POSITIVE,
        },
    ),
    "polyprune.ExponentialTemperature.value_at": Row(
        method(lambda: pp.ExponentialTemperature(sparsifier()), "value_at", step=0),
        {"step": NON_NEGATIVE},
    ),
    "polyprune.ExponentialTemperature.load_state_dict": Row(
        method(lambda: pp.ExponentialTemperature(sparsifier()), "load_state_dict", state={}),
        {"state": bad("wrong type", "x", 3)},
    ),
    "polyprune.Masks": Row(
        call(pp.Masks, masks={"0.weight": torch.ones(4, 3, dtype=torch.bool)}),
        {
            "masks": bad("wrong type", "x", 3)
            + bad("empty", {})
            + bad("wrong object type", {0: torch.ones(4, 3, dtype=torch.bool)}, {"0.weight": "x"}),
            "granularity": bad("out-of-range value", "x"),
        },
    ),
    "polyprune.Masks.from_scores": Row(
        call(
            pp.Masks.from_scores,
            scores={"0.weight": torch.rand(4, 3)},
            keep=0.5,
            granularity="kernel",
        ),
        {
            "scores": bad("wrong type", "x", [torch.rand(4, 3)], 3)
            + bad(
                "wrong object type",
                {"0.weight": np.ones((4, 3))},
                {"0.weight": [[1.0, 2.0]]},
                {0: torch.rand(4, 3)},
            )
            + bad("empty", {}, {"0.weight": torch.rand(0)})
            + bad("NaN", {"0.weight": torch.full((4, 3), NAN)}),
            "keep": FRACTION,
            "scope": bad("out-of-range value", "x"),
            "normalize": bad("out-of-range value", "x"),
        },
    ),
    "polyprune.Masks.applied": Row(method(masks, "applied", model=M), {"model": MODEL}),
    "polyprune.Masks.apply": Row(method(masks, "apply", model=M), {"model": MODEL}),
    "polyprune.Masks.remove": Row(method(masks, "remove", model=M), {"model": MODEL}),
    "polyprune.Masks.to_torch_prune": Row(
        method(masks, "to_torch_prune", model=M), {"model": MODEL}
    ),
    "polyprune.Masks.effective": Row(
        method(masks, "effective", model=M), {"model": MODEL, "unit": UNIT_ARG}
    ),
    "polyprune.Masks.iou": Row(
        method(masks, "iou", other=Fresh(masks)), {"other": MASKS + bad("wrong type", None)}
    ),
    "polyprune.Masks.save": Row(method(masks, "save"), {"path": PATH}),
    "polyprune.Masks.from_dict": Row(call(pp.Masks.from_dict), {"data": DICT}),
    # a saved file: without one, each bad model was refused for the missing path instead (the
    # row tested nothing); model=None is valid (no fit check)
    "polyprune.Masks.load": Row(
        call(pp.Masks.load, path=Fresh(saved_masks)),
        {"path": PATH, "model": [m for m in MODEL if m[1] is not None]},
    ),
    "polyprune.Objective": Row(
        call(pp.Objective, unit=UNIT), {"unit": UNIT_ARG, "kind": bad("out-of-range value", "x", 3)}
    ),
    "polyprune.Objective.value": Row(
        method(lambda: pp.Objective(UNIT), "value", model=M, inputs=images()),
        {"model": MODEL, "inputs": IMAGES},
    ),
    "polyprune.ReceptiveField.of": Row(
        call(pp.ReceptiveField.of, model=M, layer="2", input_size=10),
        {"model": MODEL, "layer": LAYER, "input_size": SIZE, "in_channels": POSITIVE},
    ),
    "polyprune.ReceptiveField.measure": Row(
        call(pp.ReceptiveField.measure, model=M, layer="2", input_size=10),
        {
            "model": FLOAT_MODEL,
            "layer": LAYER,
            "input_size": SIZE,
            "in_channels": POSITIVE,
            "trials": POSITIVE,
            "seed": SEED,
        },
    ),
    "polyprune.ReceptiveField.probe": Row(
        call(pp.ReceptiveField.probe, model=M, layer="2", input_size=10),
        {
            "model": FLOAT_MODEL,
            "layer": LAYER,
            "input_size": SIZE,
            "in_channels": POSITIVE,
            "trials": POSITIVE,
            "seed": SEED,
            "unit": bad("out-of-range int", (99, 99), (-1, 0)),
        },
    ),
    "polyprune.ReceptiveField.from_dict": Row(call(pp.ReceptiveField.from_dict), {"data": DICT}),
    "polyprune.ReceptiveField.box": Row(
        method(field, "box"), {"unit": bad("out-of-range int", (99, 99), (-1, 0), "x")}
    ),
    "polyprune.ReceptiveField.covers_input": Row(
        method(field, "covers_input"), {"unit": bad("out-of-range int", (99, 99), "x")}
    ),
    "polyprune.ReceptiveField.crop_box": Row(
        method(field, "crop_box"), {"unit": bad("out-of-range int", (99, 99), "x")}
    ),
    "polyprune.ReceptiveField.crop": Row(
        method(field, "crop", images=images()),
        {
            "images": IMAGES[:5] + bad("wrong size", torch.rand(2, 3, 12, 12)),
            "unit": bad("out-of-range int", (99, 99), "x"),
            "mode": bad("out-of-range value", "x"),
        },
    ),
    "polyprune.Unit": Row(
        call(pp.Unit, layer="2", channel=1),
        {
            "layer": bad("wrong type", 2, None) + bad("empty", ""),
            "channel": NON_NEGATIVE,
            "position": bad("out-of-range int", (-1, 0), (1,), "x"),
        },
        names={"layer": "layer", "channel": "channel", "position": "position"},
    ),
    "polyprune.Unit.from_dict": Row(call(pp.Unit.from_dict), {"data": DICT}),
    "polyprune.Unit.validate": Row(
        method(lambda: UNIT, "validate", model=M),
        {"model": MODEL, "sample": IMAGES[1:] + bad("wrong type", "x")},
    ),
    "polyprune.Unit.activations": Row(
        method(lambda: UNIT, "activations", model=M, images=images()),
        {"model": MODEL, "images": IMAGES, "masks": MASKS, "batch_size": POSITIVE},
    ),
    "polyprune.cluster": Row(
        call(pp.cluster, codes=np.random.default_rng(0).normal(size=(30, 3))),
        {
            "codes": CODES,
            "min_cluster_size": POSITIVE + bad("out-of-range int", 31),
            "min_samples": POSITIVE,
            "n_components": POSITIVE,
            "cluster_selection_method": bad("out-of-range value", "x"),
            "standardize": bad("wrong type", "yes"),
        },
    ),
    "polyprune.evaluate": Row(
        call(
            pp.evaluate,
            model=M,
            unit=UNIT,
            images=images(),
            labels=labels(),
            subnetworks=Fresh(lambda: {0: masks(), 1: masks()}),
        ),
        {
            "model": MODEL,
            "unit": UNIT_ARG,
            "images": IMAGES,
            "labels": LABELS,
            "subnetworks": MAPPING
            + bad("wrong object type", Fresh(lambda: [subnetwork()]), {0: "x"})
            + bad("empty", {}),
            "batch_size": POSITIVE,
            "negatives": bad("out-of-range value", "x"),
            "held_out": bad("wrong type", "x", (1, 2, 3)),
        },
    ),
    "polyprune.fit_subnetwork": Row(
        call(
            pp.fit_subnetwork,
            model=M,
            unit=UNIT,
            images=images(),
            members=labels() == 0,
            method="magnitude",
            keep=0.5,
            **Q,
        ),
        {
            "model": FLOAT_MODEL,
            "unit": UNIT_ARG,
            "images": IMAGES,
            "members": bad("wrong type", "x") + bad("empty", torch.zeros(0, dtype=torch.bool)),
            "method": UNKNOWN_NAME,
            "keep": FRACTION,
            "granularity": bad("out-of-range value", "x"),
            "config": bad("wrong type", "x"),
            "batch_size": POSITIVE,
            "seed": SEED,
        },
    ),
    "polyprune.scan": Row(
        call(pp.scan, model=M, layers="2", data=images(), k=12, min_cluster_size=2, **Q),
        {
            "model": MODEL,
            "layers": LAYER + bad("empty", []),
            "data": IMAGES,
            "k": POSITIVE + bad("out-of-range int", 25),
            "batch_size": POSITIVE,
            "workers": NON_NEGATIVE,
            "min_cluster_size": POSITIVE,
            "cluster_options": MAPPING
            + bad("out-of-range value", {"min_samples": 0}, {"x": 1}, {"n_components": 0}),
        },
    ),
    "polyprune.study": Row(
        call(
            pp.study,
            model=M,
            unit=UNIT,
            data=images(),
            k=12,
            methods=["magnitude"],
            keep=0.5,
            min_cluster_size=2,
            **Q,
        ),
        {
            "model": FLOAT_MODEL,
            "unit": UNIT_ARG,
            "data": IMAGES,
            "k": POSITIVE + bad("out-of-range int", 25),
            "methods": bad("wrong type", "snip", 3),
            "keep": FRACTION,
            "held_out": FRACTION,
            "batch_size": POSITIVE,
            "workers": NON_NEGATIVE,
            "min_cluster_size": POSITIVE,
            "seed": SEED,
            "cluster_options": MAPPING + bad("out-of-range value", {"min_samples": 0}, {"x": 1}),
            "cs": bad("wrong type", "x"),
            "top": bad("wrong object type", "x", Fresh(clustering)),
            "visualize_options": MAPPING,
        },
    ),
    "polyprune.top_activating": Row(
        call(pp.top_activating, model=M, unit=UNIT, data=images(), k=12, **Q),
        {
            "model": MODEL,
            "unit": UNIT_ARG,
            "data": IMAGES,
            "k": POSITIVE,
            "batch_size": POSITIVE,
            "workers": NON_NEGATIVE,
            "crop": bad("wrong type", "x", 3),
        },
    ),
    "polyprune.visualize": Row(
        call(pp.visualize, model=M, unit=UNIT, size=10, steps=2, **Q),
        {
            "model": FLOAT_MODEL,
            "unit": UNIT_ARG,
            "masks": MASKS,
            "size": SIZE,
            "steps": POSITIVE,
            "lr": NUMBER + bad("out-of-range number", 0.0, -1.0),
            "batch": POSITIVE,
            "seed": SEED,
            "normalize": bad("wrong type", "x", 3),
        },
    ),
    "polyprune.targets.as_objective": Row(call(pp.targets.as_objective), {"objective": UNIT_ARG}),
    "polyprune.recording.TopActivations.to_dict": Row(
        method(top, "to_dict"), {"inputs": bad("wrong type", "yes")}
    ),
    "polyprune.recording.TopActivations.from_dict": Row(
        call(pp.results.TopActivations.from_dict), {"data": DICT}
    ),
    "polyprune.clustering.Clustering.from_dict": Row(
        call(pp.results.Clustering.from_dict), {"data": DICT}
    ),
    "polyprune.clustering.Clustering.majority": Row(
        method(clustering, "majority"), {"truth": bad("wrong type", 3) + bad("empty", [])}
    ),
    "polyprune.clustering.Clustering.members": Row(
        method(clustering, "members"),
        {"label": bad("out-of-range int", 99, -5) + bad("wrong type", "x")},
    ),
    "polyprune.masks.Scores": Row(
        call(Scores, scores={"0.weight": torch.rand(4, 3)}, granularity="kernel"),
        {
            "scores": bad("wrong type", "x") + bad("empty", {}),
            "granularity": bad("out-of-range value", "x"),
        },
    ),
    "polyprune.scoring.create": Row(call(scoring.create, name="snip"), {"name": UNKNOWN_NAME}),
    "polyprune.scoring.reduce_to": Row(
        call(scoring.reduce_to, per_weight=torch.rand(4, 3, 3, 3), granularity="kernel"),
        {
            "per_weight": bad("wrong type", "x") + bad("wrong rank", torch.rand(4)),
            "granularity": bad("out-of-range value", "x"),
        },
    ),
    "polyprune.subnetwork.Subnetwork.activations": Row(
        method(subnetwork, "activations", model=M, images=images()),
        {"model": MODEL, "images": IMAGES, "batch_size": POSITIVE},
    ),
    "polyprune.subnetwork.Subnetwork.from_dict": Row(
        call(pp.results.Subnetwork.from_dict), {"data": DICT}
    ),
    "polyprune.subnetwork.Subnetwork.save": Row(method(subnetwork, "save"), {"path": PATH}),
    "polyprune.subnetwork.Subnetwork.load": Row(call(pp.results.Subnetwork.load), {"path": PATH}),
    "polyprune.subnetwork.resolve_method": Row(
        call(pp.subnetwork.resolve_method, spec="snip"),
        {"spec": UNKNOWN_NAME, "keep": FRACTION},
    ),
    "polyprune.evaluation.Evaluation.from_dict": Row(
        call(pp.results.Evaluation.from_dict), {"data": DICT}
    ),
    "polyprune.evaluation.circuit_scores": Row(
        call(evaluation.circuit_scores, masks=Fresh(masks), truth=Fresh(masks)),
        {"masks": MASKS, "truth": MASKS},
    ),
    "polyprune.evaluation.faithfulness": Row(
        call(evaluation.faithfulness, subnetwork=torch.rand(5), original=torch.rand(5)),
        {"subnetwork": ACTIVATIONS, "original": ACTIVATIONS + bad("wrong size", torch.rand(4))},
    ),
    "polyprune.evaluation.held_out_split": Row(
        call(evaluation.held_out_split, labels=labels()),
        {"labels": LABELS, "fraction": FRACTION, "seed": SEED},
    ),
    "polyprune.evaluation.overlap": Row(
        call(evaluation.overlap, a=Fresh(masks), b=Fresh(masks)), {"a": MASKS, "b": MASKS}
    ),
    "polyprune.evaluation.separation": Row(
        call(evaluation.separation, members=torch.rand(5), others=torch.rand(5)),
        {"members": ACTIVATIONS, "others": ACTIVATIONS},
    ),
    "polyprune.plot.crops": Row(
        call(plot.crops, images=images(), labels=labels(), path="unused.png"),
        {"images": IMAGES[:4], "labels": LABELS, "per_cluster": POSITIVE, **FIGURE},
    ),
    "polyprune.plot.histograms": Row(
        call(plot.histograms, panels={"a": torch.rand(24)}, labels=labels(), path="unused.png"),
        {"panels": MAPPING + bad("empty", {}), "labels": LABELS, "bins": POSITIVE, **FIGURE},
    ),
    "polyprune.plot.images": Row(
        call(plot.images, images={"a": torch.rand(1, 3, 8, 8)}, path="unused.png"),
        {"images": MAPPING + bad("empty", {}), **FIGURE},
    ),
    "polyprune.plot.kept_per_layer": Row(
        call(plot.kept_per_layer, masks=Fresh(lambda: {"a": masks()}), path="unused.png"),
        {"masks": MAPPING + bad("empty", {}) + bad("wrong object type", {"a": "x"}), **FIGURE},
    ),
    "polyprune.study.StudyResult.save": Row(
        method(study_result, "save", directory="out"),
        {"directory": PATH, "crops_per_cluster": NON_NEGATIVE},
    ),
    "polyprune.study.StudyResult.load": Row(call(pp.results.StudyResult.load), {"directory": PATH}),
    "polyprune.scan.Scan.ranked": Row(
        method(scan_result, "ranked"), {"polysemantic": bad("wrong type", "yes")}
    ),
    "polyprune.scan.Scan.summary": Row(method(scan_result, "summary"), {"n": NON_NEGATIVE}),
    "polyprune.scan.Scan.clustering": Row(
        method(scan_result, "clustering", unit=0),
        {"unit": bad("out-of-range int", 99, -1) + bad("wrong type", "x", 1.5)},
    ),
    "polyprune.scan.Scan.top": Row(
        method(scan_result, "top", unit=0),
        {"unit": bad("out-of-range int", 99, -1) + bad("wrong type", "x", 1.5)},
    ),
    "polyprune.scan.Scan.save": Row(
        method(scan_result, "save", directory="out"), {"directory": PATH, "crops": NON_NEGATIVE}
    ),
    "polyprune.scan.Scan.load": Row(call(pp.results.Scan.load), {"directory": PATH}),
    "polyprune.zoo.ConceptDataset": Row(
        call(zoo.ConceptDataset, n=4, size=16),
        {
            "n": POSITIVE,
            "size": POSITIVE,
            "seed": SEED,
            "cache_blocks": POSITIVE,
            "concepts": bad("out-of-range value", "nope", []),
            "transform": bad("wrong type", 3),
        },
    ),
    "polyprune.zoo.ModelCard.to_class": Row(
        method(lambda: zoo.model_card("concepts-merged"), "to_class", labels=torch.arange(3)),
        {"labels": LABELS[:1] + bad("out-of-range int", torch.tensor([99]))},
    ),
    "polyprune.zoo.PlantedNetwork": Row(
        call(zoo.PlantedNetwork, n_blocks=2, n_out=2),
        {"n_blocks": POSITIVE, "n_out": POSITIVE, "widths": bad("wrong type", "x", (0, 8))},
    ),
    "polyprune.zoo.ZooCNN": Row(
        call(zoo.ZooCNN, in_channels=3, n_classes=2, widths=(4, 4, 4)),
        {
            "in_channels": POSITIVE,
            "n_classes": POSITIVE,
            "widths": bad("wrong type", "x", (0, 4, 4)),
        },
    ),
    "polyprune.zoo.accuracy": Row(
        call(zoo.accuracy, model=Fresh(zoo_net), name="concepts-merged"), ZOO_MODEL_ARGS
    ),
    "polyprune.zoo.architecture": Row(call(zoo.architecture), {"name": UNKNOWN_NAME}),
    "polyprune.zoo.concept_images": Row(
        call(zoo.concept_images, n=4, size=16),
        {
            "n": POSITIVE,
            "size": POSITIVE,
            "seed": SEED,
            "concepts": bad("out-of-range value", "nope", []),
        },
    ),
    "polyprune.zoo.demo_data": Row(call(zoo.demo_data), {"name": UNKNOWN_NAME}),
    "polyprune.zoo.digits": Row(call(zoo.digits), {"split": UNKNOWN_NAME, "size": POSITIVE}),
    "polyprune.zoo.eval_data": Row(
        call(zoo.eval_data, name="concepts-merged"),
        {"name": UNKNOWN_NAME, "seed": SEED},
    ),
    "polyprune.zoo.load": Row(call(zoo.load), {"name": UNKNOWN_NAME}),
    "polyprune.zoo.model_card": Row(call(zoo.model_card), {"name": UNKNOWN_NAME}),
    "polyprune.zoo.planted_network": Row(
        call(zoo.planted_network),
        {
            "concepts": bad("out-of-range value", "nope", ["rings"]),
            "distractors": NON_NEGATIVE,
            "seed": SEED,
            "cross": NUMBER[:2] + bad("out-of-range number", -1.0),  # None: the default
            "identifiable": bad("wrong type", "yes", 1),
        },
    ),
    "polyprune.zoo.recommend_unit": Row(
        call(zoo.recommend_unit, model=Fresh(zoo_net), name="concepts-merged"), ZOO_MODEL_ARGS
    ),
    "polyprune.zoo.train": Row(
        call(zoo.train, name="concepts-merged", steps=1),
        {"name": UNKNOWN_NAME, "steps": POSITIVE, "seed": SEED},
    ),
    "polyprune.zoo.train_planted": Row(
        call(zoo.train_planted, steps=1), {"steps": POSITIVE, "seed": SEED}
    ),
    "polyprune.zoo.write_image_folder": Row(
        call(zoo.write_image_folder, root=None, n_per_concept=1, size=16),
        {
            "root": PATH,
            "n_per_concept": POSITIVE,
            "size": POSITIVE,
            "seed": SEED,
            "image_format": bad("out-of-range value", "gif"),
        },
    ),
    "polyprune.cli.main": Row(call(cli.main), {"argv": bad("wrong type", "study", 3)}),
}

#: Public callables whose arguments are not the user's to get wrong, with the reason.
EXEMPT = {
    "polyprune.methods.FitJob": "built by polyprune for Method.fit (its methods too)",
    "polyprune.sparsify.LossContext": "built by polyprune for a CSLoss",
    "polyprune.scoring.ScoringJob": "built by polyprune for BaseScorer.compute (its methods too)",
    "polyprune.scoring.mask_gradients": "called from a scorer's compute with its ScoringJob",
}
#: Methods exempt by name, with the reason.
EXEMPT_METHODS = {
    "compute": "a scorer's extension point, called by polyprune with a ScoringJob",
    "fit": "a method's extension point, called by polyprune with a FitJob",
    "forward": "an nn.Module's forward: torch's own input errors, as for any module",
}
#: Result types: built by polyprune (their from_dict / load are fuzzed in test_load_fuzz.py).
RESULT_TYPES = (
    pp.receptive_field.Crop,
    pp.results.TopActivations,
    pp.results.Clustering,
    pp.results.Subnetwork,
    evaluation.CircuitScores,
    evaluation.ClusterEvaluation,
    pp.results.Evaluation,
    evaluation.Overlap,
    evaluation.Separation,
    pp.results.StudyResult,
    pp.results.Scan,
    zoo.DemoCase,
    zoo.HandBuilt,
    zoo.ModelCard,
    pp.ReceptiveField,
)


def public_callables() -> dict[str, Any]:
    """``{name: callable}``: every public function, class and public method of docs/api.md,
    each object once under its first name on the page (a method under the public class that
    defines it), without methods that take no argument besides ``self``."""
    page = load_script("docs/_tools/api_page.py")
    objects: dict[int, tuple[str, Any]] = {}
    for module, names in page.public_names().items():
        mod = __import__(module, fromlist=["_"])
        for name in names:
            obj = getattr(mod, name)
            if not inspect.ismodule(obj) and callable(obj) and id(obj) not in objects:
                objects[id(obj)] = (f"{module}.{name}", obj)
    found: dict[str, Any] = {}
    methods: set[int] = set()
    for name, obj in objects.values():
        if name in EXEMPT:
            continue
        if not inspect.isclass(obj):
            if _takes_arguments(obj):
                found[name] = obj
            continue
        if issubclass(obj, BaseException):
            continue
        if obj not in RESULT_TYPES:
            found[name] = obj
        for klass in obj.__mro__:
            if not klass.__module__.startswith("polyprune"):
                continue
            owner = objects.get(id(klass), (name, None))[0]
            for attr, raw in vars(klass).items():
                is_method = inspect.isfunction(raw) or isinstance(raw, classmethod | staticmethod)
                if attr.startswith("_") or not is_method or id(raw) in methods:
                    continue
                methods.add(id(raw))
                fn = getattr(obj, attr)
                if attr not in EXEMPT_METHODS and _takes_arguments(fn):
                    found[f"{owner}.{attr}"] = fn
    return found


def _takes_arguments(fn: Any) -> bool:
    return any(p.name not in ("self", "cls") for p in inspect.signature(fn).parameters.values())


def test_every_public_callable_has_a_row() -> None:
    public = public_callables()
    missing = sorted(set(public) - set(ROWS))
    assert not missing, f"add rows to tests/test_contract.py for {missing}"
    stale = sorted(set(ROWS) - set(public))
    assert not stale, f"rows for names that are not public (any more): {stale}"


def _cases() -> Iterator[Any]:
    for name, row in ROWS.items():
        for arg, values in row.args.items():
            for i, (kind, value) in enumerate(values):
                case = f"{kind}:{name}:{arg}:{i}"
                marks = [pytest.mark.xfail(strict=True, reason="not fixed yet")] * (
                    case in KNOWN_RAW
                )
                yield pytest.param(name, arg, value, id=case, marks=marks)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(("name", "arg", "value"), list(_cases()))
def test_bad_argument_is_named(
    name: str, arg: str, value: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    row = ROWS[name]
    with pytest.raises((TypeError, ValueError)) as info:
        result = row.call(**{arg: resolve(value)})
        if hasattr(result, "__enter__"):  # a context manager checks on entry
            with result:
                pass
    named = (row.names or {}).get(arg, arg)
    message = str(info.value)
    if IMAGES_ARG.get(arg) and "images" in message:  # a batch of images may be called so
        return
    assert named in message, f"{type(info.value).__name__}: {message}"
