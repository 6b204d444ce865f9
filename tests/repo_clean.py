"""Tests write under their ``tmp_path``, never into the checkout: a check at session end.

``git status`` before and after the session: a path in the repository's top level that is new
and untracked afterwards was written by a test (once, a file ``./dlq`` holding a memory
figure). Caches are not counted. Only the top level is compared: other engineers may add files
under ``tests/`` or ``docs/`` while a suite runs in a shared checkout, but a test writing a
relative path from the repository's root lands there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Top-level names a run may create: caches and environments (most are in .gitignore too).
CACHES = (
    ".pytest_cache", "__pycache__", ".mypy_cache", ".ruff_cache", ".venv", ".hypothesis",
)  # fmt: skip


def untracked_top_level() -> set[str] | None:
    """Untracked top-level names of the checkout (``None`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    names = set()
    for line in out.splitlines():
        if line.startswith("?? "):
            top = line[3:].strip('"').split("/", 1)[0]
            if top not in CACHES and not top.endswith(".egg-info"):
                names.add(top)
    return names
