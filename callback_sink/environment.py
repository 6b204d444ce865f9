"""Which ``SINK_*`` variables configure which command, generated from their declarations.

Each settings dataclass field ``name`` is read from ``{prefix}{NAME}`` and declared once with
:func:`~callback_sink.sink.setting.declare` (help, unit, bounds, the process kinds that read
it). :func:`variables` turns the declarations into :class:`Variable` rows, from which
``--help`` (:func:`epilog`), ``callback-sink config`` and the Markdown settings reference
(:func:`reference`, written by ``python -m callback_sink.docs_gen``) are all generated.
:func:`masked` shows a value the way an operator may paste it in a ticket: secrets hidden,
URLs without their password.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from yarl import URL

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.sink.setting import EVERY, KINDS, SERVICES, UNITS, Setting, setting_of
from callback_sink.sink.settings import Settings

#: Every settings class the command line knows, with its variables' prefix.
SOURCES: tuple[tuple[type[Any], str], ...] = (
    (Settings, "SINK_"),
    (DirectorySettings, "SINK_DIRECTORY_"),
    (EasemobSettings, "SINK_EASEMOB_"),
    (EmulatorSettings, "SINK_EMULATOR_"),
)

#: The process kinds (:data:`~callback_sink.sink.setting.KINDS`) each command runs as, by
#: its path on the command line; a sub-command not listed runs as its parent. A command
#: listed with none (``init``) reads no variable of its own.
COMMAND_KINDS: dict[str, frozenset[str]] = {
    "ingress": frozenset({"ingress", "supervisor"}),
    "worker": frozenset({"worker"}),
    "run": SERVICES,
    "sign": frozenset({"sign"}),
    "send": frozenset({"sign"}),
    "dlq": frozenset({"dlq"}),
    "config": EVERY,
    "emulate": frozenset({"emulate"}),
    "backfill": frozenset({"backfill"}),
    "groups": frozenset({"groups"}),
    "init": frozenset(),
}


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the field behind it ("" for a variable that stands
    in for the field ``group``, like SINK_SECRETS_FILE), its default and its declaration."""

    name: str
    field: str
    group: str
    default: Any
    setting: Setting
    secret: bool

    @property
    def doc(self) -> str:
        """The one-line help."""
        if not self.field:
            return (
                f"A file holding {self.name.removesuffix('_FILE')}, read when that is unset "
                "(Docker and Kubernetes secrets); # comments allowed."
            )
        return self.setting.help

    @property
    def shown_default(self) -> str:
        """The default as help and docs show it ("" when there is none worth saying)."""
        if not self.field:
            return ""
        if self.setting.default_text:
            return self.setting.default_text
        if self.default in (None, "", ()):
            return ""
        return masked(self, self.default)


def variables(cls: type[Any], prefix: str) -> tuple[Variable, ...]:
    """The variables of settings class ``cls``, in declaration order (a ``_FILE`` variant
    right after the variable it stands in for): the class's own fields first, then those it
    inherits (a dataclass lists inherited fields first)."""
    found: list[Variable] = []
    own = inspect.get_annotations(cls)
    for f in sorted(fields(cls), key=lambda f: f.name not in own):
        declared = setting_of(f)
        name = f"{prefix}{f.name.upper()}"
        found.append(Variable(name, f.name, f.name, _default(f), declared, not f.repr))
        if declared.file is not None:
            found.append(Variable(f"{name}_FILE", "", f.name, None, declared, False))
    return tuple(found)


def every_variable() -> tuple[Variable, ...]:
    """Every declared variable of every settings class."""
    return tuple(v for cls, prefix in SOURCES for v in variables(cls, prefix))


def kinds_of(path: str) -> frozenset[str]:
    """The process kinds command ``path`` (``"dlq list"``) runs as."""
    while path not in COMMAND_KINDS and " " in path:
        path = path.rsplit(" ", 1)[0]
    return COMMAND_KINDS.get(path, frozenset())


