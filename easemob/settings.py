"""Settings of the REST client (``SINK_EASEMOB_*``) and of the emulator (``SINK_EMULATOR_*``).

Each is one frozen dataclass read once from the environment; a malformed value stops
start-up with a :class:`ConfigError` naming the variable. Secrets (the client secret, the
callback secret) are ``repr=False`` so a settings object can be logged safely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callback_sink.sink.config import boolean, fraction, load, positive, read_secret_file
from callback_sink.sink.errors import ConfigError

__all__ = ["EasemobSettings", "EmulatorSettings", "boolean", "fraction", "read_secret_file"]

#: Easemob's default quota for the group REST API: 100 requests per second per app key.
DEFAULT_RATE_LIMIT = 100.0


def base_url(host: str) -> str:
    """``a1.easemob.com`` → ``https://a1.easemob.com``; a URL with a scheme is kept."""
    host = host.rstrip("/")
    return host if host.startswith(("http://", "https://")) else f"https://{host}"


@dataclass(frozen=True)
class EasemobSettings:
    """How to reach one Easemob app's REST API. Unset (the default) means "no REST client":
    the group directory then keeps only what callbacks tell it."""

    #: REST host from the console, e.g. ``a1.easemob.com``, or a URL (``http://127.0.0.1:8090``).
    host: str = ""
    #: Organisation name (the part of the app key before ``#``).
    org: str = ""
    #: App name (the part of the app key after ``#``).
    app: str = ""
    #: Client ID of the app's client credentials.
    client_id: str = ""
    #: Client secret (or ``SINK_EASEMOB_CLIENT_SECRET_FILE``); never logged.
    client_secret: str = field(default="", repr=False)
    #: Most requests per second this client sends (Easemob's default quota is 100).
    rate_limit: float = DEFAULT_RATE_LIMIT
    #: Attempts of one request answered 429 / 503 before giving up.
    max_attempts: int = 5
    #: First back-off delay after a 429 / 503, seconds; doubles each attempt (with jitter).
    backoff_base: float = 0.5
    #: Longest back-off delay, seconds.
    backoff_max: float = 8.0
    #: Time-out of one HTTP request, seconds.
    timeout: float = 10.0
    #: Token lifetime to ask for, seconds (0: Easemob's default).
    token_ttl: int = 0

    @property
    def configured(self) -> bool:
        """True when every credential is set, so a REST client can be built."""
        return all((self.host, self.org, self.app, self.client_id, self.client_secret))

    @property
    def base_url(self) -> str:
        """``https://{host}/{org}/{app}``: every endpoint's prefix."""
        return f"{base_url(self.host)}/{self.org}/{self.app}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EasemobSettings:
        """Read ``SINK_EASEMOB_*``; raise :class:`ConfigError` naming a bad or missing one."""
        secret_file = {"client_secret": read_secret_file}
        return load(cls, "SINK_EASEMOB_", _CLIENT_PARSERS, env, secret_files=secret_file)

    def check(self) -> None:
        """Either no credential at all, or all of them; and sane limits."""
        given = {
            "SINK_EASEMOB_HOST": self.host,
            "SINK_EASEMOB_ORG": self.org,
            "SINK_EASEMOB_APP": self.app,
            "SINK_EASEMOB_CLIENT_ID": self.client_id,
            "SINK_EASEMOB_CLIENT_SECRET": self.client_secret,
        }
        missing = [var for var, value in given.items() if not value]
        if missing and len(missing) < len(given):
            raise ConfigError(f"incomplete Easemob credentials: set {', '.join(missing)}")
        if self.max_attempts < 1:
            raise ConfigError("SINK_EASEMOB_MAX_ATTEMPTS must be at least 1")
        if self.backoff_max < self.backoff_base:
            raise ConfigError(
                "SINK_EASEMOB_BACKOFF_MAX must not be below SINK_EASEMOB_BACKOFF_BASE"
            )


_CLIENT_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "org": str,
    "app": str,
    "client_id": str,
    "client_secret": str,
    "rate_limit": positive(float),
    "max_attempts": int,
    "backoff_base": positive(float),
    "backoff_max": positive(float),
    "timeout": positive(float),
    "token_ttl": int,
}


