"""Reading settings from the environment: the one home of every value parser.

Every settings class of the project (the sink's ``SINK_*``, the REST client's
``SINK_EASEMOB_*``, the emulator's ``SINK_EMULATOR_*``, the directory's ``SINK_DIRECTORY_*``)
is a frozen dataclass whose fields are declared with :func:`sink.setting.declare` (parser,
bounds, unit, help), read by :func:`load`. A value that does not parse, or is out of its
bounds, stops start-up with a :class:`ConfigError` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from callback_sink.sink.errors import ConfigError
from callback_sink.sink.setting import setting_of

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Checked(Protocol):
    def check(self) -> None: ...


C = TypeVar("C", bound=Checked)


def read_env(cls: type[Any], prefix: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The fields of dataclass ``cls`` found in ``env`` as ``{prefix}{FIELD}``, parsed and
    bounds-checked by each field's declaration (:mod:`sink.setting`); empty values count as
    unset; ``{prefix}{FIELD}_FILE`` is read for a field declared with a file reader when the
    field itself is unset. A bad value raises :class:`ConfigError`, one line naming it."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        declared = setting_of(f)
        var = f"{prefix}{f.name.upper()}"
        raw = env.get(var, "").strip()
        if raw:
            try:
                value = declared.parse(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{var}={raw!r} is not valid: {exc}") from None
            if (reason := declared.check(value)) is not None:
                raise ConfigError(f"{var}={raw}: {reason}")
            values[f.name] = value
        elif declared.file is not None and (path := env.get(f"{var}_FILE", "").strip()):
            values[f.name] = declared.file(f"{var}_FILE", path)
    return values


def load(cls: type[C], prefix: str, env: Mapping[str, str] | None = None) -> C:
    """Build ``cls`` from ``env`` (the process environment by default) and run its
    ``check()`` (the checks that involve several fields)."""
    values = read_env(cls, prefix, os.environ if env is None else env)
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
