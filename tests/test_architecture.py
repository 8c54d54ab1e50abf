"""The layers contract covers every module, fails on an import that breaks a layer, and the
architecture figure is drawn from it; public modules import no private names of other modules."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
from helpers import ROOT, load_script
from PIL import Image

import polyprune


def test_every_module_is_in_exactly_one_layer():
    figure = load_script("docs/_figures/architecture.py")
    listed = [m for layer in figure.layers() for m in layer]
    assert len(listed) == len(set(listed))
    modules = {m.name for m in pkgutil.iter_modules(polyprune.__path__)} - {"__main__"}
    assert set(listed) == modules, "add new modules to [tool.importlinter] in pyproject.toml"


def test_the_figure_is_drawn_from_the_contract(tmp_path):
    figure = load_script("docs/_figures/architecture.py")
    assert len(figure.layers()) == len(figure.NAMES)
    out = figure.draw(tmp_path / "architecture.png")
    assert out.stat().st_size > 10_000
    assert Image.open(out).info["Description"] == figure.description()
    shipped = Image.open(ROOT / "docs/img/architecture.png").info.get("Description")
    assert shipped == figure.description(), (
        "docs/img/architecture.png is stale: run python docs/_figures/architecture.py"
    )


def test_the_architecture_page_lists_every_module_of_the_contract():
    figure = load_script("docs/_figures/architecture.py")
    page = (ROOT / "docs/architecture.md").read_text()
    rows = "\n".join(line for line in page.splitlines() if line.startswith("| "))
    table = set(re.findall(r"`([\w/]+)`", rows))  # the modules column, and code in the others
    missing = [m for layer in figure.layers() for m in layer if not {m, f"{m}/"} & table]
    assert not missing, f"add to the table of docs/architecture.md: {missing}"


def _private_names_imported(path: Path, package: Path) -> list[str]:
    """``module.name`` for every private name (``_x``) that ``path`` imports from another module
    of polyprune (private *modules* are the package's internals; private *names* are not)."""
    found = []
    here = path.relative_to(package.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0 and not (node.module or "").startswith("polyprune"):
            continue
        base = here[: len(here) - node.level] if node.level else ()
        source = ".".join((*base, *(node.module.split(".") if node.module else ())))
        for alias in node.names:
            child = f"{source}.{alias.name}"
            is_module = (package.parent / Path(*child.split("."))).with_suffix(".py").exists() or (
                package.parent / Path(*child.split("."))
            ).is_dir()
            if alias.name.startswith("_") and not alias.name.startswith("__") and not is_module:
                found.append(f"{source}.{alias.name}")
    return found


def test_public_modules_import_no_private_names_of_other_modules():
    package = Path(polyprune.__file__).parent
    public = [
        p
        for p in package.rglob("*.py")
        if not any(part.startswith("_") for part in p.relative_to(package).parts[:-1])
        and not (p.name.startswith("_") and p.name not in ("__init__.py", "__main__.py"))
    ]
    assert len(public) > 15
    offenders = {str(p.relative_to(package)): _private_names_imported(p, package) for p in public}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_private_name_check_finds_one(tmp_path):
    package = tmp_path / "polyprune"
    package.mkdir()
    for name in ("clustering.py", "_validate.py"):
        (package / name).write_text("")
    (package / "probe.py").write_text(
        "from .clustering import _check, cluster\nfrom . import _validate\n"
        "from polyprune.clustering import _other\n"
    )
    found = _private_names_imported(package / "probe.py", package)
    assert found == ["polyprune.clustering._check", "polyprune.clustering._other"]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the polyprune package under ``root`` with the repository's contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = [f'root_package = "{config["root_package"]}"', "exclude_type_checking_imports = true"]
    for contract in config["contracts"]:
        lines += ["", "[[tool.importlinter.contracts]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items()]
    (root / "pyproject.toml").write_text("[tool.importlinter]\n" + "\n".join(lines) + "\n")
    tool = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(tool), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_contract_fails_on_an_import_that_breaks_a_layer(tmp_path):
    shutil.copytree(
        Path(polyprune.__file__).parent, tmp_path / "polyprune",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    kept = _lint(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    # a core type importing a pipeline (upwards), and one method importing a sibling method
    with (tmp_path / "polyprune/targets.py").open("a") as f:
        f.write("\nfrom . import study  # deliberately breaks the layers\n")
    with (tmp_path / "polyprune/scoring/snip.py").open("a") as f:
        f.write("\nfrom ..clustering import cluster  # deliberately couples two siblings\n")
    broken = _lint(tmp_path)
    out = broken.stdout + broken.stderr
    assert broken.returncode != 0 and "BROKEN" in out, out
    assert "polyprune.targets -> polyprune.study" in out
    assert "polyprune.scoring.snip -> polyprune.clustering" in out
