"""Command line: ``polyprune demo``, ``polyprune study`` and ``polyprune scan``.

Bad arguments end with a one-line ``polyprune: error: ...`` message and exit status 2, never a
traceback.

``scan`` and ``study`` run on several processes when launched by ``torchrun`` (which sets
``RANK`` and ``WORLD_SIZE``): the command initializes the process group itself — ``gloo`` with
``--device cpu`` (the default), ``nccl`` with ``--device cuda`` (each rank on GPU
``LOCAL_RANK``) — shards the data over the ranks, and only rank 0 prints and writes the report::

    torchrun --nproc-per-node 2 -m polyprune scan --model zoo:planted --layer features.6 \
        --data images/ --k 100
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._cs.config import CSConfig

__all__ = ["main"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _torchvision_model(name: str, weights: str | None) -> nn.Module:
    import torchvision

    try:
        model: nn.Module = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        valid = ", ".join(sorted(torchvision.models.list_models(torchvision.models)))
        raise CLIError(f"unknown torchvision model {name!r}; valid: {valid}") from exc
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CLIError(f"weights file not found: {weights}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CLIError(f"weights in {weights} do not fit torchvision:{name}: {first}") from exc
    return model.eval()


def load_model(spec: str, weights: str | None) -> tuple[nn.Module, int, bool]:
    """``(model, input size, imagenet normalization)`` for ``torchvision:NAME`` or ``zoo:NAME``."""
    source, _, name = spec.partition(":")
    if source == "torchvision" and name:
        return _torchvision_model(name, weights), 224, True
    if source == "zoo" and name:
        from . import zoo

        if name == "planted":
            return zoo.planted_network()[0].eval(), zoo.PLANTED_SIZE, False
        try:
            card = zoo.model_card(name)
        except ValueError as exc:
            raise CLIError(str(exc).splitlines()[0]) from exc
        return zoo.load(name), int(card.input_shape[1]), False
    raise CLIError(f"--model must be torchvision:NAME or zoo:NAME, got {spec!r}")


def _image_folder(root: str, size: int, normalize: bool, channels: int) -> Any:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    path = Path(root)
    if not path.is_dir():
        raise CLIError(f"--data must be an ImageFolder directory, not found: {root}")
    steps: list[Any] = [T.Resize(size), T.CenterCrop(size)]
    if channels == 1:
        steps.append(T.Grayscale(1))
    steps.append(T.ToTensor())
    if normalize:
        steps.append(T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD))
    try:
        return ImageFolder(str(path), transform=T.Compose(steps))
    except (FileNotFoundError, RuntimeError) as exc:
        raise CLIError(f"cannot read images from {root}: {exc}") from exc


def import_plugins(modules: Sequence[str]) -> None:
    """Import the user's modules (``--import``): their scorers register by name on import."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise CLIError(f"--import {name}: {exc}") from exc


def _launched() -> bool:
    """Whether ``torchrun`` (or another launcher) started this process as one of several."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Initialize ``torch.distributed`` when launched by torchrun and not yet initialized:
    ``gloo`` on the CPU, ``nccl`` for ``--device cuda`` (rank on GPU ``LOCAL_RANK``);
    destroyed on exit. Otherwise nothing."""
    import torch.distributed as dist

    from ._dist import timeout

    if not _launched() or not dist.is_available() or dist.is_initialized():
        yield
        return
    if device == "cuda":
        if not torch.cuda.is_available():
            raise CLIError("--device cuda: CUDA is not available here")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timeout())
    try:
        yield
    finally:
        dist.destroy_process_group()


def _setup(args: argparse.Namespace) -> tuple[nn.Module, int, bool]:
    """Plugins, threads, the model on its device: ``(model, image size, normalize)``."""
    import_plugins(args.imports)
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be ≥ 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available here")
    model, size, normalize = load_model(args.model, args.weights)
    if args.device == "cuda":
        model = model.to(f"cuda:{torch.cuda.current_device()}")
    return model, size, normalize


