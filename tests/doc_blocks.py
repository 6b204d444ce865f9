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

MyST directives are fenced too: ``{code-block} LANG`` (and ``{code}``) is a block of LANG; an
admonition (``{note}``, ``{warning}`` …) holds Markdown, whose own blocks are found inside it;
any other directive (``{toctree}``, ``{include}``, ``{eval-rst}`` …) is structure, not an
example (its language is the directive, ``{toctree}``).

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


def is_directive(lang: str) -> bool:
    """A MyST directive's block (``{toctree}``): structure of the site, not an example."""
    return lang.startswith("{") and lang.endswith("}")


FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\S*)\s*(.*?)\s*$")
#: Directives whose content is a code block in the language of their argument.
CODE_DIRECTIVES = frozenset({"{code-block}", "{code}", "{sourcecode}"})
#: Directives whose content is Markdown (its fenced blocks are examples like any other).
CONTAINERS = frozenset({
    "{note}", "{warning}", "{tip}", "{important}", "{caution}", "{attention}", "{danger}",
    "{error}", "{hint}", "{seealso}", "{admonition}", "{versionadded}", "{versionchanged}",
    "{deprecated}",
})  # fmt: skip
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
    """README.md and every Markdown file under docs/ (not the built site, docs/_build)."""
    docs = ROOT / "docs"
    pages = (p for p in docs.rglob("*.md") if "_build" not in p.relative_to(docs).parts)
    return [ROOT / "README.md", *sorted(pages)]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order, each with the marker right above it."""
    document = str(path.relative_to(ROOT))
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    containers: list[str] = []  # the fences of the admonitions we are inside
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, lang, argument = opening.groups()
        if containers and not lang and _closes(lines[index], containers[-1]):
            containers.pop()
            index += 1
            continue
        if lang in CONTAINERS:
            containers.append(fence)
            index += 1
            continue
        options = lang in CODE_DIRECTIVES  # its first lines may be ``:option: value``
        if options:
            lang = argument.split()[0] if argument else ""
        start = index
        index += 1
        while index < len(lines) and not _closes(lines[index], fence):
            index += 1
        body = lines[start + 1 : index]
        while options and body and body[0].startswith(":"):
            body = body[1:]
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        found.append(
            Block(
                document, start + 1, lang, "\n".join(body) + "\n",
                marker.group(1) if marker else "", marker.group(2) if marker else "",
            )
        )  # fmt: skip
        index += 1
    return found


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` (the same character, at least as
    many, nothing else)."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def every_block() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


def of(*langs: str, skipped: bool = False) -> list[Block]:
    """The blocks in ``langs`` that are to be run (``skipped=True``: those marked skip)."""
    return [b for b in every_block() if b.lang in langs and (b.marker == "skip") is skipped]
