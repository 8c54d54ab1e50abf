"""Private (foundation): the one adapter between a user's images and polyprune.

Every public function that takes images accepts the same things, checked the same way:

- a tensor ``(N, C, H, W)`` (split into batches of ``batch_size``; ``None``: one batch);
- a map-style ``Dataset`` whose items are images ``(C, H, W)`` or ``(image, ...)`` tuples (read
  in order through a ``DataLoader``, with ``workers`` worker processes);
- a ``DataLoader`` that reads its dataset in order (used as it is; one that shuffles or has
  another sampler is refused, since polyprune reports the items' positions as dataset indices);
- any other iterable of batches ``(B, C, H, W)``, of single images ``(C, H, W)`` (grouped into
  batches), or of ``(tensor, ...)`` tuples of either — a generator is read once, lazily.

Each batch is checked before the model sees it: floating point (``uint8`` images are refused
with a hint to convert them), finite, non-empty, and of the same channels and size as the first
batch. Items are numbered in the order they come in (their *global index*).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
)

from . import _validate as valid
from ._dist import owns_batch, world
from ._dist import shard as shard_of
from ._model import random_state_kept

__all__ = ["Images", "as_images", "check_members", "data_size", "take"]

_END = object()


def _tensor_of(item: Any) -> Any:
    """The image part of an item: the item itself, or the first element of a tuple/list."""
    if isinstance(item, tuple | list) and item and isinstance(item[0], Tensor):
        return item[0]
    return item


def _check(batch: Tensor, name: str, where: str) -> None:
    if not batch.is_floating_point():
        hint = (
            " (uint8 images in 0..255: convert with images.float() / 255, or "
            "torchvision.transforms.ToTensor())"
            if batch.dtype == torch.uint8
            else ""
        )
        raise ValueError(f"{name} must be floating point, got {batch.dtype} {where}{hint}")
    if batch.shape[0] == 0 or batch.numel() == 0:
        raise ValueError(f"{name} is empty {where} (shape {tuple(batch.shape)})")
    if not bool(torch.isfinite(batch).all()):
        raise ValueError(f"{name} contains NaN or infinite values {where}")


def as_images(images: Any, name: str = "images", *, ndim: int | None = 4) -> Tensor:
    """A checked tensor of images: ``ndim``-D (any ≥ 2-D if None), floating point, finite."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() < 2 or (ndim is not None and images.dim() != ndim):
        want = "4-D (N, C, H, W)" if ndim == 4 else f"{ndim}-D" if ndim else "at least 2-D"
        raise ValueError(f"{name} must be {want}, got shape {tuple(images.shape)}")
    _check(images, name, "")
    return images


def check_members(members: Any, n: int) -> Tensor:
    """A bool vector of length ``n`` with at least one member and one non-member."""
    if not isinstance(members, Tensor):
        try:
            members = torch.as_tensor(members)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"members must be a bool tensor aligned with images, got {type(members).__name__}"
            ) from exc
    if members.dtype != torch.bool:
        if members.is_floating_point() or members.is_complex():
            raise ValueError(f"members must be a bool tensor (or 0/1 ints), got {members.dtype}")
        if not bool(((members == 0) | (members == 1)).all()):
            raise ValueError("members must be a bool tensor (or 0/1 ints), got other values")
        members = members.bool()
    if members.dim() != 1 or members.shape[0] != n:
        raise ValueError(
            f"members must have shape ({n},), one flag per image, got {tuple(members.shape)}"
        )
    n_in = int(members.sum())
    if n_in == 0:
        raise ValueError("members has no member: the cluster to fit is empty")
    if n_in == n:
        raise ValueError(
            "members has no non-member: every image is in the cluster, so there is nothing to "
            "separate it from (add the other cluster's images, or non-top images, as negatives)"
        )
    flags: Tensor = members.detach().cpu()
    return flags


def _same(obj: Any, kind: type) -> bool:
    """``obj`` is a ``kind`` that iterates as ``kind`` does (a subclass may reorder)."""
    return isinstance(obj, kind) and type(obj).__iter__ is kind.__iter__  # type: ignore[attr-defined]


def _out_of_order(loader: DataLoader[Any]) -> str | None:
    """What makes ``loader`` read its dataset in another order than 0, 1, …, n−1 (None: nothing).

    Only torch's own sequential sampler (alone, or in torch's ``BatchSampler``) is known to read
    in order; an iterable-style dataset is read in its own order.
    """
    if isinstance(loader.dataset, IterableDataset):
        return None
    batches = loader.batch_sampler
    if batches is not None and not _same(batches, BatchSampler):
        return f"its batch_sampler ({type(batches).__name__})"
    sampler = loader.sampler if batches is None else getattr(batches, "sampler", None)
    if _same(sampler, SequentialSampler):
        return None
    if isinstance(sampler, RandomSampler):
        return "it shuffles"
    return f"its sampler ({type(sampler).__name__})"


