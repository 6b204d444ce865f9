"""Settings of the group directory: one frozen dataclass read from ``SINK_DIRECTORY_*``.

Handlers receive only the event, so the directory reads its own configuration once, when
it first opens its store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from callback_sink.sink.config import boolean, load
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.setting import declare

#: Who reads the directory's settings: its handler (in workers) and ``groups``.
DIRECTORY = frozenset({"worker", "groups"})
#: The default store: an SQLite file beside the other run-time files (nothing to install).
DEFAULT_URL = "sqlite:///var/directory.sqlite3"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


@dataclass(frozen=True)
class DirectorySettings:
    url: str = declare(
        DEFAULT_URL, secret=True, kinds=DIRECTORY,
        help="Where the directory lives: sqlite:///path/file.sqlite3 (one worker process) or "
        "postgresql://user:password@host/db (any number of workers); never logged.",
    )  # fmt: skip
    fetch: bool = declare(
        True, parse=boolean, kinds=DIRECTORY,
        help="Look group details and mute expiries up through the REST client when the "
        "SINK_EASEMOB_* credentials are set (legacy callbacks do not carry them).",
    )  # fmt: skip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DirectorySettings:
        """Read ``SINK_DIRECTORY_*``; raise :class:`ConfigError` naming a bad one."""
        return load(cls, "SINK_DIRECTORY_", env)

    def check(self) -> None:
        """The URL names a database we have a driver for."""
        self.engine_url()

    def engine_url(self) -> str:
        """The SQLAlchemy URL with its asyncio driver (``sqlite+aiosqlite://…``)."""
        scheme, sep, rest = self.url.partition("://")
        driver = _DRIVERS.get(scheme.lower())
        if not sep or driver is None:
            raise ConfigError("SINK_DIRECTORY_URL must start with sqlite:/// or postgresql://")
        return f"{driver}://{rest}"

    def sqlite_path(self) -> Path | None:
        """The SQLite file, when the store is one (``None`` for an in-memory database)."""
        scheme, _, rest = self.url.partition("://")
        if scheme.lower() != "sqlite" or rest in ("", "/", "/:memory:"):
            return None
        return Path(rest[1:]) if rest.startswith("/") else Path(rest)
