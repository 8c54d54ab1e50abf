"""Private (cli): the argument parser of ``polyprune``. Every option's range is checked here, while
parsing, so a bad value fails before a model is loaded or an image read."""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import textwrap
from collections.abc import Callable
from typing import Any, NoReturn

from .._cluster_options import MIN_CODES
from .._validate import SEED_MAX
from ..clustering import cluster
from ..methods import DEFAULT_KEEP
from ..results import Scan, StudyResult
from ..scan import scan
from ..sparsify import CSConfig
from ..study import study
from ._launch import rank_note

__all__ = ["build_parser", "exit_code"]

_DESCRIPTION = "Find polysemantic units in CNNs and cut out one subnetwork per meaning."


def _wrap(text: str) -> str:
    """A description wrapped for the terminal (the help keeps descriptions as written)."""
    return textwrap.fill(text, 79)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option (none for options without one); descriptions and
    examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``polyprune: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):  # "argument --k: must be ≥ 1" → "--k: must be ≥ 1"
            message = message[len("argument ") :]
        self.exit(2, f"polyprune: error{rank_note()}: {message} (see {self.prog} --help)\n")


def _default(fn: Callable[..., Any], name: str) -> Any:
    """The default of ``fn``'s parameter ``name``. The command line repeats none of the
    library's defaults, it reads them here: each default lives in one place, its signature."""
    default = inspect.signature(fn).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{fn.__qualname__}({name}) has no default")  # a parser bug
    return list(default) if isinstance(default, tuple) else default


# ------------------------------------------------------------------------- value checks (types)


def _int(low: int, why: str = "", high: int | None = None) -> Callable[[str], int]:
    """An int in ``[low, high]`` (``why``: the reason for the bound, shown in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}{why}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be ≤ {high}{why}, got {value}")
        return value

    return parse


def _fraction(*, one: bool) -> Callable[[str], float]:
    """A number in (0, 1] (``one``) or (0, 1)."""
    valid = "in (0, 1]" if one else "in (0, 1)"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {valid}, got {text!r}") from None
        if not (math.isfinite(value) and value > 0 and (value <= 1 if one else value < 1)):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text}")
        return value

    return parse


# ------------------------------------------------------------------------------------- options


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", required=True,
        help="torchvision:NAME, timm:NAME (needs pip install 'polyprune[timm]'; built with "
        "pretrained=False) or zoo:NAME",
    )  # fmt: skip
    g.add_argument(
        "--weights", metavar="FILE|NAME",
        help="a torchvision model's weights: DEFAULT or a torchvision weights name such as "
        "IMAGENET1K_V1 (torchvision's pretrained weights, read from the local torch hub cache, "
        "never downloaded), or a state_dict file (read with weights_only=True; a checkpoint's "
        "'state_dict' or 'model' entry and DataParallel's 'module.' prefix are accepted); "
        "recorded with its SHA-256 in the provenance; for a timm model only a file. Without: "
        "random weights from --seed",
    )  # fmt: skip
    g.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a Python module first (its scorers register by name); repeatable",
    )  # fmt: skip


def _data_options(p: argparse.ArgumentParser, what: str, fn: Callable[..., Any]) -> None:
    """``--data`` and the options of reading it, their defaults ``fn``'s (study or scan)."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", required=True, metavar="FOLDER",
        help="a folder of class folders of images (torchvision's ImageFolder) or of image files",
    )  # fmt: skip
    g.add_argument(
        "--k", type=_int(MIN_CODES, " (their codes are clustered)"), default=_default(fn, "k"),
        metavar="N",
        help=f"top activating images{what} (cropped to the unit's receptive field unless "
        "--no-crop)",
    )  # fmt: skip
    g.add_argument(
        "--crop", action=argparse.BooleanOptionalAction, default=_default(fn, "crop"),
        help="cut images to the unit's receptive field (whole images where none can be derived)",
    )  # fmt: skip
    g.add_argument(
        "--image-size", type=_int(1), metavar="N",
        help="resize and center-crop images to N×N (default: the model's: 224 for torchvision)",
    )  # fmt: skip
    g.add_argument(
        "--batch-size", type=_int(1), default=_default(fn, "batch_size"), metavar="N",
        help="images per forward pass",
    )  # fmt: skip
    g.add_argument(
        "--workers", type=_int(0), default=_default(fn, "workers"), metavar="N",
        help="image loader processes",
    )  # fmt: skip


_QUIET = "-q: one line per stage, no progress bars; -qq: no progress output at all"


