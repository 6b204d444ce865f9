"""``callback-sink init NAME``: a ready handler package, written from ``templates/``.

The templates (``callback_sink/templates/handler_package``, shipped in the wheel) are plain
files ending in ``.tmpl``; ``{{name}}`` becomes the package name, ``{{dist}}`` its
distribution name, and the folder ``PACKAGE`` the package itself.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

TEMPLATE = "handler_package"
SUFFIX = ".tmpl"
PACKAGE_DIR = "PACKAGE"
#: Top-level packages of the sink itself: a handler package named like one would hide it.
#: Names the generated project cannot take: the sink's one import root, and the project's own
#: ``tests`` folder. (``handlers``, ``worker`` … are free: the sink installs nothing but
#: ``callback_sink`` at the top level.)
TAKEN = frozenset({"callback_sink", "tests"})


class ScaffoldError(Exception):
    """``init`` cannot write the package; the message says why, in one line."""


def create(name: str, parent: Path) -> Path:
    """Write the handler package ``name`` into the new folder ``parent / name``."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ScaffoldError(
            f"{name!r} is not a valid Python package name "
            "(letters, digits and underscores, not starting with a digit)"
        )
    if name in TAKEN:
        raise ScaffoldError(f"{name!r} is taken: callback-sink's own package or the tests folder")
    target = parent / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists")
    files = dict(_render(name))
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def _render(name: str) -> Iterator[tuple[Path, str]]:
    root = resources.files("callback_sink").joinpath("templates", TEMPLATE)
    for relative, template in _walk(root, Path()):
        parts = [name if part == PACKAGE_DIR else part for part in relative.parts]
        text = template.read_text(encoding="utf-8")
        text = text.replace("{{name}}", name).replace("{{dist}}", name.replace("_", "-"))
        yield Path(*parts).with_name(relative.name.removesuffix(SUFFIX)), text


def _walk(node: Traversable, relative: Path) -> Iterator[tuple[Path, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            yield from _walk(child, relative / child.name)
        elif child.name.endswith(SUFFIX):
            yield relative / child.name, child