@dataclass(frozen=True)
class EmulatorSettings:
    """The local stand-in for Easemob started by ``callback-sink emulate``."""

    #: Listen address and port of the emulator's REST API.
    host: str = "127.0.0.1"
    port: int = 8090
    #: Organisation and app name: the API lives under ``/{org}/{app}``.
    org: str = "easemob-demo"
    app: str = "chatdemoui"
    #: Client credentials the token endpoint accepts.
    client_id: str = "emulator-client-id"
    client_secret: str = field(default="emulator-client-secret", repr=False)
    #: Lifetime of the tokens it issues, seconds.
    token_ttl: int = 3600
    #: Where callbacks are POSTed (``none``: keep them in memory only).
    sink_url: str = "http://127.0.0.1:8080/callbacks"
    #: Secret callbacks are signed with (empty: SINK_SECRETS or the development secret).
    callback_secret: str = field(default="", repr=False)
    #: Fraction of REST requests answered 429, and 503, at random (fault injection).
    throttle_rate: float = 0.0
    unavailable_rate: float = 0.0
    #: Each callback waits a random delay up to this many seconds (so they can overtake).
    callback_delay: float = 0.0
    #: Fraction of callbacks sent twice.
    duplicate_rate: float = 0.0
    #: How long one callback POST may take, seconds (Easemob waits 60).
    callback_timeout: float = 10.0
    #: Seed of the fault-injection random numbers (unset: different every run).
    seed: int | None = None
    #: The pre-send rule: where messages clients send are checked before delivery
    #: (``none``: no rule, every message is delivered), how long the emulator waits for the
    #: answer, milliseconds (Easemob's default: 200), and what it does when the answer is
    #: late or unusable: ``accept`` (deliver, Easemob's default) or ``reject``.
    presend_url: str = ""
    presend_timeout_ms: float = 200.0
    presend_default: str = "accept"
    #: Keep callbacks that failed twice in 10-minute buckets and re-send them on request
    #: (Easemob's paid callback storage, 回调异常缓存): ``--callback-storage``.
    callback_storage: bool = False
    #: The app's REST quota, requests per second (0: none): above it, 429 (as Easemob's
    #: per-app limit), counted per wall-clock second.
    rate_limit: float = 0.0

    @property
    def appkey(self) -> str:
        """``org#app``, as callbacks spell it."""
        return f"{self.org}#{self.app}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmulatorSettings:
        """Read ``SINK_EMULATOR_*``; raise :class:`ConfigError` naming a bad one."""
        return load(cls, "SINK_EMULATOR_", _EMULATOR_PARSERS, env)

    def check(self) -> None:
        if self.sink_url and not self.sink_url.startswith(("http://", "https://")):
            raise ConfigError("SINK_EMULATOR_SINK_URL must start with http:// or https://")
        if self.throttle_rate + self.unavailable_rate > 1.0:
            raise ConfigError(
                "SINK_EMULATOR_THROTTLE_RATE + SINK_EMULATOR_UNAVAILABLE_RATE must not exceed 1"
            )
        if self.rate_limit < 0:
            raise ConfigError("SINK_EMULATOR_RATE_LIMIT must be 0 (no quota) or more")
        if not 0 < self.port < 65536:
            raise ConfigError("SINK_EMULATOR_PORT must be a TCP port")
        if self.presend_url and not self.presend_url.startswith(("http://", "https://")):
            raise ConfigError("SINK_EMULATOR_PRESEND_URL must start with http:// or https://")
        if self.presend_default not in ("accept", "reject"):
            raise ConfigError("SINK_EMULATOR_PRESEND_DEFAULT must be accept or reject")


_EMULATOR_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": int,
    "org": str,
    "app": str,
    "client_id": str,
    "client_secret": str,
    "token_ttl": int,
    "sink_url": lambda raw: "" if raw.lower() == "none" else raw,
    "callback_secret": str,
    "throttle_rate": fraction,
    "unavailable_rate": fraction,
    "callback_delay": float,
    "duplicate_rate": fraction,
    "callback_timeout": positive(float),
    "seed": int,
    "presend_url": lambda raw: "" if raw.lower() == "none" else raw,
    "presend_timeout_ms": positive(float),
    "presend_default": str.lower,
    "callback_storage": boolean,
    "rate_limit": float,
}
