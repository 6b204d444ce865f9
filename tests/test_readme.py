"""The user documents (README.md and docs/) stay complete: every setting and every event name
is in them, every fenced block says how it is checked, and examples use only the public API."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.sink import names
from callback_sink.sink.settings import Settings
from tests import doc_blocks

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
#: Every user document, README.md and docs/**/*.md, as one text.
DOCUMENTS = "\n".join(path.read_text(encoding="utf-8") for path in doc_blocks.documents())


@pytest.mark.parametrize(
    ("settings", "prefix"),
    [
        (Settings, "SINK_"),
        (EasemobSettings, "SINK_EASEMOB_"),
        (EmulatorSettings, "SINK_EMULATOR_"),
        (DirectorySettings, "SINK_DIRECTORY_"),
    ],
)
def test_every_setting_is_documented(settings: type, prefix: str) -> None:
    variables = [f"{prefix}{f.name.upper()}" for f in fields(settings)]
    assert [var for var in variables if f"`{var}`" not in DOCUMENTS] == []


def test_every_event_name_is_documented() -> None:
    missing = [name for name in sorted(names.KNOWN_NAMES) if f"`{name}`" not in DOCUMENTS]
    missing = [n for n in missing if not n.endswith(":unknown")]  # documented as <family>:unknown
    assert missing == []


def test_the_quick_start_shows_the_two_commands() -> None:
    assert "make run" in README and "make test" in README


def test_every_fenced_block_says_what_it_is_and_every_skip_says_why() -> None:
    """A block is run (python, sh, console, toml), prose (text), or marked
    ``<!-- example: skip REASON -->``: a new block with neither a known language nor a marker
    fails here, so no example can slip in unchecked (see tests/doc_blocks.py)."""
    unclassified = [
        f"{b.id} ```{b.lang}" for b in doc_blocks.every_block()
        if b.lang not in doc_blocks.RUN | doc_blocks.PROSE and not doc_blocks.is_directive(b.lang)
    ]  # fmt: skip
    assert unclassified == []
    markers = [(b.id, b.marker, b.reason) for b in doc_blocks.every_block() if b.marker]
    assert [(where, marker) for where, marker, _ in markers if marker != "skip"] == []
    assert [where for where, _, reason in markers if len(reason) < 10] == []


def test_skipping_stays_the_exception() -> None:
    runnable = doc_blocks.of(*doc_blocks.RUN) + doc_blocks.of(*doc_blocks.RUN, skipped=True)
    skipped = doc_blocks.of(*doc_blocks.RUN, skipped=True)
    assert not any(b.lang == "python" for b in skipped), "every Python example runs"
    assert len(skipped) < len(runnable) / 2


#: Where the documents and the generated package may import from: the handler API's one root,
#: the kit, and the public modules the README documents as such.
PUBLIC_MODULES = {
    "callback_sink", "callback_sink.testing", "callback_sink.handlers.directory",
    "callback_sink.easemob.rest", "callback_sink.easemob.models", "callback_sink.easemob.settings",
}  # fmt: skip
TEMPLATE = Path(__file__).resolve().parent.parent / "callback_sink" / "templates"


def sink_imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] == "callback_sink"}


def test_examples_and_the_init_template_import_only_the_public_api() -> None:
    sources = {b.id: b.text for b in doc_blocks.of("python")}
    sources |= {
        str(path.relative_to(TEMPLATE)): path.read_text(encoding="utf-8").replace("{{name}}", "pkg")
        for path in TEMPLATE.rglob("*.py.tmpl")
    }
    private = {
        where: sorted(sink_imports(text) - PUBLIC_MODULES) for where, text in sources.items()
    }
    assert {where: names for where, names in private.items() if names} == {}
