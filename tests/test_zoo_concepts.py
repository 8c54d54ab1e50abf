"""Procedural concept images: determinism, layout, validation, dataset and ImageFolder output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from polyprune import zoo
from polyprune.zoo import _render


def test_concepts_are_at_least_six_distinct_names() -> None:
    assert len(zoo.CONCEPTS) >= 6
    assert len(set(zoo.CONCEPTS)) == len(zoo.CONCEPTS)


def test_shapes_dtypes_and_range() -> None:
    images, labels = zoo.concept_images(300, size=24, seed=3)
    assert images.shape == (300, 3, 24, 24) and images.dtype == torch.float32
    assert labels.shape == (300,) and labels.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert set(labels.tolist()) == set(range(len(zoo.CONCEPTS)))


def test_deterministic_and_seed_dependent() -> None:
    a, la = zoo.concept_images(40, size=32, seed=5)
    b, lb = zoo.concept_images(40, size=32, seed=5)
    c, _ = zoo.concept_images(40, size=32, seed=6)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


def test_image_i_does_not_depend_on_n() -> None:
    short, ls = zoo.concept_images(10, size=32, seed=1)
    long, ll = zoo.concept_images(600, size=32, seed=1)
    assert torch.equal(short, long[:10]) and torch.equal(ls, ll[:10])


def test_labels_balanced_per_block_and_index_the_given_concepts() -> None:
    names = ("rings", "hstripes", "dots")
    _, labels = zoo.concept_images(2 * _render.BLOCK, concepts=names, size=16)
    for block in labels.view(2, _render.BLOCK):
        counts = block.bincount(minlength=len(names))
        assert int(counts.max() - counts.min()) <= 1
    # same seed, same block: a single concept renders the same random draws as label 0
    only, lo = zoo.concept_images(5, concepts="rings", size=16)
    assert lo.tolist() == [0] * 5 and only.shape == (5, 3, 16, 16)


def test_a_concept_is_a_family_not_one_picture() -> None:
    images, _ = zoo.concept_images(70, concepts=("hstripes",), size=32)
    flat = images.flatten(1)
    distances = torch.cdist(flat, flat)
    off_diagonal = distances[~torch.eye(70, dtype=torch.bool)]
    assert float(off_diagonal.min()) > 1.0  # no two images alike


def _gradient_energy(images: torch.Tensor) -> tuple[float, float]:
    size = images.shape[-1]
    centre = images[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4]
    grey = torch.nn.functional.avg_pool2d(centre.mean(1, keepdim=True), 2)[:, 0]  # less noise
    dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs().mean()
    dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean()
    return float(dy), float(dx)


def test_stripe_orientation_shows_in_the_pixels() -> None:
    h, _ = zoo.concept_images(64, concepts="hstripes", size=48)
    v, _ = zoo.concept_images(64, concepts="vstripes", size=48)
    hy, hx = _gradient_energy(h)
    vy, vx = _gradient_energy(v)
    assert hy > 2 * hx  # horizontal stripes vary along y
    assert vx > 2 * vy


def test_window_always_covers_the_centre_disc() -> None:
    size = 64
    params = _render.draw_params(5000, size, torch.Generator().manual_seed(0))
    offset = torch.hypot(params.cx - size / 2, params.cy - size / 2)
    assert float((params.radius - offset).min()) >= _render.COVERED_RADIUS * size
    assert _render.COVERED_RADIUS > 0.12


def test_colours_contrast_per_channel() -> None:
    params = _render.draw_params(5000, 32, torch.Generator().manual_seed(1))
    gap = (params.fg - params.bg).abs()
    assert float(gap.min()) >= 0.35 - 1e-6 and float(gap.max()) <= 0.65 + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 4, "concepts": ("rings", "zebras")}, r"unknown concept.*'zebras'.*hstripes"),
        ({"n": 4, "concepts": ()}, "at least one concept"),
        ({"n": 4, "concepts": ("rings", "rings")}, "must not repeat"),
        ({"n": 0}, "n must be an int ≥ 1"),
        ({"n": -3}, "n must be an int ≥ 1"),
        ({"n": 2.5}, "n must be an int ≥ 1"),
        ({"n": 4, "size": 8}, "size must be an int ≥ 16"),
        ({"n": 4, "seed": -1}, r"seed must be an int in \[0, "),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zoo.concept_images(**kwargs)


def test_dataset_matches_concept_images_and_exposes_targets() -> None:
    names = ("checker", "blobs")
    images, labels = zoo.concept_images(300, concepts=names, size=20, seed=9)
    ds = zoo.ConceptDataset(300, concepts=names, size=20, seed=9)
    assert len(ds) == 300 and ds.concepts == names
    assert ds.targets == labels.tolist()
    for i in (0, 17, 255, 256, 299, -1):
        image, label = ds[i]
        assert torch.equal(image, images[i]) and label == int(labels[i])
    with pytest.raises(IndexError):
        ds[300]


def test_dataset_transform_and_loader() -> None:
    ds = zoo.ConceptDataset(12, size=16, transform=lambda x: x[:1])
    assert ds[0][0].shape == (1, 16, 16)
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=12)))
    assert batch.shape == (12, 1, 16, 16) and labels.tolist() == ds.targets
    with pytest.raises(ValueError, match="transform must be callable"):
        zoo.ConceptDataset(4, transform=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown concept"):
        zoo.ConceptDataset(4, concepts=("stripes",))


def test_write_image_folder_round_trips_through_image_folder(tmp_path: Path) -> None:
    names = ("vstripes", "dots")
    root = zoo.write_image_folder(tmp_path / "data", 3, concepts=names, size=20, seed=2)
    folder = ImageFolder(str(root))
    assert folder.classes == sorted(names)
    assert len(folder) == 6 and sorted(folder.targets) == [0, 0, 0, 1, 1, 1]
    png = Image.open(root / "dots" / "00000.png")
    assert png.size == (20, 20) and png.mode == "RGB"
    # a concept's images do not depend on which other concepts are written
    alone = zoo.write_image_folder(tmp_path / "alone", 3, concepts="dots", size=20, seed=2)
    for i in range(3):
        a = (root / "dots" / f"{i:05d}.png").read_bytes()
        assert a == (alone / "dots" / f"{i:05d}.png").read_bytes()


def test_write_image_folder_refuses_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zoo.write_image_folder(tmp_path, 1, concepts="rings", size=16)
    zoo.write_image_folder(tmp_path, 1, concepts="rings", size=16, overwrite=True)
    assert (tmp_path / "rings" / "00000.png").exists()
    with pytest.raises(ValueError, match="n_per_concept must be an int ≥ 1"):
        zoo.write_image_folder(tmp_path / "new", 0)
