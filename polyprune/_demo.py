"""Private: ``polyprune demo`` — the study on the zoo models, a report and a summary table."""

from __future__ import annotations

import html
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import zoo
from .masks import Masks
from .study import StudyResult, study
from .targets import Unit

__all__ = [
    "DemoCase",
    "circuit_scores",
    "demo_cases",
    "demo_data",
    "demo_threads",
    "run_demo",
]

#: Continuous Sparsification settings of the demo (small problems: few epochs suffice).
DEMO_FIT = {"epochs": 25}


@contextmanager
def demo_threads() -> Iterator[None]:
    """One torch thread while the demo runs, restored after.

    The zoo models are tiny: a second intra-op thread gains little, and when another process
    holds a core it costs a lot (measured: 37 s with one thread, 147 s with two, on a 2-core
    machine with one busy core).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class DemoCase:
    """One model, unit and data set of the demo."""

    name: str
    model: nn.Module
    unit: Unit
    images: Tensor
    concepts: list[str]  # ground-truth concept name of every image
    k: int
    truth: dict[str, Masks] | None = None


def demo_cases() -> list[DemoCase]:
    """The planted network (exact circuits known) and the two trained zoo models."""
    planted, truth = zoo.planted_network()
    images, labels = zoo.concept_images(1500, size=zoo.PLANTED_SIZE, seed=1)
    cases = [
        DemoCase("planted", planted, Unit(*zoo.PLANTED_TARGET), images,
                 [zoo.CONCEPTS[i] for i in labels.tolist()], k=300, truth=truth),
    ]  # fmt: skip
    for name in zoo.available():
        card = zoo.model_card(name)
        x, y = demo_data(name)
        names = [card.concepts[i] for i in y.tolist()]
        # the unit is a class logit: its top 100 are mostly the two merged concepts
        cases.append(DemoCase(name, zoo.load(name), Unit(*card.unit), x, names, k=100))
    return cases


def demo_data(name: str) -> tuple[Tensor, Tensor]:
    """Images for a trained zoo model's study: enough that its top 100 are the merged concepts.

    ``concepts-merged``: 4,000 fresh concept images (seed 7); ``digits-merged``: all 1,797 digits.
    """
    if name == "digits-merged":
        return zoo.digits("all")
    return zoo.concept_images(4000, size=zoo.model_card(name).input_shape[1], seed=7)


def circuit_scores(masks: Masks, truth: Masks) -> tuple[float, float]:
    """Kernel precision and recall of ``masks`` against a planted circuit, in the region."""
    tp = fp = fn = 0
    for name, mask in truth.items():
        region = truth.regions.get(name, torch.ones_like(mask))
        got, want = masks[name] & region, mask & region
        tp += int((got & want).sum())
        fp += int((got & ~want).sum())
        fn += int((~got & want).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    return precision, tp / (tp + fn) if tp + fn else 0.0


def _cluster_concepts(result: StudyResult, concepts: list[str]) -> dict[int, tuple[str, float]]:
    """The majority concept of each cluster and its share."""
    names = [concepts[i] for i in result.top.indices.tolist()]
    out = {}
    for c in range(result.clustering.n_clusters):
        counts = Counter(
            n for n, lab in zip(names, result.clustering.labels, strict=True) if lab == c
        )
        top, n = counts.most_common(1)[0]
        out[c] = (top, n / sum(counts.values()))
    return out


def _table(case: DemoCase, result: StudyResult) -> list[str]:
    majority = _cluster_concepts(result, case.concepts)
    lines = [f"== {case.name}: {result.summary().splitlines()[0]}"]
    lines += [f"   cluster {c} = {n} ({share:.0%} of it)" for c, (n, share) in majority.items()]
    header = f"   {'method':<9}{'cluster':>8}{'kept':>8}{'AUROC':>14}{'held-out':>10}"
    header += f"{'circuit P/R':>14}" if case.truth else ""
    lines.append(header)
    for row in result.rows():
        concept = majority[row["cluster"]][0]
        held = "-" if row["auroc_held_out"] is None else f"{row['auroc_held_out']:.2f}"
        line = (
            f"   {row['method']:<9}{row['cluster']:>8}{row['kept']:>8.1%}"
            f"{row['auroc_before']:>7.2f}→{row['auroc_after']:.2f}{held:>10}"
        )
        if case.truth and concept in case.truth:
            sub = result.subnetworks[row["method"]][row["cluster"]]
            p, r = circuit_scores(sub.masks, case.truth[concept])
            line += f"{p:>9.2f}/{r:.2f}"
        lines.append(line)
    return lines


def run_demo(out: Path, *, progress: bool = True) -> Path:
    """Run the study on every demo case, write reports under ``out``, print a summary table."""
    with demo_threads():
        return _run(out, progress)


def _run(out: Path, progress: bool) -> Path:
    start = time.perf_counter()
    tables, sections = [], []
    for case in demo_cases():
        t = time.perf_counter()
        result = study(
            case.model, case.unit, case.images, k=case.k, keep=0.05, fit_options=DEMO_FIT,
            progress=progress,
        )  # fmt: skip
        report = result.save(out / case.name)
        table = _table(case, result)
        table.append(f"   ({time.perf_counter() - t:.1f} s)")
        tables.append("\n".join(table))
        sections.append((case.name, report.relative_to(out), "\n".join(table)))
    text = "\n\n".join(tables)
    print(text, file=sys.stdout, flush=True)
    body = "".join(
        f'<h2><a href="{path}">{html.escape(name)}</a></h2><pre>{html.escape(table)}</pre>'
        f'<img src="{path.parent / "histograms.png"}" alt="histograms of {html.escape(name)}">'
        for name, path, table in sections
    )
    index = out / "report.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>polyprune demo</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}img{max-width:100%}</style>"
        f"</head><body><h1>polyprune demo</h1><p>{time.perf_counter() - start:.0f} s</p>{body}"
        "</body></html>"
    )
    return index