def _cluster_options(p: argparse.ArgumentParser, fn: Callable[..., Any]) -> None:
    """The clustering options, their defaults :func:`cluster`'s and ``fn``'s (study or scan)."""
    g = p.add_argument_group("clustering (HDBSCAN on the layer's codes of the top images)")
    g.add_argument(
        "--min-cluster-size", type=_int(2), metavar="N",
        help="smallest cluster (default: 5 percent of k, at least 5)",
    )  # fmt: skip
    g.add_argument(
        "--min-samples", type=_int(1), metavar="N",
        help="density smoothing (default: the min cluster size)",
    )  # fmt: skip
    g.add_argument(
        "--cluster-selection-method", choices=("eom", "leaf"),
        default=_default(cluster, "cluster_selection_method"),
        help="eom favours fewer, larger clusters",
    )  # fmt: skip
    g.add_argument(
        "--standardize", action="store_true", help="z-score each channel of the codes first"
    )
    g.add_argument(
        "--alpha", type=_fraction(one=False), default=_default(fn, "alpha"), metavar="LEVEL",
        help="significance level of the verdict: polysemantic when 2+ clusters and p < LEVEL "
        "(study) or Benjamini-Hochberg q < LEVEL (scan)",
    )  # fmt: skip


def _run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("running")
    g.add_argument("--threads", type=_int(1), metavar="N", help="torch intra-op threads")
    g.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where the model runs (auto: cuda if available); under torchrun: nccl on cuda, "
        "gloo on cpu",
    )  # fmt: skip
    g.add_argument("-q", "--quiet", action="count", default=0, help=_QUIET)


def _seed(g: Any, what: str, fn: Callable[..., Any]) -> None:
    g.add_argument(
        "--seed", type=_int(0, high=SEED_MAX), default=_default(fn, "seed"), metavar="N", help=what
    )


def _force(g: Any, kind: str) -> None:
    g.add_argument(
        "--force", action="store_true",
        help=f"replace an earlier {kind} saved in --out (nothing else is ever replaced: a "
        "folder with other files is refused)",
    )  # fmt: skip


def _study(sub: Any) -> argparse.ArgumentParser:
    st: argparse.ArgumentParser = sub.add_parser(
        "study", help="study one unit: cluster its top images, one subnetwork per cluster",
        description=_wrap("Study one unit: its top images, their clusters and, if it is "
        "polysemantic, one sparse subnetwork per cluster and method; writes a report."),
        epilog="example:\n  polyprune study --model zoo:concepts-merged --layer features.9 "
        "--unit 3 \\\n    --data images/ --k 200 --out study/",
        formatter_class=_Help,
    )  # fmt: skip
    _model_options(st)
    g = st.add_argument_group("unit")
    g.add_argument("--layer", required=True, help="module name, e.g. features.10")
    g.add_argument(
        "--unit", required=True, type=_int(0), metavar="CHANNEL", help="channel of the layer"
    )
    g.add_argument(
        "--position", nargs=2, type=_int(0), metavar=("I", "J"),
        help="the unit's place in the layer's map (default: the map's center)",
    )  # fmt: skip
    _data_options(st, "", study)
    _cluster_options(st, study)
    g = st.add_argument_group("subnetworks")
    g.add_argument(
        "--methods", nargs="+", default=_default(study, "methods"), metavar="METHOD",
        help="registered method names: 'cs' (Continuous Sparsification), the scorers, and "
        "any registered by --import",
    )  # fmt: skip
    g.add_argument(
        "--keep",
        type=_fraction(one=True),
        default=DEFAULT_KEEP,  # study's keep=None: each method's own, DEFAULT_KEEP for scorers
        metavar="FRACTION",
        help="kept fraction for scorers",
    )
    paper = g.add_mutually_exclusive_group()
    cs, cs_paper = CSConfig(), CSConfig.paper()
    paper.add_argument(
        "--loss", metavar="NAME",
        help="what a CS subnetwork must do besides being sparse: both = keep the unit's "
        "activation on its cluster and silence it on the others; preserve = the first alone; "
        f"separate = the paper's BCE; or a CS loss registered by --import (default: {cs.loss})",
    )  # fmt: skip
    drops = " and ".join(str(m) for m in cs_paper.milestones)
    paper.add_argument(
        "--paper", action="store_true",
        help=f"the paper's CS settings (CSConfig.paper(): loss {cs_paper.loss}, "
        f"{cs_paper.epochs} epochs, lr {cs_paper.lr} with drops at epochs {drops}, ...); "
        "--epochs still applies, the drops scaled to it",
    )  # fmt: skip
    g.add_argument(
        "--epochs", type=_int(2), metavar="N",
        help=f"Continuous Sparsification epochs (default: {cs.epochs}, or {cs_paper.epochs} "
        "with --paper)",
    )  # fmt: skip
    g.add_argument(
        "--held-out", type=_fraction(one=False), default=_default(study, "held_out"),
        metavar="FRACTION",
        help="fraction of each cluster's images kept aside to evaluate the subnetworks",
    )  # fmt: skip
    _seed(
        g,
        "held-out split, CS batches, Random; and the random weights of a torchvision model "
        "without --weights",
        study,
    )
    g = st.add_argument_group("report")
    g.add_argument("--out", default="polyprune-study", metavar="DIR", help="report directory")
    _force(g, "study")
    g.add_argument(
        "--crops-per-cluster", type=_int(0), metavar="N",
        default=_default(StudyResult.save, "crops_per_cluster"),
        help="top images shown for each cluster",
    )  # fmt: skip
    g.add_argument(
        "--visualize", action="store_true",
        help="feature visualizations of the unit before and under each CS subnetwork",
    )  # fmt: skip
    _run_options(st)
    return st


