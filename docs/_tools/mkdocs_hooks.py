"""mkdocs hooks (``hooks:`` in mkdocs.yml): what the built site shows differently from GitHub.

- A block between ``<!-- github-only -->`` and ``<!-- /github-only -->`` is for readers of the
  Markdown file on GitHub (links to source files, which are not part of the site): the site
  leaves it out.
- Docstrings use reStructuredText roles (``:func:`cluster```) and literal-block markers
  (``example::``), which ``help()`` and IDEs read as they are; the site shows a role as plain
  code (`cluster`, the last dotted part for ``~a.b.C``) and ``::`` as ``:``.
"""

from __future__ import annotations

import html
import re
from typing import Any

GITHUB_ONLY = re.compile(r"^<!-- github-only -->\n.*?^<!-- /github-only -->\n?", re.M | re.S)
_ROLES = "meth|class|func|attr|mod|data|exc|obj|ref"
_ROLE = re.compile(rf":(?:{_ROLES}):<code>([^<]*)</code>")  # rendered from Markdown
_RAW_ROLE = re.compile(rf":(?:{_ROLES}):`([^`<]*)`")  # verbatim, as in a table's default column
_LITERAL = re.compile(r"(\S)::</p>")  # reST's "text::" before a literal block


def _name(text: str) -> str:
    """What a role shows: ``title`` of ``title <target>``, ``C`` of ``~a.b.C``, else ``text``."""
    text = html.unescape(text)
    titled = re.fullmatch(r"(.*?)\s*<[^>]*>", text)  # :func:`title <target>`
    if titled:
        return titled.group(1)
    return text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text


def strip_roles(content: str) -> str:
    """``:func:<code>~a.b</code>`` in rendered HTML → ``<code>b</code>`` (a verbatim
    ``:data:`X``` → ``X``), and a paragraph's closing ``::`` → ``:``."""
    content = _ROLE.sub(lambda m: f"<code>{html.escape(_name(m[1]), quote=False)}</code>", content)
    content = _RAW_ROLE.sub(lambda m: html.escape(_name(m[1]), quote=False), content)
    return _LITERAL.sub(r"\1:</p>", content)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return GITHUB_ONLY.sub("", markdown)


def on_page_content(html: str, **kwargs: Any) -> str:
    return strip_roles(html)
