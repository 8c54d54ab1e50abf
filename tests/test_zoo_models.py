"""Shipped trained models: safe to load, small, accurate and polysemantic as their cards say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import layer_output
from sklearn.datasets import load_digits
from torch import Tensor, nn

from polyprune import ReceptiveField, zoo

NAMES = ("concepts-merged", "digits-merged")


#: a shipped model: its name, the model, its evaluation images and labels
Shipped = tuple[str, nn.Module, Tensor, Tensor]


@pytest.fixture(scope="module", params=NAMES)
def shipped(request: pytest.FixtureRequest) -> Shipped:
    name: str = request.param
    images, labels = zoo.eval_data(name)
    return name, zoo.load(name), images, labels


def test_available_and_unknown_names() -> None:
    assert zoo.available() == NAMES
    for bad in ("alexnet", "", None):
        with pytest.raises(ValueError, match=r"unknown zoo model.*concepts-merged.*digits-merged"):
            zoo.load(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown zoo model"):
            zoo.model_card(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_small_plain_state_dicts(name: str) -> None:
    card = zoo.model_card(name)
    assert card.weights_path.stat().st_size < 1_000_000
    state = torch.load(card.weights_path, weights_only=True)
    assert all(isinstance(v, Tensor) for v in state.values())
    model = zoo.architecture(name)
    assert set(state) == set(model.state_dict())  # loads strictly into the coded architecture
    kinds = {type(m) for m in model.features}
    assert kinds == {nn.Conv2d, nn.ReLU, nn.MaxPool2d}


@pytest.mark.parametrize("name", NAMES)
def test_class_map_unit_is_the_logit_and_sees_the_whole_image(name: str) -> None:
    model = zoo.load(name)
    size = zoo.model_card(name).input_shape[1:]
    rf = ReceptiveField.of(model, "features.9", input_size=size)
    assert rf.output_size == (1, 1) and rf.size == (46, 46) and rf.size[0] >= size[0]
    assert ReceptiveField.of(model, "features.6", input_size=size).size == (18, 18)
    images = zoo.eval_data(name)[0][:4]
    with torch.no_grad():
        torch.testing.assert_close(model.features(images).flatten(1), model(images))


def test_model_is_eval_mode_with_the_card_shapes(shipped: Shipped) -> None:
    name, model, images, labels = shipped
    card = zoo.model_card(name)
    assert not model.training
    assert tuple(images.shape[1:]) == card.input_shape and len(images) == card.eval_size
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert labels.max() < len(card.concepts) and len(card.label_map) == len(card.concepts)
    with torch.no_grad():
        assert model(images[:3]).shape == (3, len(card.classes))
    assert card.classes[card.merged_class] == "|".join(card.merged)
    merged_ids = [card.concepts.index(c) for c in card.merged]
    assert card.to_class(torch.tensor(merged_ids)).tolist() == [card.merged_class] * 2
    # every other class holds exactly one concept
    assert sorted(card.label_map).count(card.merged_class) == 2
    assert len(set(card.label_map)) == len(card.classes)


def test_stated_held_out_accuracy(shipped: Shipped) -> None:
    name, model, images, labels = shipped
    card = zoo.model_card(name)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    accuracy = float((predicted == card.to_class(labels)).float().mean())
    assert accuracy == pytest.approx(card.accuracy, abs=0.005)
    assert accuracy > 0.9
    merged = torch.isin(labels, torch.tensor([card.concepts.index(c) for c in card.merged]))
    # the merged class is learned for both of its concepts
    for concept in card.merged:
        of = labels == card.concepts.index(concept)
        assert float((predicted[of] == card.merged_class).float().mean()) > 0.8, concept
    assert bool(merged.any())


def test_recommended_unit_is_polysemantic_as_stated(shipped: Shipped) -> None:
    name, model, images, labels = shipped
    card = zoo.model_card(name)
    layer, channel = card.unit
    assert layer.startswith("features.") and isinstance(model.get_submodule(layer), nn.Conv2d)
    out = layer_output(model, layer, images)[:, channel]
    centre = out[:, (out.shape[1] - 1) // 2, (out.shape[2] - 1) // 2]
    top = centre.topk(card.unit_top_k).indices
    fractions = tuple(
        float((labels[top] == card.concepts.index(c)).float().mean()) for c in card.merged
    )
    assert fractions == pytest.approx(card.unit_split, abs=0.021)
    assert min(fractions) >= 0.2 and sum(fractions) >= 0.8


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    test, test_labels = zoo.digits("test")
    train, _ = zoo.digits("train")
    everything, all_labels = zoo.digits("all")
    assert (len(test), len(train), len(everything)) == (359, 1438, 1797)
    per_digit = test_labels.bincount()
    assert int(per_digit.min()) == 35 and int(per_digit.max()) == 37
    raw = load_digits()
    assert np.array_equal(all_labels.numpy(), raw.target)
    counts = np.bincount(raw.target)
    assert test_labels.bincount().tolist() == [round(0.2 * c) for c in counts]
    # disjoint and complete: every image lands in exactly one split
    small = torch.cat([zoo.digits("test", size=8)[0], zoo.digits("train", size=8)[0]])
    ref = torch.from_numpy(raw.images / 16.0).float().unsqueeze(1)
    assert sorted(map(bytes, small.flatten(1).numpy())) == sorted(
        map(bytes, ref.flatten(1).numpy())
    )
    assert test.shape[1:] == (1, 32, 32) and train.dtype == torch.float32
    assert torch.equal(zoo.digits("test")[0], test)
    with pytest.raises(ValueError, match="split must be one of"):
        zoo.digits("validation")
    with pytest.raises(ValueError, match="size must be an int ≥ 8"):
        zoo.digits("test", size=4)


def test_to_class_refuses_labels_outside_the_concepts() -> None:
    card = zoo.model_card("concepts-merged")
    for bad in (-1, len(card.concepts)):  # -1 used to wrap around to the last concept's class
        with pytest.raises(
            ValueError, match=rf"labels must be concept labels in \[0, 6\].*got {bad}"
        ):
            card.to_class(torch.tensor([0, bad]))
    with pytest.raises(TypeError, match="labels must be int concept labels"):
        card.to_class(torch.tensor([0.0]))
