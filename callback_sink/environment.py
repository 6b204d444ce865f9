"""Which ``SINK_*`` variables configure which command, documented from the settings classes.

Each settings dataclass field ``name`` is read from ``{prefix}{NAME}``, and the ``#:`` comment
above it in the source says what it is for; :func:`variables` reads both, so ``--help`` and
``callback-sink config`` never drift from the code. :func:`masked` shows a value the way an
operator may paste it in a ticket: secrets hidden, URLs without their password.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from yarl import URL

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.sink.settings import Settings

#: Every settings class the command line knows, with its variables' prefix.
SOURCES: tuple[tuple[type[Any], str], ...] = (
    (Settings, "SINK_"),
    (DirectorySettings, "SINK_DIRECTORY_"),
    (EasemobSettings, "SINK_EASEMOB_"),
    (EmulatorSettings, "SINK_EMULATOR_"),
)

_INGRESS = (
    "secrets", "apps", "amqp_url", "topology_prefix", "quorum_size", "host", "port", "path",
    "body_limit", "publish_timeout", "spool_dir", "spool_max_bytes", "ingress_processes",
    "max_age_s",
    "allowed_networks", "trusted_proxies", "read_timeout_s", "keepalive_timeout_s",
    "max_connections", "max_inflight", "reject_log_rate", "shutdown_timeout", "log_format",
    "log_level", "loop",
)  # fmt: skip
_WORKER = (
    "amqp_url", "topology_prefix", "quorum_size", "dedup_url", "dedup_ttl", "handler_timeout",
    "claim_lease", "handlers", "prefetch", "concurrency", "retry_delays", "max_attempts",
    "max_deliveries",
    "startup_timeout_s", "shutdown_timeout", "log_format", "log_level", "loop",
)  # fmt: skip
_BROKER = ("amqp_url", "topology_prefix")

#: The ``Settings`` fields (``SINK_<FIELD>``) and the whole prefixes that matter to each
#: command, by its path on the command line. A command not listed reads none.
BY_COMMAND: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingress": (_INGRESS, ()),
    "worker": (_WORKER, ("SINK_DIRECTORY_", "SINK_EASEMOB_")),
    "run": (tuple(dict.fromkeys(_INGRESS + _WORKER)), ("SINK_DIRECTORY_", "SINK_EASEMOB_")),
    "sign": (("secrets",), ()),
    "send": (("secrets",), ()),
    "dlq": (_BROKER, ()),
    "dlq list": (_BROKER, ()),
    "dlq show": (_BROKER, ()),
    "dlq replay": (_BROKER, ()),
    "dlq purge": (_BROKER, ()),
    "config": (tuple(f.name for f in fields(Settings)), tuple(p for _, p in SOURCES[1:])),
    "emulate": (("secrets", "apps"), ("SINK_EMULATOR_",)),
    "backfill": (
        ("dedup_url", "topology_prefix", "max_age_s", "backfill_window_s"),
        ("SINK_EASEMOB_",),
    ),
    "groups": ((), ("SINK_DIRECTORY_",)),
    "groups list": ((), ("SINK_DIRECTORY_",)),
    "groups show": ((), ("SINK_DIRECTORY_",)),
}
#: Variables read besides the dataclass fields, after the field they stand in for.
_ALSO = {"SINK_SECRETS": ("SINK_SECRETS_FILE", "a file with one secret per line, used when "
                          "SINK_SECRETS is unset"),
         "SINK_APPS": ("SINK_APPS_FILE", "a file with one org#app=secret|secret per line, "
                       "used when SINK_APPS is unset")}  # fmt: skip


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the field behind it ("" for a variable that stands
    in for the field ``group``, like SINK_SECRETS_FILE), its default and meaning."""

    name: str
    field: str
    group: str
    default: Any
    doc: str
    secret: bool


def variables(cls: type[Any], prefix: str) -> tuple[Variable, ...]:
    docs = _comments(cls)
    found: list[Variable] = []
    for f in fields(cls):
        name = f"{prefix}{f.name.upper()}"
        found.append(Variable(name, f.name, f.name, _default(f), docs.get(f.name, ""), not f.repr))
        if name in _ALSO:
            found.append(Variable(_ALSO[name][0], "", f.name, None, _ALSO[name][1], False))
    return tuple(found)


def for_command(path: str) -> list[Variable]:
    """The variables that configure ``path`` (``"dlq list"``), in the settings' order."""
    names, prefixes = BY_COMMAND.get(path, ((), ()))
    core = [v for v in variables(Settings, "SINK_") if v.group in names]
    others = [v for cls, p in SOURCES[1:] if p in prefixes for v in variables(cls, p)]
    return core + others


def epilog(path: str) -> str:
    """The ``--help`` epilog of a command: its environment variables with their defaults."""
    found = for_command(path)
    if not found:
        return "environment: no SINK_* variable configures this command."
    width = max(len(v.name) for v in found)
    lines = ["environment (see README, Configuration):"]
    for v in found:
        default = "" if v.default in (None, "", ()) else f" (default: {masked(v, v.default)})"
        lines.append(textwrap.fill(
            f"{v.doc}{default}", _WIDTH, initial_indent=f"  {v.name:<{width}}  ",
            subsequent_indent=" " * (width + 4), break_on_hyphens=False,
        ))  # fmt: skip
    return "\n".join(lines)


def masked(variable: Variable, value: Any) -> str:
    """``value`` as it may be shown: a secret hidden, a URL's password replaced by ***."""
    if value is None or value == "" or value == ():
        return "(unset)"
    if isinstance(value, str) and "://" in value:  # one URL, or a cluster's comma-separated
        return ",".join(_without_password(part) for part in value.split(","))
    if variable.secret:
        count = len(value) if isinstance(value, tuple) else 1
        return f"*** ({count} secret{'s' if count > 1 else ''})"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _without_password(value: str) -> str:
    try:
        url = URL(value.strip())
    except ValueError:
        return "***"
    return str(url.with_password("***")) if url.password else value


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


#: Width of the --help epilogs (argparse does not rewrap them).
_WIDTH = 100
_FIELD = re.compile(r"^\s+(\w+):\s")


def _comments(cls: type[Any]) -> dict[str, str]:
    """Each field's ``#:`` comment; fields declared together under one comment share it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    last = ""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif (match := _FIELD.match(line)) and not stripped.startswith(("def ", "@")):
            if pending:
                last, pending = " ".join(pending).replace("``", ""), []
            docs[match.group(1)] = last
    return docs
