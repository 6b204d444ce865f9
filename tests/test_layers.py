"""The packages are layered: each imports only the floors below it, and no module is long."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_nothing_from_a_floor_above_it(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package] - {package})
        for path in (ROOT / package).rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_core_package_imports_nothing_above_it() -> None:
    assert ALLOWED["sink"] == set()
    for path in (ROOT / "sink").rglob("*.py"):
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
