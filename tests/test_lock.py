"""The hashed lock files (``make lock``) agree with pyproject.toml: every dependency pinned
there is locked at the same version, and every locked package carries its hashes, so that
``make install`` (``pip install --require-hashes``) installs exactly what was reviewed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: ``name==version`` at the start of a line opens a locked package's entry.
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def pins(requirements: list[str]) -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in requirements:
        requirement = Requirement(line)
        [spec] = requirement.specifier  # a top-level dependency is pinned, exactly
        assert spec.operator == "==", line
        pinned[canonicalize_name(requirement.name)] = spec.version
    return pinned


def locked(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return {canonicalize_name(n): version for n, version in ENTRY.findall(text)}


RUNTIME = pins(PROJECT["dependencies"])
DEV = pins(PROJECT["optional-dependencies"]["dev"])


@pytest.mark.parametrize(
    ("lock", "pinned"),
    [("requirements.lock", RUNTIME), ("requirements-dev.lock", {**RUNTIME, **DEV})],
)
def test_every_dependency_pinned_in_pyproject_is_locked_at_the_same_version(
    lock: str, pinned: dict[str, str]
) -> None:
    entries = locked(lock)
    assert {name: entries.get(name) for name in pinned} == pinned, f"run `make lock` ({lock})"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_carries_its_hashes(lock: str) -> None:
    text = (ROOT / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    # One block per package (a package locked at two versions for two Pythons has two).
    names = set()
    for block in blocks:
        entry = ENTRY.match(block)
        assert entry, block.splitlines()[0]
        names.add(canonicalize_name(entry.group(1)))
    assert names == set(locked(lock)) and len(names) > len(RUNTIME)  # the dependencies' too
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_runtime_lock_holds_no_dev_tool() -> None:
    assert not set(DEV) & set(locked("requirements.lock"))
