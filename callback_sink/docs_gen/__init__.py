"""Write the generated reference pages: ``python -m callback_sink.docs_gen``.

Each page under ``docs/reference/`` named in :data:`PAGES` is made from the code it
describes, never copied: the settings from their declarations, the log events from the log
calls, the log levels from ``sink.levels``, the command line from its parser, the event
names from ``sink.names``, the metrics from their registries and the alerts from
``deploy/prometheus/alerts.yaml``, the HTTP endpoints from ``sink.endpoints``. A test fails
when a committed page differs from what this writes (:func:`stale`), so a change in code
that is not re-generated is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from callback_sink import log_events
from callback_sink.docs_gen import cli_page, events_page, http_page, metrics_page
from callback_sink.environment import reference
from callback_sink.sink import levels

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference" / "settings.md"
LOG_EVENTS = DOCS / "reference" / "log-events.md"


def _settings() -> str:
    return reference() + "\n"


#: Every generated page and what makes it.
PAGES: dict[Path, Callable[[], str]] = {
    REFERENCE: _settings,
    LOG_EVENTS: log_events.markdown,
    DOCS / "reference" / "log-levels.md": levels.markdown,
    DOCS / "reference" / "cli.md": cli_page.markdown,
    DOCS / "reference" / "events.md": events_page.markdown,
    DOCS / "reference" / "metrics.md": metrics_page.markdown,
    DOCS / "reference" / "http.md": http_page.markdown,
}


def stale() -> list[str]:
    """The generated pages whose committed text is not what the code makes now."""
    return [
        str(path.relative_to(ROOT))
        for path, make in PAGES.items()
        if not path.exists() or path.read_text(encoding="utf-8") != make()
    ]


def main() -> int:
    for path, make in PAGES.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make(), encoding="utf-8")
    print("wrote " + ", ".join(str(path.relative_to(ROOT)) for path in PAGES))
    return 0
