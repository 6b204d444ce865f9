"""The packages are layered: each imports only the floors below it, and no module is long."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.needs import missing

ROOT = Path(__file__).resolve().parent.parent
#: What each package may import from the project, floor by floor; callback_sink is the top.
ALLOWED = {
    "sink": set(),
    "easemob": {"sink"},
    "ingress": {"sink"},
    "handlers": {"sink", "easemob"},
    "worker": {"sink", "handlers", "easemob"},
    "callback_sink": {"sink", "easemob", "ingress", "handlers", "worker"},
}
MAX_LINES = 350


SUBPACKAGES = set(ALLOWED) - {"callback_sink"}


def _floor(module: str) -> str | None:
    """The floor a dotted import lands on: ``callback_sink.worker.x`` is ``worker``, the
    root's own modules (``callback_sink.cli``) are ``callback_sink``; bare ``worker``,
    ``sink`` ... are not project imports at all (and are refused below)."""
    parts = module.split(".")
    if parts[0] != "callback_sink":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else "callback_sink"


def project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_floor(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_floor(node.module))
    return {name for name in found if name is not None}


def bare_imports(path: Path) -> set[str]:
    """Imports of a sub-package by its bare top-level name (``from worker import ...``):
    those names are not installed, and a user's own ``handlers`` would be found instead."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & SUBPACKAGES


def _sources(*folders: str) -> list[Path]:
    return [
        path for folder in folders for path in (ROOT / folder).rglob("*.py")
        if not any(part.startswith(".venv") for part in path.parts)
        and not (folder == "callback_sink" and path.relative_to(ROOT).parts[1] in SUBPACKAGES)
    ]  # fmt: skip


def test_nothing_imports_a_sub_package_by_a_bare_top_level_name() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bare_imports(path))
        for path in _sources(*ALLOWED, "tests", "bench", "tools")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_only_the_callback_sink_root_is_installed(tmp_path: Path) -> None:
    """The wheel's top level is ``callback_sink`` alone; the sub-packages sit under it, so an
    application's own ``handlers`` or ``worker`` package is never shadowed (nor used)."""
    for package in SUBPACKAGES:
        assert (ROOT / "callback_sink" / package).resolve() == (ROOT / package).resolve()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    if built.returncode != 0:
        missing(f"cannot build the wheel (setuptools from the package index?): {built.stderr}")
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"callback_sink"}
    for package in SUBPACKAGES:
        assert f"callback_sink/{package}/__init__.py" in names, package
        assert f"callback_sink/{package}/py.typed" in names, package
    assert "callback_sink/sink/examples.json" in names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_nothing_from_a_floor_above_it(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package] - {package})
        for path in _sources(package)
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_core_package_imports_nothing_above_it() -> None:
    assert ALLOWED["sink"] == set()
    for path in _sources("sink"):
        assert project_imports(path) <= {"sink"}, path


def test_no_module_outside_the_tests_is_over_350_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for folder in (*ALLOWED, "bench", "tools")
        for path in (ROOT / folder).rglob("*.py")
        if not any(part.startswith(".venv") for part in path.parts)
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_shipped_package_is_typed() -> None:
    for package in ALLOWED:
        assert (ROOT / package / "py.typed").is_file(), package
