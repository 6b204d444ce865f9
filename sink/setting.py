"""One declaration per setting: the metadata of a settings dataclass field.

Every setting is declared once, on its field, with :func:`declare`: its default, its parser,
its unit, its bounds, the process kinds that read it and a one-line help. ``load`` parses and
bounds-checks the environment from it; ``--help``, ``callback-sink config`` and
``docs/reference/settings.md`` are generated from it (:mod:`callback_sink.environment`),
so none of them can drift from the code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, dataclass, field
from typing import Any

#: The kinds of process (or command) that read settings. ``supervisor`` is the parent of a
#: multi-process ``callback-sink ingress``; ``ingress`` is a process serving callbacks.
KINDS = ("ingress", "supervisor", "worker", "dlq", "backfill", "sign", "emulate", "groups")
#: Read by every command (logging is configured before any command runs).
EVERY = frozenset(KINDS)
INGRESS = frozenset({"ingress"})
WORKER = frozenset({"worker"})
#: Both long-lived processes (``callback-sink run`` is both in one).
SERVICES = frozenset({"ingress", "worker"})
#: Everything that talks to the broker's topology.
BROKER = frozenset({"ingress", "worker", "dlq"})

#: Where a field keeps its :class:`Setting` in ``dataclasses.field(metadata=…)``.
KEY = "callback_sink.setting"

#: How each unit reads after a number, in help and docs.
UNITS = {"s": "seconds", "ms": "milliseconds", "bytes": "bytes", "/s": "per second"}


@dataclass(frozen=True)
class Setting:
    """What a setting is, besides its name, type and default (which the field holds)."""

    #: One line of plain text (no markup): what the setting is for.
    help: str
    #: Turns the variable's text into the field's value; raises ValueError when it cannot.
    parse: Callable[[str], Any] = str
    #: The process kinds that read it (see :data:`KINDS`).
    kinds: frozenset[str] = frozenset()
    #: ``s``, ``ms``, ``bytes``, ``/s`` or "" (see :data:`UNITS`).
    unit: str = ""
    #: Inclusive bounds of a number (each item of a list of numbers); ``None``: unbounded.
    low: float | None = None
    high: float | None = None
    #: ``low`` itself is excluded ("greater than 0").
    above: bool = False
    #: Reader of ``{VAR}_FILE``, used when the variable itself is unset (secrets in files).
    file: Callable[[str, str], Any] | None = None
    #: Shown as the default instead of the value (a default computed at start-up).
    default_text: str = ""

    @property
    def bounds(self) -> str:
        """The bounds in words ("between 1 and 65535"); "" when unbounded."""
        low, high = _number(self.low), _number(self.high)
        if self.low is None:
            return f"at most {high}" if self.high is not None else ""
        if self.high is None:
            return f"greater than {low}" if self.above else f"at least {low}"
        if self.above:
            return f"greater than {low} and at most {high}"
        return f"between {low} and {high}"

    def check(self, value: Any) -> str | None:
        """Why ``value`` is out of bounds ("must be between 1 and 65535"), or None."""
        if self.low is None and self.high is None:
            return None
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if not isinstance(item, int | float) or isinstance(item, bool):
                continue
            if not self._within(item):
                return f"must be {self.bounds}"
        return None

    def _within(self, item: float) -> bool:
        if math.isnan(item):
            return False
        if self.low is not None and (item <= self.low if self.above else item < self.low):
            return False
        return self.high is None or item <= self.high


def declare(
    default: Any = MISSING,
    *,
    help: str,
    parse: Callable[[str], Any] = str,
    kinds: Iterable[str] = (),
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    above: bool = False,
    file: Callable[[str, str], Any] | None = None,
    secret: bool = False,
    factory: Callable[[], Any] | None = None,
    default_text: str = "",
) -> Any:
    """A dataclass field carrying its :class:`Setting`; ``secret`` keeps it out of repr()."""
    unknown = set(kinds) - EVERY
    if unknown or (unit and unit not in UNITS):
        raise ValueError(f"unknown kinds {sorted(unknown)} or unit {unit!r}")
    meta = {KEY: Setting(help, parse, frozenset(kinds), unit, low, high, above, file, default_text)}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


def setting_of(f: Field[Any]) -> Setting:
    """The declaration of field ``f``; a field without one is a bug, caught at import."""
    try:
        found: Setting = f.metadata[KEY]
    except KeyError:
        raise TypeError(f"field {f.name!r} has no declare(...) metadata") from None
    return found


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
