"""The fenced code blocks of the user documents, and how each one is checked.

Every fenced block of README.md and docs/**/*.md has a language, and the language says what
happens to it (tests/test_readme_examples.py):

- ``python``: run as written (top-level ``await`` allowed) next to a stand-in application
  (``myapp``), then what it defines is exercised through the testing kit. A block whose
  first line is a path comment (``# myapp/callbacks.py``) is that file: a module, or a test
  file run by pytest.
- ``sh`` / ``console``: run by bash (``console``: the ``$`` lines), next to a running sink
  when it talks to one.
- ``toml``: parsed.
- ``text``: not code (a diagram, a tree, sample output); nothing to run.

A block that cannot run here (it needs a Kubernetes cluster, or serves until stopped) is
marked, on the line right before its fence, with ``<!-- example: skip REASON -->``: a reason
is required, so that skipping stays a visible decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Languages whose blocks are run (or parsed); ``text`` blocks are prose.
RUN = frozenset({"python", "sh", "console", "toml"})
PROSE = frozenset({"text"})
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*example:\s*(\S+)\s*(.*?)\s*-->\s*$")
#: The path comment that names the file a block is (``# myapp/callbacks.py``).
PATH_COMMENT = re.compile(r"^#\s*(?:your\s+)?([\w./-]+\.(?:py|toml))\s*$")


@dataclass(frozen=True)
class Block:
    document: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    #: ``skip`` (with ``reason``), or "" when unmarked.
    marker: str = ""
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def path(self) -> str | None:
        """The file this block is, from its first line's path comment."""
        first = self.text.split("\n", 1)[0]
        found = PATH_COMMENT.match(first)
        return found.group(1) if found else None


def documents() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order, each with the marker right above it."""
    document = str(path.relative_to(ROOT))
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            index += 1
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        found.append(
            Block(
                document, start + 1, opening.group(1), "\n".join(lines[start + 1 : index]) + "\n",
                marker.group(1) if marker else "", marker.group(2) if marker else "",
            )
        )  # fmt: skip
        index += 1
    return found


def every_block() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


def of(*langs: str, skipped: bool = False) -> list[Block]:
    """The blocks in ``langs`` that are to be run (``skipped=True``: those marked skip)."""
    return [b for b in every_block() if b.lang in langs and (b.marker == "skip") is skipped]
