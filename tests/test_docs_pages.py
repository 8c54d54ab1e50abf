"""The docs read on GitHub and on the site alike: every relative link resolves, the reference
pages cover every public name, and the pages that are mostly mkdocs directives say so on GitHub.

Anchors follow GitHub's rules (github-slugger): the heading's rendered text in lower case, without
punctuation except ``-`` and ``_``, spaces turned into ``-``, a repeated heading suffixed ``-1``,
``-2``, ... mkdocs' ``toc`` gives the same slugs for these pages (``mkdocs build --strict``
checks the site's anchors too: ``validation: anchors: warn`` in mkdocs.yml).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from helpers import ROOT, load_script

PAGES = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if not p.name.startswith("_")),
]
REFERENCE = sorted((ROOT / "docs" / "reference").glob("*.md"))
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)=["']([^"']+)["']""")
_DIRECTIVE = re.compile(r"^::: ([\w.]+)$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (their brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings on GitHub (plus explicit ``id=``/``name=`` ones)."""
    text = _FENCE.sub("", page.read_text())
    found: set[str] = set(re.findall(r"""<a\b[^>]*\b(?:id|name)=["']([^"']+)["']""", text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, flags=re.M):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(f"{slug}-{count}" if count else slug)
    return found


def links(page: Path) -> list[str]:
    """Every link target of ``page`` (Markdown and HTML), outside code."""
    text = _prose(page.read_text())
    return _LINK.findall(text) + _HTML_LINK.findall(text)


def test_github_slugs():
    assert github_slug("The study") == "the-study"
    assert github_slug("`polyprune.receptive_field`") == "polyprunereceptive_field"
    assert github_slug("Ground truth: `polyprune.zoo` (and **cards**)") == (
        "ground-truth-polyprunezoo-and-cards"
    )
    assert github_slug("[Unreleased] — 0.3.0.dev0") == "unreleased--030dev0"


def test_link_finder_skips_code(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        '[a](x.md#b) `[c](d.md)`\n```\n[e](f.md)\n```\n![g](img/h.png "t") <a href="i.md">i</a>\n'
    )
    assert links(page) == ["x.md#b", "img/h.png", "i.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_on_github(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_figure_in_docs_img_is_shown_on_a_page():
    shown = {(p.parent / t.partition("#")[0]).resolve() for p in PAGES for t in links(p)}
    orphans = sorted(f.name for f in (ROOT / "docs" / "img").iterdir() if f.resolve() not in shown)
    assert not orphans, f"figures no page shows (stale? remove them or show them): {orphans}"


def _resolve(dotted: str) -> object:
    """What a ``::: dotted.path`` directive documents: a module if one has that path (as griffe
    reads it), else the attribute of its parent."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        parent, _, name = dotted.rpartition(".")
        return getattr(_resolve(parent), name)


def test_the_reference_pages_document_every_public_name():
    paths = [d for page in REFERENCE for d in _DIRECTIVE.findall(page.read_text())]
    documented = {id(_resolve(d)) for d in paths}
    generator = load_script("docs/_tools/api_page.py")
    missing = []
    for module, names in generator.public_names().items():
        for name in names:
            obj = getattr(importlib.import_module(module), name)
            if name.startswith("_"):
                continue
            named = inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)
            if not (id(obj) in documented if named else f"{module}.{name}" in paths):
                missing.append(f"{module}.{name}")
    assert not missing, f"add to a page of docs/reference/: {missing}"


def test_the_reference_index_links_every_reference_page():
    index = links(ROOT / "docs" / "reference.md")
    assert sorted(f"reference/{p.name}" for p in REFERENCE) == sorted(
        t for t in index if t.startswith("reference/")
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_page_of_directives_says_on_github_what_it_is(page: Path):
    """GitHub shows ``::: name`` and ``--8<--`` lines as they are: such a page opens (before its
    first directive) with a block the site leaves out, linking to what to read instead."""
    text = page.read_text()
    first = re.search(r"^(::: |--8<-- )", text, flags=re.M)
    if first is None:
        return
    hooks = load_script("docs/_tools/mkdocs_hooks.py")
    block = hooks.GITHUB_ONLY.search(text[: first.start()])
    assert block is not None, "no <!-- github-only --> block before the first directive"
    assert _LINK.search(block.group()), "the github-only block links to nothing"


def test_the_site_leaves_out_github_only_blocks_and_shows_roles_as_code():
    hooks = load_script("docs/_tools/mkdocs_hooks.py")
    page = "a\n\n<!-- github-only -->\n> [x](../x.py)\n<!-- /github-only -->\n\n::: b\n"
    assert hooks.on_page_markdown(page) == "a\n\n\n::: b\n"
    content = (
        "see :meth:<code>measure</code>, :class:<code>~polyprune.results.Scan</code>, "
        ":func:<code>the verb &lt;polyprune.study&gt;</code> and :data:<code>a.B</code>"
        "<td><code>:data:`~a.CONCEPTS`</code></td><p>each::</p><p>a::b</p><p>(x)::</p>"
    )
    assert hooks.on_page_content(content) == (
        "see <code>measure</code>, <code>Scan</code>, <code>the verb</code> and <code>a.B</code>"
        "<td><code>CONCEPTS</code></td><p>each:</p><p>a::b</p><p>(x):</p>"
    )
