"""Private (cli): the commands ``demo``, ``study``, ``scan`` and ``report``.

Each checks what it was given — output directory, model name and weights file, image folder,
plugins and methods — before it loads the model, and the model-dependent rest (layer, unit,
position, number of images) before it reads an image.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import MANIFEST, read_manifest
from ..sparsify import CSConfig
from ._errors import CLIError, first_line
from ._inputs import (
    check_model,
    image_transform,
    import_plugins,
    load_model,
    open_images,
    output_directory,
)
from ._weights import Pretrained, weights_provenance

__all__ = ["COMMANDS", "cs_config"]


def _first(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    return first_line(exc) or type(exc).__name__


def _prepare(args: argparse.Namespace) -> tuple[Path, Any]:
    """What study and scan check before any work: ``(output directory, images without a
    transform)``; plugins imported, threads set."""
    out = output_directory(
        args.out, args.command, force=args.force, protect=[("--data", args.data)]
    )
    args.found = check_model(args.model, args.weights)[2]
    if args.min_cluster_size is not None and args.min_cluster_size > args.k:
        raise CLIError(f"--min-cluster-size {args.min_cluster_size} is larger than --k {args.k}")
    import_plugins(args.imports)
    images = open_images(args.data)
    if len(images) < args.k:
        raise CLIError(f"--k {args.k} is larger than the {len(images)} images in {args.data}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return out, images


def _model(args: argparse.Namespace, images: Any) -> tuple[nn.Module, int]:
    """``(model on --device, image size)``, the size ``--image-size`` if given; ``images`` get
    the model's transform (that size, its normalization, its input channels)."""
    from .._model import first_in_channels

    model, size, normalize = load_model(args.model, args.weights, args.seed)
    if args.device == "cuda":
        model = model.to(f"cuda:{torch.cuda.current_device()}")
    size = args.image_size or size
    images.transform = image_transform(size, normalize, first_in_channels(model))
    return model, size


def _record_weights(args: argparse.Namespace, provenance: dict[str, Any]) -> None:
    """Where a torchvision model's weights came from, in the provenance: the file (path and
    SHA-256, and torchvision's name of pretrained weights), or the seed of random weights."""
    found = getattr(args, "found", None)
    if isinstance(found, Pretrained):
        provenance["weights"] = weights_provenance(found.file, found.name)
    elif found is not None:
        provenance["weights"] = weights_provenance(found)
    elif args.model.startswith(("torchvision:", "timm:")):
        provenance["weights"] = {"random": True, "seed": args.seed}


def _clustering(args: argparse.Namespace) -> dict[str, Any]:
    """``cluster_options`` of study and scan."""
    return {
        "standardize": args.standardize,
        "min_samples": args.min_samples,
        "cluster_selection_method": args.cluster_selection_method,
    }


def cs_config(args: argparse.Namespace) -> CSConfig:
    """``--loss``/``--paper`` and ``--epochs`` as a :class:`CSConfig`. With ``--paper`` and
    ``--epochs N`` the paper's learning-rate drops (epochs 130 and 150 of 160) move to the
    same fractions of ``N``."""
    if not args.paper:
        changes: dict[str, Any] = {}  # CSConfig's defaults for what was not given
        if args.loss is not None:
            changes["loss"] = args.loss
        if args.epochs is not None:
            changes["epochs"] = args.epochs
        return CSConfig(**changes)
    paper = CSConfig.paper()
    if args.epochs is None:
        return paper
    drops = {round(m * args.epochs / paper.epochs) for m in paper.milestones}
    return paper.replace(
        epochs=args.epochs, milestones=tuple(sorted(m for m in drops if 0 < m < args.epochs))
    )


