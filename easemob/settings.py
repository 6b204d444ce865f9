"""Settings of the REST client (``SINK_EASEMOB_*``) and of the emulator (``SINK_EMULATOR_*``).

Each is one frozen dataclass read once from the environment; a malformed value stops
start-up with a :class:`ConfigError` naming the variable. Secrets (the client secret, the
callback secret) are ``repr=False`` so a settings object can be logged safely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from callback_sink.sink.config import boolean, fraction, load, read_secret_file
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.setting import declare
from callback_sink.sink.settings import Settings

__all__ = ["EasemobSettings", "EmulatorSettings", "boolean", "fraction", "read_secret_file"]

#: Easemob's default quota for the group REST API: 100 requests per second per app key.
DEFAULT_RATE_LIMIT = 100.0
#: Who reads the REST client's settings: the group directory (in workers) and ``backfill``.
REST = frozenset({"worker", "backfill"})
EMULATOR = frozenset({"emulate"})
#: A sink listening on every address is reached on this machine through the loopback one.
LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def local_callback_url(sink: Settings) -> str:
    """The callback URL of the sink ``sink`` configures, as seen from this machine:
    ``http://{SINK_HOST}:{SINK_PORT}{SINK_PATH}``, with a loopback address for a sink that
    listens on every address (``0.0.0.0``, ``::``, empty)."""
    host = LOOPBACK.get(sink.host, sink.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{sink.port}{sink.path}"


def _none_is_empty(raw: str) -> str:
    """A URL, or ``none`` for no URL at all."""
    return "" if raw.lower() == "none" else raw


def base_url(host: str) -> str:
    """``a1.easemob.com`` → ``https://a1.easemob.com``; a URL with a scheme is kept."""
    host = host.rstrip("/")
    return host if host.startswith(("http://", "https://")) else f"https://{host}"


@dataclass(frozen=True)
class EasemobSettings:
    """How to reach one Easemob app's REST API. Unset (the default) means "no REST client":
    the group directory then keeps only what callbacks tell it."""

    host: str = declare(
        "", kinds=REST,
        help="REST host from the console (a1.easemob.com), or a URL (http://127.0.0.1:8090).",
    )  # fmt: skip
    org: str = declare("", kinds=REST, help="Organisation name (the app key before #).")
    app: str = declare("", kinds=REST, help="App name (the app key after #).")
    client_id: str = declare("", kinds=REST, help="Client ID of the app's client credentials.")
    client_secret: str = declare(
        "", secret=True, file=read_secret_file, kinds=REST,
        help="Client secret of the app's client credentials; never logged.",
    )  # fmt: skip
    rate_limit: float = declare(
        DEFAULT_RATE_LIMIT, parse=float, unit="/s", above=True, low=0, high=100_000,
        kinds=REST, help="Most requests per second this client sends (Easemob's default "
        "quota is 100).",
    )  # fmt: skip
    max_attempts: int = declare(
        5, parse=int, low=1, high=100, kinds=REST,
        help="Attempts of one request answered 429 / 503 before giving up.",
    )  # fmt: skip
    backoff_base: float = declare(
        0.5, parse=float, unit="s", above=True, low=0, high=3600, kinds=REST,
        help="First back-off delay after a 429 / 503; doubles each attempt (with jitter).",
    )  # fmt: skip
    backoff_max: float = declare(
        8.0, parse=float, unit="s", above=True, low=0, high=3600, kinds=REST,
        help="Longest back-off delay.",
    )  # fmt: skip
    timeout: float = declare(
        10.0, parse=float, unit="s", above=True, low=0, high=3600, kinds=REST,
        help="Time-out of one HTTP request.",
    )  # fmt: skip
    token_ttl: int = declare(
        0, parse=int, unit="s", low=0, high=365 * 24 * 3600, kinds=REST,
        help="Token lifetime to ask for (0: Easemob's default).",
    )  # fmt: skip

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
        return load(cls, "SINK_EASEMOB_", env)

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
        if self.backoff_max < self.backoff_base:
            raise ConfigError(
                "SINK_EASEMOB_BACKOFF_MAX must not be below SINK_EASEMOB_BACKOFF_BASE"
            )