def for_command(path: str) -> list[Variable]:
    """The variables that configure ``path``: those read by one of its process kinds."""
    kinds = kinds_of(path)
    return [v for v in every_variable() if v.setting.kinds & kinds]


def epilog(path: str) -> str:
    """The ``--help`` epilog of a command: its environment variables with their defaults."""
    found = for_command(path)
    if not found:
        return "environment: no SINK_* variable configures this command."
    width = max(len(v.name) for v in found)
    lines = ["environment (see docs/reference/settings.md):"]
    for v in found:
        extras = [f"default: {v.shown_default}"] if v.shown_default else []
        if v.field and v.setting.unit:
            extras.append(UNITS[v.setting.unit])
        text = f"{v.doc.removesuffix('.')} ({', '.join(extras)})." if extras else v.doc
        lines.append(textwrap.fill(
            text, _WIDTH, initial_indent=f"  {v.name:<{width}}  ",
            subsequent_indent=" " * (width + 4), break_on_hyphens=False,
        ))  # fmt: skip
    return "\n".join(lines)


def reference() -> str:
    """The Markdown settings reference (``docs/reference/settings.md``), every variable."""
    out = [
        "# Settings reference",
        "",
        "<!-- Generated by `python -m callback_sink.docs_gen` from the settings' declarations"
        " (`declare(...)` in the settings classes); do not edit by hand. -->",
        "",
        "Every setting is an environment variable, read once at start-up. A value that does "
        "not parse or is out of its range stops the process with one line naming the "
        "variable (exit code 2). `callback-sink config` shows the effective values. "
        "*Read by* names the processes that read the variable: `ingress` (a process "
        "serving callbacks, also in `run`), `supervisor` (the parent of a multi-process "
        "`callback-sink ingress`), `worker`, and the commands `dlq`, `backfill`, `sign` "
        "(and `send`), `emulate`, `groups`.",
        "",
    ]
    titles = {
        "SINK_": "The sink",
        "SINK_DIRECTORY_": "The group directory",
        "SINK_EASEMOB_": "The REST client",
        "SINK_EMULATOR_": "The emulator",
    }
    for cls, prefix in SOURCES:
        out += [f"## {titles[prefix]} (`{prefix}*`)", "", table(variables(cls, prefix)), ""]
    return "\n".join(out)


def table(rows: tuple[Variable, ...]) -> str:
    """A Markdown table of ``rows``: variable, default, unit, range, read by, meaning."""
    lines = [
        "| variable | default | unit | range | read by | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for v in rows:
        default = f"`{v.shown_default}`" if v.shown_default else "(unset)"
        if v.field and v.setting.default_text:  # words, not a value
            default = v.setting.default_text
        unit = UNITS.get(v.setting.unit, "") if v.field else ""
        bounds = v.setting.bounds if v.field else ""
        kinds = ", ".join(k for k in KINDS if k in v.setting.kinds)
        cells = [f"`{v.name}`", default, unit, bounds, kinds, v.doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def masked(variable: Variable, value: Any) -> str:
    """``value`` as it may be shown: a secret hidden, a URL's password and query values
    (``?password=…``) replaced by ***. Only a ``*_URL`` variable is shown as a URL: a secret
    that happens to contain ``://`` is hidden whole."""
    if value is None or value == "" or value == ():
        return "(unset)"
    url_setting = variable.name.endswith("_URL")
    if isinstance(value, str) and "://" in value and url_setting:  # a cluster's: one a comma
        return ",".join(_without_password(part) for part in value.split(","))
    if variable.secret:
        count = len(value) if isinstance(value, tuple) else 1
        return f"*** ({count} secret{'s' if count > 1 else ''})"
    if isinstance(value, tuple):
        return ",".join(map(_plain, value))
    return _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _without_password(value: str) -> str:
    try:
        url = URL(value.strip())
    except ValueError:
        return "***"
    if not url.password and not url.query:
        return value
    if url.password:
        url = url.with_password("***")
    return str(url.with_query({name: "***" for name in url.query}) if url.query else url)


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


#: Width of the --help epilogs (argparse does not rewrap them).
_WIDTH = 100