def _scan(sub: Any) -> argparse.ArgumentParser:
    sc: argparse.ArgumentParser = sub.add_parser(
        "scan", help="rank every channel of whole layers by how polysemantic it is",
        description=_wrap("Rank every channel of whole layers by how polysemantic it is, in one "
        "pass over the data; writes a table and a report."),
        epilog="example:\n  polyprune scan --model zoo:planted --layer features.6 --data "
        "images/ --k 300 --out scan/\n  torchrun --nproc-per-node 2 -m polyprune scan ...   "
        "# the same, on 2 processes",
        formatter_class=_Help,
    )  # fmt: skip
    _model_options(sc)
    _seed(sc, "the random weights of a torchvision model without --weights", scan)
    sc.add_argument(
        "--layer", required=True, nargs="+", metavar="LAYER",
        help="module name(s), e.g. features.10",
    )  # fmt: skip
    _data_options(sc, " per channel", scan)
    _cluster_options(sc, scan)
    g = sc.add_argument_group("report")
    g.add_argument("--out", default="polyprune-scan", metavar="DIR", help="report directory")
    _force(g, "scan")
    g.add_argument(
        "--crops", type=_int(0), default=_default(Scan.save, "crops"), metavar="N",
        help="crop grids of the N most polysemantic channels",
    )  # fmt: skip
    g.add_argument(
        "--show", type=_int(0), default=_default(Scan.summary, "n"), metavar="N",
        help="channels printed",
    )  # fmt: skip
    _run_options(sc)
    return sc


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``polyprune`` and its commands (``args.command`` names the command)."""
    from .. import __version__

    parser = _Parser(prog="polyprune", description=_DESCRIPTION, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"polyprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="run the study on the shipped zoo models (under a minute on 2 cores)",
        description=_wrap("Run the study on the shipped zoo models and write one report each."),
        epilog="example:\n  polyprune demo --out polyprune-demo/", formatter_class=_Help,
    )  # fmt: skip
    demo.add_argument("--out", default="polyprune-demo", metavar="DIR", help="report directory")
    _force(demo, "demo")
    demo.add_argument("-q", "--quiet", action="count", default=0, help=_QUIET)
    _study(sub)
    _scan(sub)
    report = sub.add_parser(
        "report", help="write the report of a saved study or scan again and print its summary",
        description=_wrap("Read a study or scan saved by `polyprune study`/`scan` (or "
        "StudyResult.save / Scan.save), write its report again (in place, or to --out) and "
        "print its summary."),
        epilog="example:\n  polyprune report study/\n  polyprune report scan/ --data images/ "
        "--out scan-again/",
        formatter_class=_Help,
    )  # fmt: skip
    report.add_argument("directory", metavar="DIR", help="a saved study or scan")
    report.add_argument("--out", metavar="DIR", help="write the report there (default: DIR)")
    _force(report, "study or scan")
    report.add_argument(
        "--crops-per-cluster", type=_int(0), metavar="N",
        help="studies: top images shown for each cluster (at most those the study kept; "
        f"default {_default(StudyResult.save, 'crops_per_cluster')})",
    )  # fmt: skip
    report.add_argument(
        "--data", metavar="FOLDER",
        help="scans: the folder the scan read, to draw the crop grids again",
    )  # fmt: skip
    report.add_argument(
        "--crops", type=_int(0), metavar="N",
        help="scans: crop grids of the N most polysemantic channels (default "
        f"{_default(Scan.save, 'crops')}; needs --data)",
    )  # fmt: skip
    report.add_argument(
        "--show", type=_int(0), default=_default(Scan.summary, "n"), metavar="N",
        help="scans: rows printed",
    )  # fmt: skip
    return parser


def exit_code(exc: SystemExit) -> int:
    """The status of an ``argparse`` exit (``--help``: 0, a bad argument: 2)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