class Images:
    """Batches of checked images from any supported source (see the module docstring).

    Iterating yields ``(offset, batch)``: the global index of the batch's first item and the
    batch ``(B, C, H, W)`` on the CPU (or wherever the source put it), not yet moved to a model.
    ``length`` is the number of items when it can be known without reading them (else None).
    ``passes`` > 1 keeps a one-shot iterator's batches in memory so that it can be read again.
    ``shard=True``: under ``torch.distributed`` yield only this rank's batches (module
    docstring); ``local_length`` is then the number of items this rank reads, when known.
    ``indexed=False``: the items' indices are not used (sums over images), so a DataLoader may
    read in any order.
    """

    def __init__(
        self,
        data: Any,
        *,
        batch_size: int | None = 64,
        name: str = "data",
        ndim: int | None = 4,
        workers: int = 0,
        passes: int = 1,
        shard: bool = False,
        indexed: bool = True,
    ) -> None:
        if batch_size is not None:
            valid.integer("batch_size", batch_size, low=1)
        valid.integer("workers", workers, low=0)
        self.name, self.ndim = name, ndim
        self._shape: tuple[int, ...] | None = None
        self._source: Iterable[Any] | None = None
        self._once: Iterator[Any] | None = None
        self._grouped = False  # items are single images, to be grouped into batches
        self._batch_size = batch_size or 64
        self.length: int | None = None
        self._first: Tensor | None = None  # the first item, when read already (first_image)
        self._start = 0  # global index of the first item this rank reads (sized shards)
        self._round_robin = False  # distributed and not sized: skip other ranks' batches
        distributed = shard and world()[1] > 1
        block: range | None = None
        if isinstance(data, Tensor):
            as_images(data, name, ndim=ndim)
            self.length = int(data.shape[0])
            self._first = data[:1]
            if distributed:
                block = shard_of(self.length)
                data = data[block.start : block.stop]
            if data.shape[0] == 0:  # this rank's shard is empty
                self._source = []
            else:
                self._source = [data] if batch_size is None else list(torch.split(data, batch_size))
        elif isinstance(data, DataLoader):
            problem = _out_of_order(data) if indexed else None
            if problem is not None:
                raise ValueError(
                    f"{name} is a DataLoader that does not read its dataset in order ({problem}): "
                    "polyprune reports dataset indices and file paths by position, so they would "
                    "name other items. Pass the Dataset itself (read in order, and split over "
                    "ranks under torchrun), a DataLoader with shuffle=False and no sampler, or "
                    "torch.utils.data.Subset(dataset, indices) for part of it"
                )
            self.length = _sized(data.dataset)
            self._source = data
        elif isinstance(data, Dataset):
            self.length = None if isinstance(data, IterableDataset) else _sized(data)
            if self.length == 0:
                raise ValueError(f"{name} is empty (a Dataset with no items)")
            if distributed and self.length is not None:
                block = shard_of(self.length)
                data = Subset(data, block)
            self._source = DataLoader(
                data,
                batch_size=self._batch_size,
                shuffle=False,
                num_workers=workers,
                pin_memory=workers > 0 and torch.cuda.is_available(),
            )
        elif isinstance(data, Iterable) and not isinstance(data, str | bytes):
            self._from_iterable(data, passes)
        else:
            raise TypeError(
                f"{name} must be a tensor (N, C, H, W), a Dataset, a DataLoader or an iterable of "
                f"batches or images, got {type(data).__name__}"
            )
        if block is not None:
            self._start = block.start
            self.local_length: int | None = len(block)
        else:
            self._round_robin = distributed
            self.local_length = self.length

    def _from_iterable(self, data: Iterable[Any], passes: int) -> None:
        iterator = iter(data)
        one_shot = iterator is data
        if one_shot and passes > 1:  # a generator read several times: keep it
            data = list(iterator)
            iterator, one_shot = iter(data), False
        first = next(iterator, _END)
        if first is _END:
            raise ValueError(f"{self.name} is empty: give at least one batch of images")
        image = _tensor_of(first)
        if not isinstance(image, Tensor):
            raise TypeError(
                f"{self.name} must yield tensors or (tensor, ...) tuples, got "
                f"{type(image).__name__}"
            )
        self._grouped = self.ndim is not None and image.dim() == self.ndim - 1
        self._first = image
        if one_shot:
            self._once = itertools.chain([first], iterator)
            return
        self._source = data
        if hasattr(data, "__len__"):
            items = list(data)  # in memory already: count images, not list entries
            sizes = [1 if self._grouped else int(_tensor_of(b).shape[0]) for b in items]
            self.length = sum(sizes)

    def first_image(self) -> Tensor | None:
        """The first image ``(1, C, H, W)``, checked as batches are, when it is known without
        reading the source (a tensor, or an iterable whose first item was read); else None."""
        if self._first is None:
            return None
        first = self._first
        first = first[None] if self._grouped else first[:1] if first.dim() else first
        return self._checked(first, 0, self._start)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        if self._source is not None:
            items: Iterable[Any] = self._source
        elif self._once is not None:
            items, self._once = self._once, None
        else:
            raise RuntimeError(f"{self.name} was a one-shot iterator and is used up")
        if isinstance(items, DataLoader):
            items = _started(items)
        if self._grouped:
            items = _group(items, self._batch_size)
        offset = self._start
        for number, item in enumerate(items):
            if self._round_robin and not owns_batch(number):
                offset += _count(_tensor_of(item))  # another rank's: counted, not checked
                continue
            batch = self._checked(_tensor_of(item), number, offset)
            yield offset, batch
            offset += int(batch.shape[0])
        if offset == 0:  # (an empty shard starts at n > 0)
            raise ValueError(f"{self.name} is empty")

    def _checked(self, batch: Any, number: int, offset: int) -> Tensor:
        where = f"(batch {number}, items from {offset})"
        if not isinstance(batch, Tensor):
            raise TypeError(f"{self.name} yields {type(batch).__name__} {where}, not a tensor")
        if batch.dim() < 2 or (self.ndim is not None and batch.dim() != self.ndim):
            want = f"{self.ndim}-D batches" if self.ndim else "batches of at least 2-D (N, C, ...)"
            raise ValueError(
                f"{self.name} must give {want}, got shape {tuple(batch.shape)} {where}; for one "
                "image add a batch dimension"
            )
        _check(batch, self.name, where)
        shape = tuple(batch.shape[1:])
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            raise ValueError(
                f"{self.name} mixes image shapes: {shape} {where} after {self._shape}; "
                "polyprune reads one map position across images of one size: resize them "
                "first (e.g. torchvision.transforms.Resize + CenterCrop)"
            )
        return batch


