"""Private (methods): the one data pass of :func:`~polyprune.top_activating` and
:func:`~polyprune.scan`.

:func:`stream` reads the data once (only this rank's share under ``torch.distributed``), cuts
each batch as planned on the first one (:mod:`polyprune._plan`), runs the model up to the
layers and merges the units' values into a running top-k (:class:`polyprune._topk.TopK`); then
it gathers every rank's top-k and checks that the data held ``k`` items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._data import Images
from ._dist import (
    MergedTopK,
    all_gather,
    broadcast_object,
    collective_errors,
    is_distributed,
    is_main,
)
from ._graph.run import read_unit
from ._model import eval_mode
from ._plan import Plan, first_batch, run_batch
from ._progress import stage
from ._topk import TopK
from .receptive_field import ReceptiveField
from .targets import Unit

__all__ = ["Pass", "stream"]


@dataclass(frozen=True)
class Pass:
    """What one pass found, by layer; the same on every rank.

    ``tops``: each layer's top-k (``(T, k)``: one row per tracked channel), each item's code
    vector under ``"codes"`` and, with ``keep_inputs``, what the model saw under ``"inputs"``;
    ``seen_at``: where each unit sits in what the model saw; ``shape``: one item's shape;
    ``seen``: the items read; ``sums``: each layer's codes summed over all items (float64).
    """

    tops: dict[str, MergedTopK]
    plans: dict[str, Plan]
    seen_at: dict[str, tuple[int, int] | None]
    shape: tuple[int, ...]
    seen: int
    sums: dict[str, Tensor]


def stream(
    model: nn.Module,
    units: Sequence[Unit],
    images: Images,
    k: int,
    *,
    crop: bool | ReceptiveField,
    every_channel: bool,
    keep_inputs: bool = False,
    progress: bool,
    what: str,
    desc: str,
) -> Pass:
    """One pass over ``images`` for ``units`` (one per layer): the top-``k`` of each unit's
    channel, or of every channel of its layer (``every_channel``), at the unit's position
    (the map's center unless it has one). Raises if the data held fewer than ``k`` items.
    ``what`` names the call in errors raised on every rank, ``desc`` the progress bar."""
    if images.length is not None and k > images.length:
        raise ValueError(f"k={k} is larger than the data set ({images.length} items)")
    names = [unit.layer for unit in units]
    states = {u.layer: TopK(k, None if every_channel else [u.channel]) for u in units}
    plans: dict[str, Plan] = {}
    seen_at: dict[str, tuple[int, int] | None] = {}
    sums: dict[str, Tensor] = {}
    shape: tuple[int, ...] = ()
    seen = 0
    with (
        collective_errors(what) as section,
        eval_mode(model),
        torch.no_grad(),
        stage(desc, images.local_length, unit="img", show=progress and is_main()) as bar,
    ):  # fmt: skip
        for offset, batch in images:
            section.check()  # another rank failed: stop and raise its error
            if not plans:
                plans, seen_at, runs = first_batch(model, units, batch, crop)
                shape = tuple(batch.shape[1:])
            else:
                runs = run_batch(model, plans, batch)
            for name in names:
                x, out = runs[name]
                codes = read_unit(out, None, seen_at[name]).float()
                states[name].push(codes, offset, x if keep_inputs else None)
                column = codes.double().sum(dim=0).cpu()
                sums[name] = column if name not in sums else sums[name] + column
            seen = offset + int(batch.shape[0])
            bar.update(batch.shape[0])
            del runs, x, out, codes  # not alive during the next batch's forward
    tops = {name: states[name].gather() for name in names}
    if is_distributed():
        # rank 0 always reads data (it owns the first block or batch): its plans are everyone's
        plans, seen_at, shape = broadcast_object((plans, seen_at, shape))
        parts = all_gather((seen, sums))
        seen = max(s for s, _ in parts) if images.length is None else images.length
        sums = {
            name: sum((p[1][name] for p in parts if name in p[1]), torch.zeros(1)) for name in names
        }
    if k > seen:
        raise ValueError(f"k={k} is larger than the data set ({seen} items)")
    kept = {name: top for name, top in tops.items() if top is not None}
    assert len(kept) == len(names)
    return Pass(kept, plans, seen_at, shape, seen, sums)
