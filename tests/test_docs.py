"""The documentation cannot rot: every Python block of README.md and docs/*.md runs, and prints
what it says.

Blocks of one page run in order in one namespace, in a temporary directory. A trailing comment
on a print line is the output it prints: ``print(x)  # expected`` must print exactly
``expected`` (write other remarks on their own line). Blocks in other languages (``bash``,
``text``) are not run. The API page must be the one ``docs/_tools/api_page.py`` generates.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from helpers import ROOT, load_script

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_PRINT = re.compile(r"^(\s*)print\((.*)\)\s*#\s*(.+?)\s*$")


def python_blocks(text: str) -> list[str]:
    """The fenced ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _checked(block: str) -> str:
    """The block with every ``print(...)  # expected`` turned into a checked print."""
    lines = []
    for line in block.splitlines():
        match = _PRINT.match(line)
        if match:
            indent, args, expected = match.groups()
            line = f"{indent}__expect({expected!r}, {args})"
        lines.append(line)
    return "\n".join(lines)


def _expect(expected: str, *values: object) -> None:
    out = io.StringIO()
    print(*values, file=out)
    printed = out.getvalue().strip()
    assert printed == expected, f"printed {printed!r}, the page says {expected!r}"


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p.read_text())], ids=str)
def test_every_python_block_runs_and_prints_what_it_says(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__expect": _expect, "__name__": "__docs__"}
    for number, block in enumerate(python_blocks(page.read_text())):
        code = compile(_checked(block), f"{page.name} block {number + 1}", "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)  # our own documentation


def test_the_checker_catches_a_wrong_comment():
    namespace: dict[str, object] = {"__expect": _expect}
    with pytest.raises(AssertionError, match="printed '3', the page says '4'"):
        exec(compile(_checked("print(1 + 2)  # 4"), "x", "exec"), namespace)


def test_the_api_page_is_current():
    generator = load_script("docs/_tools/api_page.py")
    assert (ROOT / "docs" / "api.md").read_text() == generator.render(), (
        "docs/api.md is stale: run python docs/_tools/api_page.py"
    )


def test_the_api_page_lists_every_public_name():
    generator = load_script("docs/_tools/api_page.py")
    text = (ROOT / "docs" / "api.md").read_text()
    for module, names in generator.public_names().items():
        for name in names:
            assert f"`{module}.{name}`" in text, f"{module}.{name} is missing"
