"""The documentation site (``make docs``) builds without a warning and holds what the code
generates; nothing the README used to say was lost when it moved into docs/; the README stays
short; and the declarations the reference pages are made from agree with the code."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from callback_sink import cli
from callback_sink.docs_gen import cli_page, events_page, metrics_page
from callback_sink.environment import variables
from callback_sink.ingress.app import create_app
from callback_sink.ingress.presend import install
from callback_sink.sink import names
from callback_sink.sink.endpoints import ENDPOINTS
from callback_sink.sink.settings import Settings
from callback_sink.worker.probes import create_probe_app
from tests.doc_blocks import ROOT, documents

DOCS = ROOT / "docs"
#: Every heading of the README before it moved into docs/ (``git show 07d59ee:README.md``,
#: the ``#`` lines outside code blocks): each is still a heading, in the site or the README.
OLD_README_HEADINGS = (
    "callback-sink", "Quick start", "Commands", "Configuration", "Event names",
    "Writing handlers", "Start from callback-sink init", "A handler",
    "A stable name: @on(name=...)", "Start-up and shutdown hooks", "Loading",
    "Testing with the kit", "Pre-send moderation", "What a handler sees", "Operating it",
    "Metrics, alerts and the dashboard", "Backfill from Easemob's callback storage",
    "Security", "Several apps", "Under load", "Reliability",
    "Ordering (SINK_ORDERING=group)", "Running on a RabbitMQ cluster", "Running on Kubernetes",
    "The container image", "Try it: the emulator and the group directory",
    "The group directory (callback_sink.handlers.directory)", "Who each callback is about",
    "Reading it", "The REST client (easemob.rest.GroupClient)",
    "The emulator (callback-sink emulate)", "Benchmarks", "Development",
)  # fmt: skip
README_MAX_LINES = 200


class Page(HTMLParser):
    """The text of a built page, and the text of each of its headings (without the ¶ links)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.headings: list[str] = []
        self._heading: list[str] | None = None
        self._skip = 0
        self.feed(html)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        if self._skip or (tag == "a" and "headerlink" in (dict(attrs).get("class") or "")):
            self._skip += 1
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip and tag in ("a", "script", "style"):
            self._skip -= 1
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            text = "".join(self._heading).replace("\u2019", "'")  # Sphinx's smart quotes
            self.headings.append(" ".join(text.split()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data)
        if self._heading is not None:
            self._heading.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built from scratch as ``make docs`` builds it: every warning an error."""
    out = tmp_path_factory.mktemp("site")
    sphinx = Path(sys.executable).with_name("sphinx-build")
    build = subprocess.run(
        [str(sphinx), "-E", "-W", "--keep-going", "-n", "-q", "-b", "html", "-d",
         str(out / ".doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    assert build.stderr.strip() == "", build.stderr
    return out / "html"


def page(site: Path, name: str) -> Page:
    path = site / f"{name}.html"
    assert path.is_file(), f"the site has no {name}.html"
    return Page(path.read_text(encoding="utf-8"))


def test_the_site_has_a_home_page_and_the_four_sections(site: Path) -> None:
    home = page(site, "index")
    assert "Easemob" in home.text
    for section in ("tutorials", "howto", "reference", "explanation"):
        assert page(site, f"{section}/index").headings


def test_the_settings_reference_lists_every_variable(site: Path) -> None:
    text = page(site, "reference/settings").text
    assert [v.name for v in variables(Settings, "SINK_") if v.name not in text] == []


def test_the_command_line_reference_lists_every_command_and_option(site: Path) -> None:
    found = page(site, "reference/cli")
    parser = cli._parser()
    commands = [path for path, _, _ in cli_page._commands(parser)]
    assert {"ingress", "worker", "run", "dlq list", "config"} <= set(commands)
    assert [c for c in commands if f"callback-sink {c}" not in found.headings] == []
    for _, _, sub in cli_page._commands(parser):
        for action in sub._actions:
            for flag in action.option_strings:
                if action.help != "==SUPPRESS==" and flag not in ("-h", "--help", "--debug"):
                    assert flag in found.text, flag


def test_the_event_reference_lists_every_name(site: Path) -> None:
    text = page(site, "reference/events").text
    listed = [n for n in names.KNOWN_NAMES if not n.endswith(":unknown")]
    assert [n for n in sorted(listed) if n not in text and not n.startswith("group_op:")] == []
    assert [family for family in names.FAMILIES if f"{family}:" not in text] == []


def test_the_metrics_reference_lists_every_metric_and_alert(site: Path) -> None:
    text = page(site, "reference/metrics").text
    metrics = [name for name, *_ in metrics_page.every_metric()]
    assert "callback_sink_worker_handled_total" in metrics
    assert [m for m in metrics if m not in text] == []
    alerts = [str(rule["alert"]) for rule in metrics_page.alerts()]
    assert alerts and [a for a in alerts if a not in text] == []


def test_the_http_reference_lists_every_endpoint(site: Path) -> None:
    found = page(site, "reference/http")
    for endpoint in ENDPOINTS:
        assert any(f"{endpoint.method} {endpoint.path}" in h for h in found.headings), endpoint


def test_the_api_reference_documents_the_handler_api_and_the_kit(site: Path) -> None:
    text = page(site, "reference/api").text
    for name in ("on", "on_startup", "on_shutdown", "presend", "Verdict", "Event", "Retry",
                 "PermanentError", "get_logger"):  # fmt: skip
        assert re.search(rf"callback_sink\.{name}[(\s]", text), name
    for name in ("SinkTester", "make_event", "run_presend", "registry_of"):
        assert re.search(rf"callback_sink\.testing\.{name}[(\s]", text), name


@pytest.mark.skipif(
    not (DOCS / "explanation" / "architecture.md").exists(), reason="no architecture page yet"
)
def test_the_architecture_page_is_built(site: Path) -> None:
    assert page(site, "explanation/architecture").headings


def test_every_heading_of_the_old_readme_is_still_a_heading(site: Path) -> None:
    headings = {h for path in site.rglob("*.html") for h in Page(path.read_text()).headings}
    fence = False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        fence = fence != line.startswith("```")
        if not fence and line.startswith("#"):
            headings.add(line.lstrip("#").strip().replace("`", ""))
    assert [h for h in OLD_README_HEADINGS if h not in headings] == []


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move some to docs/"


def test_every_link_of_the_readme_leads_to_a_file() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?![a-z]+:)([^)#\s]+)", readme)
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []


def test_every_metric_the_documents_name_exists() -> None:
    """Hand-written pages name metrics too (the operator's guide): each must exist. A name is
    taken for a metric's when its word after the prefix is one of the metrics' (``ingress``,
    ``worker``, ``spool`` …): ``callback_sink_inbox``, a table, is not one."""
    exported = {name for name, *_ in metrics_page.every_metric()}
    histograms = {n for n, kind, *_ in metrics_page.every_metric() if kind == "histogram"}
    exported |= {f"{h}{s}" for h in histograms for s in ("_bucket", "_count", "_sum")}
    words = "|".join(sorted({name.split("_")[2] for name in exported}))
    metric_name = re.compile(rf"\bcallback_sink_(?:{words})_[a-z_]*[a-z]\b")
    named = {
        (path.name, name)
        for path in documents()
        for name in metric_name.findall(path.read_text("utf-8"))
    }
    assert sorted((where, n) for where, n in named if n not in exported) == []


def test_every_event_family_is_described_on_the_events_page() -> None:
    assert set(events_page.RECOGNISED_BY) == set(names.FAMILIES)


def routes(app: object) -> set[tuple[str, str]]:
    router = app.router  # type: ignore[attr-defined]
    return {(r.method, r.resource.canonical) for r in router.routes() if r.method != "HEAD"}


def test_the_declared_endpoints_are_the_routes_the_apps_serve(tmp_path: Path) -> None:
    """sink/endpoints.py (what docs/reference/http.md lists) against the real applications;
    the paths a setting moves are served where that setting says."""
    moved = {"SINK_PATH": "/moved/callbacks", "SINK_PRESEND_PATH": "/moved/presend"}
    settings = Settings.from_env(
        {"SINK_SECRETS": "a-secret-long-enough-1234", "SINK_SPOOL_DIR": str(tmp_path), **moved}
    )
    ingress = create_app(settings)
    install(ingress, [])
    served = {
        "ingress": routes(ingress),
        "worker": routes(create_probe_app(object())),  # type: ignore[arg-type]
    }
    declared: dict[str, set[tuple[str, str]]] = {"ingress": set(), "worker": set()}
    for e in ENDPOINTS:
        declared[e.server].add((e.method, moved[e.setting] if e.setting else e.path))
    assert declared == served
    defaults = Settings.from_env({})
    assert {e.setting: e.path for e in ENDPOINTS if e.setting} == {
        "SINK_PATH": defaults.path,
        "SINK_PRESEND_PATH": defaults.presend_path,
    }