def cmd_study(args: argparse.Namespace) -> int:
    """``polyprune study``: one unit end to end, its report written to ``--out``."""
    from .._dist import DistributedError, is_main
    from ..study import study
    from ..subnetwork import named_method
    from ..targets import Unit

    out, images = _prepare(args)
    try:  # the plugins (--import) are loaded: their methods and CS losses are registered
        cs = cs_config(args)
        for method in args.methods:
            named_method("--methods", method, progress=False)
        position = None if args.position is None else (args.position[0], args.position[1])
        unit = Unit(args.layer, args.unit, position)
    except (ValueError, TypeError) as exc:
        raise CLIError(_first(exc)) from exc
    model, size = _model(args, images)
    try:  # unknown layers: the closest names; a position: checked on the map of size×size
        unit.validate(model, None if position is None else (size, size))
    except (ValueError, TypeError) as exc:
        raise CLIError(_first(exc)) from exc
    try:
        result = study(
            model, unit, images, k=args.k, methods=args.methods, keep=args.keep,
            held_out=args.held_out, crop=args.crop, batch_size=args.batch_size,
            workers=args.workers, min_cluster_size=args.min_cluster_size,
            cluster_options=_clustering(args), alpha=args.alpha, config=cs,
            visualize=args.visualize, seed=args.seed, progress=args.quiet < 2,
        )  # fmt: skip
    except (ValueError, DistributedError) as exc:
        raise CLIError(_first(exc)) from exc
    _record_weights(args, result.provenance)
    report = result.save(out, crops_per_cluster=args.crops_per_cluster, overwrite=args.force)
    if is_main():
        print(result.summary())
        print(f"report: {report}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """``polyprune scan``: every channel of the layers ranked, the report written to ``--out``."""
    from .._dist import DistributedError, is_main
    from ..scan import scan

    out, images = _prepare(args)
    model, _ = _model(args, images)
    try:
        result = scan(
            model, args.layer, images, k=args.k, crop=args.crop, batch_size=args.batch_size,
            workers=args.workers, min_cluster_size=args.min_cluster_size,
            cluster_options=_clustering(args), alpha=args.alpha, seed=args.seed,
            progress=args.quiet < 2,
        )  # fmt: skip
    except (ValueError, TypeError, DistributedError) as exc:
        raise CLIError(_first(exc)) from exc
    _record_weights(args, result.provenance)
    report = result.save(out, images, crops=args.crops, overwrite=args.force)
    if is_main():
        print(result.summary(args.show))
        print(f"report: {report}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``polyprune demo``: the study on every shipped zoo case."""
    from .._demo import run_demo

    out = output_directory(args.out, "demo", force=args.force)
    start = time.perf_counter()
    report = run_demo(out, progress=args.quiet < 2, overwrite=args.force)
    print(f"report: {report}  ({time.perf_counter() - start:.0f} s)")
    return 0


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line (not None): the others keep the library's
    defaults, which the command line does not repeat."""
    return {name: value for name, value in options.items() if value is not None}


def _saved_kind(directory: Path) -> str:
    """``"study"`` or ``"scan"``: what :meth:`StudyResult.save` or :meth:`Scan.save` left in
    ``directory``."""
    if not directory.exists():
        raise CLIError(f"{directory} not found")
    if not directory.is_dir():
        raise CLIError(f"{directory} is not a directory (give the folder of a saved study or scan)")
    if (directory / "study.pt").is_file():
        return "study"
    if (directory / "scan.json").is_file() and (directory / "scan.pt").is_file():
        return "scan"
    raise CLIError(f"{directory} holds no saved study (study.pt) or scan (scan.json and scan.pt)")


def cmd_report(args: argparse.Namespace) -> int:
    """``polyprune report``: a saved study's or scan's report written again, its summary printed."""
    from .._scan_result import Scan
    from .._study_result import StudyResult

    source = Path(args.directory)
    kind = _saved_kind(source)
    if kind == "study":
        given = [flag for flag, value in (("--data", args.data), ("--crops", args.crops)) if value]
        if given:
            raise CLIError(f"{' and '.join(given)}: for scans; {source} holds a study")
        try:
            result = StudyResult.load(source)
        except ValueError as exc:
            raise CLIError(_first(exc)) from exc
        out, force = _report_directory(args, source, kind)
        per_cluster = _given(crops_per_cluster=args.crops_per_cluster)
        report = result.save(out, overwrite=force, **per_cluster)
        print(result.summary())
    else:
        if args.crops_per_cluster is not None:
            raise CLIError(f"--crops-per-cluster: for studies; {source} holds a scan (see --crops)")
        try:
            saved = Scan.load(source)
        except (ValueError, KeyError) as exc:
            raise CLIError(f"{source} holds a damaged scan: {_first(exc)}") from exc
        data = None if args.data is None else _scanned_images(saved, args.data)
        if args.crops and data is None:
            raise CLIError("--crops: the crop grids need the scanned images, give --data FOLDER")
        out, force = _report_directory(args, source, kind)
        report = saved.save(out, data, overwrite=force, **_given(crops=args.crops))
        print(saved.summary(args.show))
        if data is None:
            print("(no crop grids: give --data FOLDER, the images the scan read, to draw them)")
    print(f"report: {report}")
    return 0


def _report_directory(args: argparse.Namespace, source: Path, kind: str) -> tuple[Path, bool]:
    """``(where report writes, whether it may replace what is there)``: ``source`` itself
    (written again in place, as asked) without ``--out``, else ``--out`` as for study/scan."""
    data = [] if args.data is None else [("--data", args.data)]
    if args.out is None or Path(args.out).resolve() == source.resolve():
        if read_manifest(source) is None:
            raise CLIError(
                f"{source} has no {MANIFEST} (saved by polyprune before 0.3, or not by "
                "polyprune): give --out a new directory for its report"
            )
        return output_directory(os.fspath(source), kind, force=True, protect=data), True
    saved = ("saved", os.fspath(source))
    out = output_directory(args.out, kind, force=args.force, protect=[*data, saved])
    return out, args.force


def _scanned_images(saved: Any, folder: str) -> Any:
    """The images of ``folder`` at the scanned size, for a scan's crop grids (shown, so not
    normalized)."""
    shape = saved.config.get("input_shape")
    if not shape or len(shape) != 3:
        raise CLIError("this scan did not record the size of its images: cannot crop --data")
    images = open_images(folder)
    if len(images) != saved.config.get("items"):
        raise CLIError(
            f"--data {folder} has {len(images)} images, the scan read {saved.config.get('items')}:"
            " give the folder the scan read"
        )
    images.transform = image_transform((int(shape[1]), int(shape[2])), False, int(shape[0]))
    return images


COMMANDS = {"demo": cmd_demo, "study": cmd_study, "scan": cmd_scan, "report": cmd_report}