@dataclass(frozen=True)
class EmulatorSettings:
    """The local stand-in for Easemob started by ``callback-sink emulate``."""

    host: str = declare(
        "127.0.0.1", kinds=EMULATOR, help="Listen address of the emulator's REST API."
    )
    port: int = declare(
        8090, parse=int, low=1, high=65535, kinds=EMULATOR,
        help="Listen port of the emulator's REST API.",
    )  # fmt: skip
    org: str = declare(
        "easemob-demo", kinds=EMULATOR, help="Organisation name: the API lives under /{org}/{app}."
    )
    app: str = declare(
        "chatdemoui", kinds=EMULATOR, help="App name: the API lives under /{org}/{app}."
    )
    client_id: str = declare(
        "emulator-client-id", kinds=EMULATOR, help="Client ID the token endpoint accepts."
    )
    client_secret: str = declare(
        "emulator-client-secret", secret=True, kinds=EMULATOR,
        help="Client secret the token endpoint accepts.",
    )  # fmt: skip
    token_ttl: int = declare(
        3600, parse=int, unit="s", low=1, high=365 * 24 * 3600, kinds=EMULATOR,
        help="Lifetime of the tokens it issues.",
    )  # fmt: skip
    sink_url: str = declare(
        "http://127.0.0.1:8080/callbacks", parse=_none_is_empty, kinds=EMULATOR,
        default_text="http://{SINK_HOST}:{SINK_PORT}{SINK_PATH}",
        help="Where callbacks are POSTed (none: keep them in memory only); unset: the local "
        "sink's callback URL, from SINK_HOST, SINK_PORT and SINK_PATH.",
    )  # fmt: skip
    callback_secret: str = declare(
        "", secret=True, kinds=EMULATOR,
        help="Secret callbacks are signed with (empty: SINK_SECRETS or the development secret).",
    )  # fmt: skip
    throttle_rate: float = declare(
        0.0, parse=float, low=0, high=1, kinds=EMULATOR,
        help="Fraction of REST requests answered 429 at random (fault injection).",
    )  # fmt: skip
    unavailable_rate: float = declare(
        0.0, parse=float, low=0, high=1, kinds=EMULATOR,
        help="Fraction of REST requests answered 503 at random (fault injection).",
    )  # fmt: skip
    callback_delay: float = declare(
        0.0, parse=float, unit="s", low=0, high=3600, kinds=EMULATOR,
        help="Each callback waits a random delay up to this long (so they can overtake).",
    )  # fmt: skip
    duplicate_rate: float = declare(
        0.0, parse=float, low=0, high=1, kinds=EMULATOR, help="Fraction of callbacks sent twice."
    )
    callback_timeout: float = declare(
        10.0, parse=float, unit="s", above=True, low=0, high=3600, kinds=EMULATOR,
        help="How long one callback POST may take (Easemob waits 60).",
    )  # fmt: skip
    seed: int | None = declare(
        None, parse=int, low=0, high=2**64 - 1, kinds=EMULATOR, default_text="random",
        help="Seed of the fault-injection random numbers (unset: different every run).",
    )  # fmt: skip
    presend_url: str = declare(
        "", parse=_none_is_empty, kinds=EMULATOR,
        help="Where messages clients send are checked before delivery (none: no pre-send "
        "rule, every message is delivered).",
    )  # fmt: skip
    presend_timeout_ms: float = declare(
        200.0, parse=float, unit="ms", above=True, low=0, high=60_000, kinds=EMULATOR,
        help="How long the emulator waits for the pre-send answer (Easemob's default: 200).",
    )  # fmt: skip
    presend_default: str = declare(
        "accept", parse=str.lower, kinds=EMULATOR,
        help="What it does when the pre-send answer is late or unusable: accept (deliver, "
        "Easemob's default) or reject.",
    )  # fmt: skip
    callback_storage: bool = declare(
        False, parse=boolean, kinds=EMULATOR,
        help="Keep callbacks that failed twice in 10-minute buckets and re-send them on "
        "request (Easemob's paid callback storage); also --callback-storage.",
    )  # fmt: skip
    rate_limit: float = declare(
        0.0, parse=float, unit="/s", low=0, high=100_000, kinds=EMULATOR,
        help="The app's REST quota (0: none): above it, 429, counted per wall-clock second.",
    )  # fmt: skip

    @property
    def appkey(self) -> str:
        """``org#app``, as callbacks spell it."""
        return f"{self.org}#{self.app}"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, sink: Settings | None = None
    ) -> EmulatorSettings:
        """Read ``SINK_EMULATOR_*``; raise :class:`ConfigError` naming a bad one. Without
        ``SINK_EMULATOR_SINK_URL``, callbacks go to the sink of ``sink`` (default: the
        ``SINK_*`` settings of ``env``) on this machine: see :func:`local_callback_url`."""
        env = os.environ if env is None else env
        settings = load(cls, "SINK_EMULATOR_", env)
        if env.get("SINK_EMULATOR_SINK_URL", "").strip():
            return settings
        return replace(settings, sink_url=local_callback_url(sink or Settings.from_env(env)))

    def check(self) -> None:
        if self.sink_url and not self.sink_url.startswith(("http://", "https://")):
            raise ConfigError("SINK_EMULATOR_SINK_URL must start with http:// or https://")
        if self.throttle_rate + self.unavailable_rate > 1.0:
            raise ConfigError(
                "SINK_EMULATOR_THROTTLE_RATE + SINK_EMULATOR_UNAVAILABLE_RATE must not exceed 1"
            )
        if self.presend_url and not self.presend_url.startswith(("http://", "https://")):
            raise ConfigError("SINK_EMULATOR_PRESEND_URL must start with http:// or https://")
        if self.presend_default not in ("accept", "reject"):
            raise ConfigError("SINK_EMULATOR_PRESEND_DEFAULT must be accept or reject")
