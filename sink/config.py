"""Reading settings from the environment: the one home of every value parser.

Every settings class of the project (the sink's ``SINK_*``, the REST client's
``SINK_EASEMOB_*``, the emulator's ``SINK_EMULATOR_*``, the directory's ``SINK_DIRECTORY_*``)
is a frozen dataclass with a table of parsers, one per field, read by :func:`load`. A value
that does not parse stops start-up with a :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from callback_sink.sink.errors import ConfigError

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Parsers = Mapping[str, Callable[[str], Any]]


class Checked(Protocol):
    def check(self) -> None: ...


C = TypeVar("C", bound=Checked)


def read_env(
    cls: type[Any], prefix: str, parsers: Parsers, env: Mapping[str, str]
) -> dict[str, Any]:
    """The fields of dataclass ``cls`` found in ``env`` as ``{prefix}{FIELD}``, parsed; empty
    values count as unset. A value that does not parse raises :class:`ConfigError` naming it."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        var = f"{prefix}{f.name.upper()}"
        raw = env.get(var, "").strip()
        if raw:
            try:
                values[f.name] = parsers[f.name](raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{var}={raw!r} is not valid: {exc}") from None
    return values


def load(
    cls: type[C],
    prefix: str,
    parsers: Parsers,
    env: Mapping[str, str] | None = None,
    *,
    secret_files: Mapping[str, Callable[[str, str], Any]] | None = None,
) -> C:
    """Build ``cls`` from ``env`` (the process environment by default) and run its
    ``check()``. ``secret_files`` maps a field to a reader of its ``{prefix}{FIELD}_FILE``
    variable, used when the field itself is not set (secrets come from files in production)."""
    env = os.environ if env is None else env
    values = read_env(cls, prefix, parsers, env)
    for name, reader in (secret_files or {}).items():
        var = f"{prefix}{name.upper()}_FILE"
        path = env.get(var, "").strip()
        if name not in values and path:
            values[name] = reader(var, path)
    settings = cls(**values)
    settings.check()
    return settings


def csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def floats(raw: str) -> tuple[float, ...]:
    return tuple(float(part) for part in csv(raw))


def networks(raw: str) -> tuple[IPNetwork, ...]:
    """A CIDR list (``10.0.0.0/8, 2001:db8::/32``); a bare address is a one-address network."""
    return tuple(ipaddress.ip_network(part, strict=False) for part in csv(raw))


def seconds(raw: str) -> float:
    """A duration that may be 0 (off), never negative."""
    value = float(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    """A parser of ``kind`` that refuses zero and negative values."""

    def parse(raw: str) -> T:
        value = kind(raw)
        if value <= 0:  # type: ignore[operator]
            raise ValueError("must be greater than 0")
        return value

    return parse


def fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def read_secret_lines(var: str, path: str) -> tuple[str, ...]:
    """The secrets in a file, one per line; blank lines and ``#`` comments (after leading
    blanks) are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from None
    stripped = (line.strip() for line in lines)
    secrets = tuple(line for line in stripped if line and not line.startswith("#"))
    if not secrets:
        raise ConfigError(f"{var}: {path} holds no secret")
    return secrets


def read_secret_file(var: str, path: str) -> str:
    """The first secret of a secret file (so that a trailing newline is harmless)."""
    return read_secret_lines(var, path)[0]