def _started(loader: DataLoader[Any]) -> Iterator[Any]:
    """``loader``'s batches, started with the caller's random state kept: each pass of a
    DataLoader draws its base seed (and a shuffling sampler its own seed) from torch's global
    generator, at ``iter`` and at the first batch."""
    with random_state_kept():
        iterator = iter(loader)
        first = next(iterator, _END)
    return iter(()) if first is _END else itertools.chain([first], iterator)


def _count(batch: Any) -> int:
    """How many items a batch that this rank skips holds (its first dimension)."""
    if not isinstance(batch, Tensor) or batch.dim() == 0:
        raise TypeError(f"data yields {type(batch).__name__}, not a batch tensor")
    return int(batch.shape[0])


def take(data: Any, indices: Tensor, name: str = "data") -> Tensor:
    """The items at ``indices`` (global indices) of indexable ``data``, as a checked batch.

    ``data`` must be a tensor ``(N, C, H, W)`` or a map-style Dataset (items are images or
    ``(image, ...)`` tuples), the same one the indices were computed on.
    """
    idx = [int(i) for i in indices.reshape(-1).tolist()]
    n: int | None
    if isinstance(data, Tensor):
        n = int(as_images(data, name).shape[0])
    elif isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        n = _sized(data)
    else:
        raise TypeError(
            f"{name} must be indexable to read items by index: a tensor (N, C, H, W) or a "
            f"map-style Dataset, got {type(data).__name__} (a DataLoader or an iterable can only "
            "be streamed)"
        )
    if n is not None and any(not 0 <= i < n for i in idx):
        raise ValueError(f"{name} has {n} items, fewer than the indices need ({max(idx)})")
    if isinstance(data, Tensor):
        return data[torch.tensor(idx, dtype=torch.long)]
    if not idx:
        raise ValueError("no indices to take")
    images = [_tensor_of(data[i]) for i in idx]
    if not all(isinstance(x, Tensor) for x in images):
        raise TypeError(f"{name}'s items must be tensors or (tensor, ...) tuples")
    return as_images(torch.stack(images), name)


def data_size(data: Any) -> tuple[int, ...] | int | None:
    """What can be told of ``data``'s size without reading it: a tensor's shape, a Dataset's
    (or a DataLoader's dataset's) length, a sized iterable's length; None for a generator."""
    if isinstance(data, Tensor):
        return tuple(data.shape)
    if isinstance(data, DataLoader):
        return _sized(data.dataset)
    return _sized(data)


def _sized(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def _group(items: Iterable[Any], size: int) -> Iterator[Tensor]:
    """Stack single images ``(C, H, W)`` (or ``(image, ...)`` tuples) into batches of ``size``."""
    chunk: list[Tensor] = []
    for item in items:
        chunk.append(_tensor_of(item))
        if len(chunk) == size:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)
