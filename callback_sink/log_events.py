"""The log event catalogue: every event the sink logs, found in the code, explained once.

The code is the source of each event's name, level(s), fields and component: :func:`scan`
reads every ``log.<level>("event.name", field=…)`` call of the package with :mod:`ast` (and
the worker's ``_log(Outcome.X, "event", …)``, logged at that outcome's level), so a level or
a field changed in code changes the reference with it. What an event means and what to do
about it is written by hand, once, in ``log_events.toml`` next to this module; a line about a
callback that :mod:`callback_sink.sink.levels` already describes takes its meaning from there.
``python -m callback_sink.docs_gen`` writes ``docs/reference/log-events.md``, and a test fails
when an event is logged without an entry, an entry names an event nobody logs, or the page
differs from what :func:`markdown` makes.
"""

from __future__ import annotations

import ast
import os
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callback_sink.sink import levels
from callback_sink.sink.outcomes import LEVELS, Outcome

PACKAGE = Path(__file__).resolve().parent
CATALOGUE = PACKAGE / "log_events.toml"
#: The structlog methods the sink logs through, and the level each writes at.
METHODS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error",
           "exception": "error", "critical": "critical"}  # fmt: skip
SEVERITY = ("debug", "info", "warning", "error", "critical")
#: ``exc_info=`` is rendered into the ``exception`` field (:mod:`callback_sink.sink.logs`).
RENAMED_FIELDS = {"exc_info": "exception"}


@dataclass(frozen=True)
class Site:
    """One call that logs ``event``: at ``level`` (with ``outcome``, for a line logged at its
    outcome's level), with these fields, through the logger of ``component``."""

    event: str
    level: str
    fields: tuple[str, ...]
    component: str
    where: str
    outcome: str | None = None


@dataclass
class LoggedEvent:
    """Every site of one event name, merged."""

    name: str
    sites: list[Site] = field(default_factory=list)

    @property
    def levels(self) -> list[tuple[str, list[str]]]:
        """``(level, outcomes)`` from the least to the most severe."""
        found: dict[str, list[str]] = {}
        for site in self.sites:
            outcomes = found.setdefault(site.level, [])
            if site.outcome and site.outcome not in outcomes:
                outcomes.append(site.outcome)
        return sorted(found.items(), key=lambda item: SEVERITY.index(item[0]))

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(name for site in self.sites for name in site.fields))

    @property
    def components(self) -> list[str]:
        return sorted({site.component for site in self.sites})


def sources(root: Path = PACKAGE) -> Iterator[Path]:
    """The package's modules, each once: the repository links its top-level folders into the
    package, so the walk follows links."""
    seen: set[Path] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = Path(folder, name)
            if name.endswith(".py") and path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def scan(root: Path = PACKAGE) -> list[Site]:
    """Every logging call of the package under ``root``."""
    found = []
    for path in sources(root):
        where = path.relative_to(root).as_posix()
        found += sites_in(path.read_text(encoding="utf-8"), where)
    return found


