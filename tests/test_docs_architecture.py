"""The architecture page keeps up with the code: every package and every module of the
ingress and the worker is named in it, and every module it names exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "callback_sink"
PAGE = ROOT / "docs" / "explanation" / "architecture.md"
#: The layers whose every module gets a row of "to change X, open Y".
EVERY_MODULE_OF = ("ingress", "worker")
#: A module the page names, as a path relative to ``callback_sink/`` in backquotes.
NAMED_MODULE = re.compile(r"`((?:[a-z_]+/)+[a-z_]+\.py)`")


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def package_dirs() -> list[str]:
    """Every directory under callback_sink/ that is a Python package, and every directory
    right under it (``templates/``), symlinks followed, as ``handlers/directory/``."""
    found = {PACKAGE}
    found.update(p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    for where, dirs, files in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "__init__.py" in files:
            found.add(Path(where))
    named = (d.relative_to(PACKAGE).as_posix() for d in found if d != PACKAGE)
    return ["callback_sink/", *sorted(f"{name}/" for name in named)]


def test_the_scan_follows_the_symlinked_packages() -> None:
    dirs = package_dirs()
    assert {"worker/", "ingress/", "handlers/directory/", "easemob/emulator/"} <= set(dirs)
    assert [d for d in dirs if "__pycache__" in d] == []


def test_every_package_is_named_in_the_architecture_page() -> None:
    text = page()
    assert [d for d in package_dirs() if f"`{d}`" not in text] == []


def test_every_module_of_the_ingress_and_the_worker_is_named_in_the_architecture_page() -> None:
    text = page()
    modules = [
        f"{layer}/{path.name}"
        for layer in EVERY_MODULE_OF
        for path in sorted((PACKAGE / layer).glob("*.py"))
        if path.name != "__init__.py"
    ]
    assert modules, "the scan found no module"
    assert [m for m in modules if f"`{m}`" not in text] == []


def test_every_module_the_architecture_page_names_exists() -> None:
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    named = [m for m in NAMED_MODULE.findall(page()) if m.split("/")[0] in layers]
    assert named, "the page names no module"
    assert [m for m in named if not (PACKAGE / m).is_file()] == []
