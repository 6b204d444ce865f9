"""Sphinx configuration of the documentation site: ``make docs`` builds it into docs/_build/html.

The pages are MyST Markdown; the public Python API is rendered by autodoc from the docstrings,
whose Sphinx roles (``:class:``, ``:func:`` …) become links. Nothing is fetched from the
network (no intersphinx): the build works offline and warnings are errors (``-W -n``).

Links from a page to a repository file outside ``docs/`` (``../../deploy/README.md``) have no
page in the site: they are shown as the file's path (:func:`_outside_links`).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
REPOSITORY = DOCS.parent

project = "callback-sink"
author = "callback-sink contributors"
copyright = "callback-sink contributors"
try:
    release = importlib.metadata.version("callback-sink")
except importlib.metadata.PackageNotFoundError:  # a bare checkout
    release = "unknown"
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``:::`` fences for directives, definition lists, and anchors for headings down to
# ``###``, so ``page.md#section`` links (and the alerts' runbook_url anchors) resolve.
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3

# Autodoc: the public API in source order, with its type hints in the signatures.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False}

# Every cross-reference must resolve (``-n``); the few targets outside the documented API
# (the standard library, third-party types, internal modules the docstrings name) are listed.
nitpicky = True
nitpick_ignore_regex = [
    # Other libraries' names (the standard library's, aiohttp's, SQLAlchemy's …): without
    # intersphinx nothing can resolve them; they are shown as plain names.
    (r"py:.*", r"_?(?!callback_sink\.)[a-z_][\w]*\..+"),
    # The implementation behind the public API (its modules may change between releases, so
    # they are not documented as API) and the type variables of the decorators' signatures.
    (r"py:.*", r"callback_sink\.(sink|handlers|worker|ingress|easemob)\..*"),
    (r"py:.*", r"(Handler|MAX_DEDUP_KEY_BYTES)"),
    # Generic aliases autodoc splits at their commas (``list[tuple[str, Event]]``).
    (r"py:class", r".*\[.*"),
]

html_theme = "furo"
html_title = "callback-sink"
html_static_path: list[str] = []

#: A Markdown link whose target is a relative path (not a URL, not an anchor alone).
_LINK = re.compile(r"\[([^\]\n]+)\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s#]+)(#[^)\s]*)?\)")


def _outside_links(app: Any, docname: str, source: list[str]) -> None:
    """Rewrite links to repository files outside ``docs/`` as the file's path in code."""
    page = DOCS / docname

    def replace(match: re.Match[str]) -> str:
        target = (page.parent / match.group(2)).resolve()
        if target.is_relative_to(DOCS) or not target.is_relative_to(REPOSITORY):
            return match.group(0)
        path = target.relative_to(REPOSITORY).as_posix()
        text = match.group(1)
        return text if text.strip("`") == path else f"{text} (`{path}`)"

    source[0] = _LINK.sub(replace, source[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _outside_links)
    return {"parallel_read_safe": True}
