"""Record layer activations with forward hooks, stopping the forward early; streaming top-k."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import _glance
from . import _validate as valid
from ._data import Images, as_images, data_size
from ._dist import same_everywhere
from ._graph.run import LayerHooks, does_not_run, read_unit, resolve_position
from ._graph.trace import check_layer
from ._model import conv_input_ndim, eval_mode, to_model
from ._provenance import file_paths
from ._stream import stream
from .receptive_field import ReceptiveField
from .targets import Unit

__all__ = ["ActivationRecorder", "TopActivations", "top_activating"]

Reduction = Literal["center", "mean", "max"] | Callable[[Tensor], Tensor] | None
_NAMED = ("center", "mean", "max")


def _reducer(reduce: Reduction, position: tuple[int, int] | None) -> Callable[[Tensor], Tensor]:
    if callable(reduce):
        return reduce
    if reduce is None:
        return lambda t: t
    if reduce not in _NAMED:
        raise ValueError(f"reduce must be one of {_NAMED}, None or a callable, got {reduce!r}")

    def named(t: Tensor) -> Tensor:
        if t.dim() < 3:  # (N, C): nothing spatial to reduce
            return t
        spatial = tuple(range(2, t.dim()))
        if reduce == "mean":
            return t.mean(dim=spatial)
        if reduce == "max":
            return t.amax(dim=spatial)
        spatial = tuple(t.shape[2:])
        return read_unit(t, None, resolve_position(position, spatial, "the recorded layer"))

    return named


def _holds_tensor(value: object) -> bool:
    """``value`` is a tensor or a (nested) tuple, list or dict with one among its items."""
    if isinstance(value, Tensor):
        return True
    items = list(value.values()) if isinstance(value, Mapping) else value
    return isinstance(items, tuple | list) and any(_holds_tensor(item) for item in items)


class ActivationRecorder:
    """Record the outputs of named modules, detached and cloned.

    Use as a context manager: hooks are attached on entry and removed on exit (also when the
    body raises). :meth:`run` does one forward pass that stops right after the last recorded
    layer; plain ``model(x)`` calls inside the ``with`` block are recorded too (without early
    stop). Outside a ``with`` block, :meth:`run` attaches and removes hooks itself.

    Parameters
    ----------
    model : nn.Module
    layers : str or sequence of str
        Module names from ``model.named_modules()``.
    reduce : {"center", "mean", "max"}, None or callable
        ``"center"``: the map position ``position`` (default: the middle,
        ``((H - 1) // 2, (W - 1) // 2)``) → ``(N, C)``; ``"mean"``/``"max"`` over the map →
        ``(N, C)``; ``None``: the full output ``(N, C, H, W)``; a callable gets the detached output.
    position : tuple[int, int], optional
        The map position for ``reduce="center"``.
    accumulate : bool
        Keep every run's records (default) or only the last run's.

    Examples
    --------
    >>> import torch, torchvision, polyprune as pp
    >>> model = torchvision.models.alexnet().eval()
    >>> with pp.ActivationRecorder(model, ["features.6", "features.10"]) as rec:
    ...     _ = rec.run(torch.rand(4, 3, 224, 224))
    >>> tuple(rec.activations["features.10"].shape)
    (4, 256)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        reduce: Reduction = "center",
        *,
        position: tuple[int, int] | None = None,
        accumulate: bool = True,
    ) -> None:
        names = list(valid.names("layers", layers))
        for name in names:
            check_layer(model, name, "layers")
        self.model = model
        self.layers = names
        self._reduce = _reducer(reduce, position)
        self._accumulate = accumulate
        self._records: dict[str, list[Tensor]] = {name: [] for name in names}
        self._hooks = LayerHooks(model, names, self._record)
        self._inside = False
        self._ndim = conv_input_ndim(model)  # 4 for a CNN: one image (C, H, W) is refused

    def _record(self, name: str, output: Tensor) -> None:
        # clone: a view of the output would be overwritten by a following in-place ReLU
        self._records[name].append(self._reduce(output.detach()).clone())

    def __enter__(self) -> ActivationRecorder:
        self._hooks.attach()
        self._inside = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inside = False
        self._hooks.detach()

    def run(self, batch: Any) -> dict[str, Tensor]:
        """Forward ``batch`` up to the last recorded layer; return this batch's records.

        The forward runs in eval mode (BatchNorm statistics are never updated; every module's
        ``training`` flag is restored) without gradients; a tensor batch is moved to the model's
        device and dtype. Raises ``ValueError`` for NaN/inf or integer images, or a layer that
        never runs.
        """
        if isinstance(batch, Tensor):
            batch = to_model(as_images(batch, "batch", ndim=self._ndim), self.model)
        elif not _holds_tensor(batch):
            raise valid.ArgumentTypeError(
                "batch must be a tensor of images (N, C, H, W), or a tuple, list or dict holding "
                f"the tensors the model's forward takes, got {type(batch).__name__}"
            )
        if not self._accumulate:
            self.clear()
        counts = {name: len(r) for name, r in self._records.items()}
        try:
            self._hooks.attach()
            with eval_mode(self.model), torch.no_grad():
                self._hooks.run(batch)
        except RuntimeError as exc:  # torch's error on images it cannot run: one ValueError
            if not isinstance(batch, Tensor):
                raise
            raise does_not_run(self.model, tuple(batch.shape)[1:], self.layers, exc) from exc
        finally:
            if not self._inside:
                self._hooks.detach()
        return {name: torch.cat(r[counts[name] :]) for name, r in self._records.items()}

    @property
    def activations(self) -> dict[str, Tensor]:
        """Records by layer name, concatenated over runs along the batch dimension."""
        return {name: torch.cat(r) for name, r in self._records.items() if r}

    def clear(self) -> None:
        """Forget all records."""
        for records in self._records.values():
            records.clear()


@dataclass(frozen=True)
class TopActivations:
    """The ``k`` items of a data set on which a unit is highest, best first.

    Attributes
    ----------
    unit : Unit
        The unit, with its position resolved (in full-image map coordinates; ``None`` for a
        layer without a spatial map, e.g. a Linear layer with ``crop=False``).
    indices : Tensor
        ``(k,)`` int64 positions of the items in the data's iteration order (the dataset indices
        for a Dataset, a tensor, or an unshuffled DataLoader). Ties go to the lower index.
    values : Tensor
        ``(k,)`` the unit's activation on each item.
    codes : Tensor
        ``(k, C)`` every channel of ``unit.layer`` at the unit's position: the paper's
        "center activations of all filters", recorded in the same pass (no second pass).
    field : ReceptiveField or None
        The field used for cropping (``None`` with ``crop=False``).
    inputs : Tensor or None
        With ``keep_inputs=True``: the ``k`` inputs the model saw (the receptive-field crops
        with ``crop=True``), best first.
    input_unit : Unit
        The unit as seen in ``inputs``: its position is the one in the crop's map.
    paths : list of str or None
        For folder data (a torchvision ``ImageFolder``, or a ``Subset`` or ``DataLoader`` of
        one): the file of each item, best first.
    """

    unit: Unit
    indices: Tensor
    values: Tensor
    codes: Tensor
    field: ReceptiveField | None
    inputs: Tensor | None = None
    input_unit: Unit | None = None
    paths: list[str] | None = None

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __repr__(self) -> str:
        what = "crops" if self.field is not None else "images"
        kept = "" if self.inputs is None else f", {what} {tuple(self.inputs.shape[1:])} kept"
        values = f"{float(self.values[0]):.4g} … {float(self.values[-1]):.4g}" if len(self) else "-"
        return f"TopActivations(top-{len(self)} of {self.unit}: activations {values}{kept})"

    def _repr_html_(self) -> str:
        strip = "" if self.inputs is None else _glance.thumbnails(self.inputs, 12)
        rows = [
            {"rank": i + 1, "item": int(self.indices[i]), "activation": float(self.values[i]),
             "file": self.paths[i] if self.paths else ""}
            for i in range(min(5, len(self)))
        ]  # fmt: skip
        columns: list[_glance.Column] = [
            ("rank", "rank", str), ("item", "item", str),
            ("activation", "activation", lambda v: f"{v:.4g}"), ("file", "file", str),
        ]  # fmt: skip
        verdict = f"top-{len(self)} of {self.unit}"
        return _glance.card("TopActivations", verdict, strip, _glance.html_table(rows, columns))

    def to_dict(self, *, inputs: bool = True) -> dict[str, Any]:
        """Plain containers of tensors, strings and numbers (``torch.load(weights_only=True)``
        reads them back; :meth:`from_dict`); ``inputs=False`` leaves the crops out."""
        inputs = valid.flag("inputs", inputs)
        return {
            "unit": self.unit.to_dict(), "indices": self.indices, "values": self.values,
            "codes": self.codes, "field": None if self.field is None else self.field.to_dict(),
            "inputs": self.inputs if inputs else None,
            "input_unit": None if self.input_unit is None else self.input_unit.to_dict(),
            "paths": self.paths,
        }  # fmt: skip

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> TopActivations:
        """The top activations of :meth:`to_dict`."""
        field, seen = data.get("field"), data.get("input_unit")
        return cls(
            Unit.from_dict(data["unit"]), data["indices"], data["values"], data["codes"],
            None if field is None else ReceptiveField.from_dict(field), data.get("inputs"),
            None if seen is None else Unit.from_dict(seen), data.get("paths"),
        )  # fmt: skip


def top_activating(
    model: nn.Module,
    unit: Unit,
    data: Tensor | Dataset[Any] | DataLoader[Any] | Iterable[Any],
    k: int = 1000,
    *,
    crop: bool | ReceptiveField = True,
    batch_size: int = 64,
    keep_inputs: bool = False,
    workers: int = 0,
    progress: bool = True,
) -> TopActivations:
    """Stream ``data`` once and keep the ``k`` items that excite ``unit`` most.

    Each batch is cropped to the unit's receptive field (``crop=True``, exact: the activation is
    the one of the full image), run only up to ``unit.layer``, and merged into a running top-k;
    memory is O(k + batch), independent of the data set's length. ``keep_inputs=True`` also
    keeps the k crops themselves (still O(k)), so no second pass over the data is needed.

    Where no crop is needed (a 1×1 map, a layer without a map, a unit that sees the whole image)
    the whole images are used; where the exact field cannot be derived (an operation without a
    receptive-field rule, an untraceable model) the whole images are used too, with one warning
    that says why: the activation read is exact either way, the crop only saves work. ``crop``
    may also be a field measured with :meth:`ReceptiveField.measure` (checked on the first
    batch: whole images are used, with a warning, if its crop changes the activation).

    ``data`` is anything :mod:`polyprune` accepts as images (a tensor, a Dataset, a DataLoader,
    an iterable of batches or of images; ``workers`` loader processes read a Dataset). The model
    runs in eval mode and is left as found.

    Under ``torch.distributed`` (e.g. launched with ``torchrun``) every rank streams only its
    share of ``data`` (contiguous blocks of a tensor or Dataset; every ``world``-th batch of a
    DataLoader or iterable), the local top-k's are merged with the same tie rule, and every
    rank returns the same result: equal to one process's wherever activations differ by more
    than float rounding (batches are composed differently). Every rank must call it; a
    failure on one rank raises on all. Progress is shown on rank 0 only.

    Examples
    --------
    >>> import torch, torchvision, polyprune as pp
    >>> model = torchvision.models.alexnet().eval()
    >>> top = pp.top_activating(model, pp.Unit("features.6", 3), torch.rand(20, 3, 224, 224),
    ...                         k=5, progress=False)
    >>> tuple(top.codes.shape), bool((top.values[:-1] >= top.values[1:]).all())
    ((5, 384), True)
    """
    same_everywhere(
        "top_activating", unit=unit, k=k, crop=crop, batch_size=batch_size,
        keep_inputs=keep_inputs, data=data_size(data),
    )  # fmt: skip
    valid.integer("k", k, low=1)
    valid.instance("crop", crop, (bool, ReceptiveField), "True, False or a ReceptiveField")
    if not isinstance(unit, Unit):
        raise TypeError(f"unit must be a polyprune.Unit, got {type(unit).__name__}")
    unit.validate(model)
    images = Images(data, batch_size=batch_size, workers=workers, shard=True)
    done = stream(
        model, [unit], images, k, crop=crop, every_channel=False, keep_inputs=keep_inputs,
        progress=progress, what="top_activating", desc=f"top-{k} of {unit}",
    )  # fmt: skip
    top, plan = done.tops[unit.layer], done.plans[unit.layer]
    return TopActivations(
        plan.unit, top.indices[0], top.values[0], top.payload("codes")[0], plan.field,
        top.payload("inputs")[0] if keep_inputs else None,
        Unit(unit.layer, unit.channel, done.seen_at[unit.layer]),
        file_paths(data, top.indices[0].tolist()),
    )  # fmt: skip
