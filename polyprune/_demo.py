"""Private: ``polyprune demo`` — the study on the zoo models, a report and a summary table."""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from . import zoo
from ._files import atomic_directory
from ._progress import say
from ._report import html_page
from .evaluation import circuit_scores
from .study import StudyResult, study
from .zoo import DemoCase

__all__ = ["demo_threads", "run_demo"]


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


def _table(case: DemoCase, result: StudyResult) -> list[str]:
    majority = result.clustering.majority([case.concepts[i] for i in result.top.indices.tolist()])
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
            found = circuit_scores(sub.masks, case.truth[concept])
            line += f"{found.precision:>9.2f}/{found.recall:.2f}"
        lines.append(line)
    return lines


def run_demo(out: Path, *, progress: bool = True, overwrite: bool = False) -> Path:
    """Run the study on every demo case, write reports under ``out``, print a summary table.

    ``out`` is written all at once, as a result directory of kind ``"demo"`` (see
    ``_files.atomic_directory``: an earlier demo is replaced only with ``overwrite``)."""
    with demo_threads(), atomic_directory(out, "demo", overwrite=overwrite) as tmp:
        _run(tmp, progress)
    return out / "report.html"


def _with_truth(report: Path, table: str) -> None:
    """The case's known concepts (and planted circuits) on its own page, under the verdict."""
    page = report.read_text()
    section = (
        '<section class="truth"><h2>Ground truth</h2><p>What each cluster is (the majority '
        "concept of its images) and, for the planted network, how well each subnetwork recovers "
        f"its concept's circuit (precision/recall of kernels).</p><pre>{html.escape(table)}</pre>"
        "</section>"
    )
    at = page.index("</section>") + len("</section>")  # after the verdict
    report.write_text(page[:at] + section + page[at:])


def _run(out: Path, progress: bool) -> Path:
    start = time.perf_counter()
    tables, sections = [], []
    cases = zoo.demo_cases()
    for number, case in enumerate(cases, 1):
        say(f"demo {number}/{len(cases)}: {case.name}", progress)
        t = time.perf_counter()
        result = study(
            case.model, case.unit, case.images, k=case.k, keep=case.keep, config=case.cs,
            progress=progress,
        )  # fmt: skip
        report = result.save(out / case.name)
        table = _table(case, result)
        table.append(f"   ({time.perf_counter() - t:.1f} s)")
        _with_truth(report, "\n".join(table[1:-1]))
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
    seconds = f"<p>{time.perf_counter() - start:.0f} s</p>"
    index.write_text(html_page("polyprune demo", ["<h1>polyprune demo</h1>", seconds, body]))
    return index
