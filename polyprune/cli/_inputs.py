"""Private (cli): what a command reads and writes, checked before any work — the model and its
weights, the image folder, the output directory, the user's plugins."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from .._files import check_result_directory
from ._errors import BadImage, CLIError, describe, first_line
from ._timm import build_timm, check_timm, timm_input_size
from ._weights import Pretrained, build_torchvision, check_weights_file, load_weights, pretrained

__all__ = [
    "ImageFiles",
    "check_model",
    "image_data",
    "image_transform",
    "import_plugins",
    "load_model",
    "open_images",
    "output_directory",
    "read_image",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


# ----------------------------------------------------------------------------------- the model


def check_model(spec: str, weights: str | None) -> tuple[str, str, Path | Pretrained | None]:
    """``(source, name, weights)`` of ``--model`` (``torchvision:NAME``, ``timm:NAME`` or
    ``zoo:NAME``, the name known) and ``--weights``, only with a torchvision or timm model: a
    file, or (torchvision) its pretrained weights found in the torch hub cache
    (:func:`pretrained`); nothing is built."""
    source, _, name = spec.partition(":")
    if source not in ("torchvision", "timm", "zoo") or not name:
        raise CLIError(f"--model must be torchvision:NAME, timm:NAME or zoo:NAME, got {spec!r}")
    if source == "timm":
        check_timm(name)
        return source, name, None if weights is None else check_weights_file(weights)
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            valid = ", ".join(sorted(torchvision.models.list_models(torchvision.models)))
            raise CLIError(f"unknown torchvision model {name!r}; valid: {valid}")
    else:
        if weights is not None:
            raise CLIError("--weights is for torchvision models; zoo models ship their weights")
        if name != "planted":
            from .. import zoo

            try:
                zoo.model_card(name)
            except ValueError as exc:
                raise CLIError(first_line(exc)) from exc
    if weights is None:
        return source, name, None
    if not os.path.exists(weights):
        found = pretrained(name, weights)
        if found is not None:
            return source, name, found
    return source, name, check_weights_file(weights)


def load_model(spec: str, weights: str | None, seed: int = 0) -> tuple[nn.Module, int, bool]:
    """``(model, input size, imagenet normalization)`` for ``torchvision:NAME``, ``timm:NAME``
    or ``zoo:NAME``; ``weights``: a state_dict file, or for a torchvision model the name of
    torchvision's pretrained weights (see :mod:`._weights`); without, its random weights are
    drawn from ``seed`` (one warning line)."""
    source, name, found = check_model(spec, weights)
    if source == "timm":
        model = build_timm(name, seed, warn=found is None)
        if isinstance(found, Path):
            load_weights(model, found, spec)
        return model.eval(), timm_input_size(model), True
    if source == "torchvision":
        given = found if isinstance(found, Pretrained) else None
        model = build_torchvision(name, given, seed, warn=found is None)
        if isinstance(found, Path):
            load_weights(model, found, spec)
        return model.eval(), 224, True
    from .. import zoo

    if name == "planted":
        return zoo.planted_network()[0].eval(), zoo.PLANTED_SIZE, False
    return zoo.load(name), int(zoo.model_card(name).input_shape[1]), False


def import_plugins(modules: Sequence[str]) -> None:
    """Import the user's modules (``--import``): their scorers register by name on import."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise CLIError(f"--import {name}: {exc}") from exc


# ----------------------------------------------------------------------------------- the images


def read_image(path: str) -> Any:
    """The image file ``path`` as an RGB PIL image; :class:`BadImage` naming the file if it
    cannot be decoded (corrupt, truncated, not an image)."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, …
        raise BadImage(f"{BadImage.PREFIX}{path} ({describe(exc)})") from exc


class ImageFiles(Dataset[tuple[Any, int]]):
    """A flat folder of image files (no class folders), in sorted order; every label is 0.

    Shaped like torchvision's ``ImageFolder`` where polyprune looks: ``root``, ``samples``
    (``(path, 0)`` pairs, so a study records the files of its top images) and ``transform``.
    """

    def __init__(self, root: str | os.PathLike[str], files: Sequence[Path]) -> None:
        self.root = os.fspath(root)
        self.samples: list[tuple[str, int]] = [(os.fspath(f), 0) for f in files]
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = read_image(path)
        return (image if self.transform is None else self.transform(image)), label


def _no_images(root: str, where: str) -> CLIError:
    return CLIError(
        f"no images in {where}{root} (looked for files ending in {', '.join(_extensions())})"
    )


def open_images(root: str) -> Any:
    """The images under ``root`` without a transform yet: an ``ImageFolder`` if it has class
    folders with images, else the image files directly in it (:class:`ImageFiles`)."""
    from torchvision.datasets import ImageFolder

    path, valid = Path(root), "--data must be a folder of images or of class folders"
    if not path.exists():
        raise CLIError(f"{valid}, not found: {root}")
    if not path.is_dir():
        raise CLIError(f"{valid}, got the file {root}")
    extensions = _extensions()
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        raise CLIError(f"cannot read the folder {root}: {exc.strerror or exc}") from exc
    files = [p for p in entries if p.is_file() and p.name.lower().endswith(extensions)]
    if any(p.is_dir() for p in entries):
        try:  # allow_empty: a class folder without images (or a stray folder) is no error
            classes = ImageFolder(os.fspath(path), loader=read_image, allow_empty=True)
        except OSError as exc:
            raise CLIError(f"cannot read the folder {root}: {exc.strerror or exc}") from exc
        if len(classes):
            return classes
        if not files:
            raise _no_images(root, "the class folders of ")
    if not files:
        raise _no_images(root, "")
    return ImageFiles(path, files)


def image_transform(size: int | tuple[int, int], normalize: bool, channels: int) -> Any:
    """Resize (shorter side), center crop to ``size``, gray if the model reads one channel,
    to tensor, and ImageNet's normalization for torchvision models."""
    import torchvision.transforms as T

    crop = (size, size) if isinstance(size, int) else size
    steps: list[Any] = [T.Resize(max(crop)), T.CenterCrop(crop)]
    if channels == 1:
        steps.append(T.Grayscale(1))
    steps.append(T.ToTensor())
    if normalize:
        steps.append(T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD))
    return T.Compose(steps)


def image_data(root: str, size: int, normalize: bool, channels: int) -> Any:
    """The images under ``root`` (see :func:`open_images`) as ``size``×``size`` tensors."""
    data = open_images(root)
    data.transform = image_transform(size, normalize, channels)
    return data


# ----------------------------------------------------------------------------------- the output


def output_directory(
    path: str, kind: str, *, force: bool = False, protect: Sequence[tuple[str, str]] = ()
) -> Path:
    """``--out``: where a ``kind`` result (``"study"``, ``"scan"``, ``"demo"``) may be written,
    checked before any work (see ``_files.check_result_directory``): a new or empty directory,
    or with ``force`` (``--force``) an earlier result of the same kind; never the current
    directory or one holding it, nor a ``protect`` folder (``(flag, path)``), one holding it or
    one inside it."""
    try:
        return check_result_directory(
            path, kind, overwrite=force, what="--out", force="--force", protect=tuple(protect)
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