def cmd_study(args: argparse.Namespace) -> int:
    from . import study
    from ._dist import DistributedError, is_main
    from ._model import first_in_channels
    from .targets import Unit

    model, size, normalize = _setup(args)
    try:
        unit = Unit(args.layer, args.unit).validate(model)  # unknown layers: closest names
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    data = _image_folder(args.data, args.image_size or size, normalize, first_in_channels(model))
    if len(data) < args.k:
        raise CLIError(f"--k {args.k} is larger than the {len(data)} images in {args.data}")
    try:
        result = study(
            model, unit, data, k=args.k, methods=args.methods, keep=args.keep,
            cs=CSConfig(epochs=args.epochs), visualize=args.visualize, seed=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
    except (ValueError, DistributedError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from exc
    report = result.save(args.out)
    if is_main():
        print(result.summary())
        print(f"report: {report}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from ._dist import DistributedError, is_main
    from ._model import first_in_channels
    from .scan import scan

    model, size, normalize = _setup(args)
    if args.crops < 0:
        raise CLIError(f"--crops must be ≥ 0, got {args.crops}")
    data = _image_folder(args.data, args.image_size or size, normalize, first_in_channels(model))
    if len(data) < args.k:
        raise CLIError(f"--k {args.k} is larger than the {len(data)} images in {args.data}")
    try:
        result = scan(
            model, args.layer, data, k=args.k, batch_size=args.batch_size, workers=args.workers,
            min_cluster_size=args.min_cluster_size, progress=not args.quiet,
        )  # fmt: skip
    except (ValueError, TypeError, DistributedError) as exc:
        raise CLIError(str(exc).splitlines()[0]) from exc
    report = result.save(args.out, data, crops=args.crops)
    if is_main():
        print(result.summary(args.show))
        print(f"report: {report}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    start = time.perf_counter()
    report = run_demo(Path(args.out), progress=not args.quiet)
    print(f"report: {report}  ({time.perf_counter() - start:.0f} s)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    """Options that study and scan share."""
    p.add_argument("--model", required=True, help="torchvision:NAME or zoo:NAME")
    p.add_argument("--weights", help="state_dict file for a torchvision model")
    p.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a Python module first (its scorers register by name); repeatable",
    )  # fmt: skip
    p.add_argument("--image-size", type=int, help="resize/crop images to this size")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="where the model runs; under torchrun: gloo for cpu, nccl for cuda",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyprune",
        description="Find polysemantic units in CNNs and cut out one subnetwork per meaning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the study on the shipped zoo models")
    demo.add_argument("--out", default="polyprune-demo", help="report directory")
    demo.add_argument("--quiet", action="store_true", help="no progress output")
    demo.set_defaults(func=cmd_demo)
    st = sub.add_parser("study", help="study one unit of a model on an ImageFolder")
    _common(st)
    st.add_argument("--layer", required=True, help="module name, e.g. features.10")
    st.add_argument("--unit", required=True, type=int, help="channel of the layer")
    st.add_argument("--data", required=True, help="ImageFolder directory")
    st.add_argument("--out", default="polyprune-study", help="report directory")
    st.add_argument("--k", type=int, default=1000, help="top activating crops (default 1000)")
    st.add_argument(
        "--methods", nargs="+", default=["cs", "actgrad", "snip", "force"],
        help="'cs' and scorer names (registered scorers; see --import)",
    )  # fmt: skip
    st.add_argument("--keep", type=float, default=0.05, help="kept fraction for scorers")
    st.add_argument(
        "--epochs", type=int, default=CSConfig().epochs, help="Continuous Sparsification epochs"
    )
    st.add_argument("--visualize", action="store_true", help="feature visualizations")
    st.add_argument("--seed", type=int, default=0)
    st.set_defaults(func=cmd_study)
    sc = sub.add_parser("scan", help="rank every channel of whole layers by how polysemantic it is")
    _common(sc)
    sc.add_argument("--layer", required=True, nargs="+", help="module name(s), e.g. features.10")
    sc.add_argument("--data", required=True, help="ImageFolder directory")
    sc.add_argument("--out", default="polyprune-scan", help="report directory")
    sc.add_argument("--k", type=int, default=1000, help="top items per channel (default 1000)")
    sc.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    sc.add_argument("--workers", type=int, default=0, help="image loader processes")
    sc.add_argument("--min-cluster-size", type=int, help="HDBSCAN's (default: 5%% of k)")
    sc.add_argument("--crops", type=int, default=4, help="crop grids in the report (default 4)")
    sc.add_argument("--show", type=int, default=10, help="channels printed (default 10)")
    sc.set_defaults(func=cmd_scan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polyprune`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with process_group(getattr(args, "device", "cpu")):
            code: int = args.func(args)
    except CLIError as exc:
        rank = os.environ.get("RANK") if _launched() else None
        where = f" (rank {rank})" if rank is not None and os.environ["WORLD_SIZE"] != "1" else ""
        print(f"polyprune: error{where}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
