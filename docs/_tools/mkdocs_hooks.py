"""mkdocs hooks (``hooks:`` in mkdocs.yml): what the built site shows differently from GitHub.

- A block between ``<!-- github-only -->`` and ``<!-- /github-only -->`` is for readers of the
  Markdown file on GitHub (links to source files, which are not part of the site): the site
  leaves it out.
- Docstrings use reStructuredText roles (``:func:`cluster```), which ``help()`` and IDEs read as
  they are; the site shows them as plain code (`cluster`), the last dotted part for ``~a.b.C``.
"""

from __future__ import annotations

import html
import re
from typing import Any

GITHUB_ONLY = re.compile(r"^<!-- github-only -->\n.*?^<!-- /github-only -->\n?", re.M | re.S)
_ROLE = re.compile(r":(?:meth|class|func|attr|mod|data|exc|obj|ref):<code>([^<]*)</code>")


def _role(match: re.Match[str]) -> str:
    text = html.unescape(match.group(1))
    titled = re.fullmatch(r"(.*?)\s*<[^>]*>", text)  # :func:`title <target>`
    if titled:
        text = titled.group(1)
    elif text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return f"<code>{html.escape(text, quote=False)}</code>"


def strip_roles(content: str) -> str:
    """``:func:<code>~a.b</code>`` in rendered HTML → ``<code>b</code>``."""
    return _ROLE.sub(_role, content)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return GITHUB_ONLY.sub("", markdown)


def on_page_content(html: str, **kwargs: Any) -> str:
    return strip_roles(html)