def sites_in(source: str, where: str = "<code>") -> list[Site]:
    """The logging calls of one module: ``<logger>.<level>("event", …)`` where ``<logger>`` is
    a module-level ``name = logs.get("component")``, and calls of a module function that logs
    through ``getattr(<logger>, LEVELS[outcome])(event, …)``, and calls ``name(…)`` of a
    module-level ``name = logs.HotLine("component", "event")`` (an info line)."""
    tree = ast.parse(source)
    loggers = _loggers(tree)
    hot = _hot_lines(tree)
    wrappers = _wrappers(tree, loggers)
    scopes = _scopes(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        at = f"{where}:{node.lineno}"
        if (
            isinstance(func, ast.Attribute) and func.attr in METHODS
            and isinstance(func.value, ast.Name) and func.value.id in loggers
            and node.args and _text(node.args[0]) is not None
        ):  # fmt: skip
            fields = _fields(node, scopes.get(id(node), tree))
            found.append(Site(str(_text(node.args[0])), METHODS[func.attr], fields,
                              loggers[func.value.id], at))  # fmt: skip
        elif isinstance(func, ast.Name) and func.id in hot:
            fields, (component, name) = _fields(node, scopes.get(id(node), tree)), hot[func.id]
            found.append(Site(name, "info", fields, component, at))
        elif isinstance(func, ast.Name) and func.id in wrappers and len(node.args) >= 2:
            event = _text(node.args[1])
            if event is None:
                continue
            component, fixed = wrappers[func.id]
            fields = (*fixed, *_fields(node, scopes.get(id(node), tree)))
            for outcome in _outcomes(node.args[0], event):
                level = LEVELS[outcome] if outcome else "unknown"
                found.append(Site(event, level, fields, component, at, outcome and outcome.value))
    return found


def _text(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _loggers(tree: ast.Module) -> dict[str, str]:
    """Module-level ``name = logs.get("component")``: name → component."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if ast.unparse(call.func) in ("logs.get", "get") and call.args:
                component = _text(call.args[0])
                for target in node.targets:
                    if isinstance(target, ast.Name) and component is not None:
                        found[target.id] = component
    return found


def _hot_lines(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """Module-level ``name = logs.HotLine("component", "event")``: name → (component, event)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(call := node.value, ast.Call):
            texts = [_text(arg) for arg in call.args]
            if ast.unparse(call.func) in ("logs.HotLine", "HotLine") and len(texts) == 2:
                component, event = texts
                for target in node.targets:
                    if isinstance(target, ast.Name) and component and event:
                        found[target.id] = (component, event)
    return found


def _wrappers(tree: ast.Module, loggers: dict[str, str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Module functions ``f(outcome, event, **fields)`` that log through
    ``getattr(<logger>, LEVELS[…])(event, …)``: name → (component, the fields they add)."""
    found = {}
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            inner = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
                and inner.func.id == "getattr" and len(inner.args) == 2
                and isinstance(inner.args[0], ast.Name) and inner.args[0].id in loggers
                and "LEVELS[" in ast.unparse(inner.args[1])
            ):  # fmt: skip
                assert isinstance(node, ast.Call)
                fixed = tuple(k.arg for k in node.keywords if k.arg is not None)
                found[function.name] = (loggers[inner.args[0].id], fixed)
    return found


def _outcomes(node: ast.expr, event: str) -> list[Outcome | None]:
    """``Outcome.X``: X. Any other expression: the outcomes :mod:`~callback_sink.sink.levels`
    lists for ``event`` (its test checks the code logs each at its level); [None] if none."""
    if isinstance(node, ast.Attribute) and node.attr in Outcome.__members__:
        return [Outcome[node.attr]]
    listed = [line.outcome for line in levels.LINES if line.event == event and line.outcome]
    return list(dict.fromkeys(listed)) or [None]


def _scopes(tree: ast.Module) -> dict[int, ast.AST]:
    """Each call's innermost enclosing function (a module-level call has none)."""
    found: dict[int, ast.AST] = {}
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                found[id(node)] = function  # walked outer first: the innermost wins
    return found


def _fields(call: ast.Call, scope: ast.AST) -> tuple[str, ...]:
    """The field names of a call; ``**name`` is the keys ``scope`` puts in dict ``name``."""
    names: list[str] = []
    for keyword in call.keywords:
        if keyword.arg is not None:
            names.append(keyword.arg)
        elif isinstance(keyword.value, ast.Name):
            names += _dict_keys(keyword.value.id, scope) or [f"**{keyword.value.id}"]
        else:
            names.append(f"**{ast.unparse(keyword.value)}")
    return tuple(RENAMED_FIELDS.get(name, name) for name in dict.fromkeys(names))


def _dict_keys(name: str, scope: ast.AST) -> list[str]:
    """Keys given to dict ``name`` in ``scope``: ``name = {…}`` (or ``{…} if … else {…}``),
    ``name.update(k=…)`` and ``name["k"] = …``."""
    keys: list[str] = []
    for node in ast.walk(scope):
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and any(_is(t, name) for t in node.targets):
            value = node.value
        if isinstance(node, ast.AnnAssign) and _is(node.target, name):
            value = node.value
        if value is not None:
            keys += _literal_keys(value)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == f"{name}.update":
            keys += [k.arg for k in node.keywords if k.arg is not None]
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and _is(target.value, name):
                    key = _text(target.slice)
                    keys += [key] if key is not None else []
    return keys


def _literal_keys(value: ast.expr) -> list[str]:
    if isinstance(value, ast.IfExp):
        return _literal_keys(value.body) + _literal_keys(value.orelse)
    if isinstance(value, ast.Dict):
        return [text for key in value.keys if key is not None and (text := _text(key))]
    return []


def _is(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def events(sites: Iterable[Site]) -> dict[str, LoggedEvent]:
    """The sites merged by event name, in name order."""
    merged: dict[str, LoggedEvent] = {}
    for site in sorted(sites, key=lambda s: (s.event, s.where)):
        merged.setdefault(site.event, LoggedEvent(site.event)).sites.append(site)
    return merged


def catalogue(path: Path = CATALOGUE) -> dict[str, Any]:
    """The hand-written part: ``[sections]`` and one ``["event.name"]`` table per event."""
    with path.open("rb") as file:
        return tomllib.load(file)


def problems(sites: list[Site], entries: dict[str, Any]) -> list[str]:
    """What keeps the catalogue from being true to the code; empty when it is."""
    logged, written = events(sites), entries.get("events", {})
    described = {line.event for line in levels.LINES}
    sections = entries.get("sections", {})
    found = [f"{name} is logged ({logged[name].sites[0].where}) but not in {CATALOGUE.name}"
             for name in logged if name not in written]  # fmt: skip
    found += [f"{CATALOGUE.name} describes {name}, which no code logs"
              for name in written if name not in logged]  # fmt: skip
    for name, entry in written.items():
        if not str(entry.get("action", "")).strip():
            found.append(f"{name}: no action in {CATALOGUE.name}")
        if name in described and "meaning" in entry:
            found.append(f"{name}: its meaning is sink/levels.py's; give it `action` only")
        if name not in described and not str(entry.get("meaning", "")).strip():
            found.append(f"{name}: no meaning in {CATALOGUE.name}")
    for site in sites:
        unresolved = [f for f in site.fields if f.startswith("**")]
        if unresolved or site.level == "unknown":
            found.append(f"{site.where}: {site.event}: cannot tell its level or {unresolved}")
    found += [f"no [sections] title for {group}.*" for group in _groups(logged)
              if group not in sections]  # fmt: skip
    return found


def _groups(logged: dict[str, LoggedEvent]) -> list[str]:
    return list(dict.fromkeys(name.split(".", 1)[0] for name in logged))


def _level_cell(event: LoggedEvent) -> str:
    return "<br>".join(
        f"**{level}**" + (f" ({', '.join(f'`{o}`' for o in outcomes)})" if outcomes else "")
        for level, outcomes in event.levels
    )


def _meaning(name: str, entry: dict[str, Any]) -> str:
    lines = [line for line in levels.LINES if line.event == name]
    if not lines:
        return str(entry.get("meaning", "")).strip()
    if len(lines) == 1:
        return lines[0].when
    return "<br>".join(
        f"{f'`{ln.outcome}`' if ln.outcome else ln.level}: {ln.when}" for ln in lines
    )


def markdown(sites: list[Site] | None = None, entries: dict[str, Any] | None = None) -> str:
    """``docs/reference/log-events.md``."""
    logged = events(scan() if sites is None else sites)
    entries = catalogue() if entries is None else entries
    written, sections = entries.get("events", {}), entries.get("sections", {})
    counts = {lvl: sum(any(at == lvl for at, _ in e.levels) for e in logged.values())
              for lvl in SEVERITY}  # fmt: skip
    tally = ", ".join(f"{n} at {lvl}" for lvl, n in counts.items() if n)
    out = [
        "# Log events",
        "",
        "<!-- Generated by `python -m callback_sink.docs_gen`: names, levels, fields and",
        "     components from the code (callback_sink/log_events.py scans every log call);",
        "     meaning and what to do from callback_sink/log_events.toml. Do not edit. -->",
        "",
        str(entries.get("page", {}).get("intro", "")).strip(),
        "",
        f"{len(logged)} events ({tally}; an event logged at two levels counts at both).",
    ]
    for group in _groups(logged):
        out += ["", f"## `{group}.*`: {sections.get(group, '')}", "",
                "| event | level | from | fields | meaning | what to do |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for name, event in logged.items():
            if name.split(".", 1)[0] != group:
                continue
            entry = written.get(name, {})
            cells = (
                f"`{name}`", _level_cell(event), ", ".join(event.components),
                ", ".join(f"`{f}`" for f in event.fields),
                _meaning(name, entry), str(entry.get("action", "")).strip(),
            )  # fmt: skip
            out.append("| " + " | ".join(c.replace("\n", " ") for c in cells) + " |")
    return "\n".join(out) + "\n"
