"""TLS to RabbitMQ (``amqps://``) and to Redis (``rediss://``), from the TLS settings of
:class:`~callback_sink.sink.settings_more.TlsSettings` (a CA file, a client certificate and
its key, a host-name check, for each).

The scheme of the URL turns TLS on; the settings say whom to trust (a CA file instead of the
system's store), which client certificate to show (mutual TLS) and whether the server's
certificate must name the host of the URL. :func:`amqp_context` builds the one
:class:`ssl.SSLContext` every connection to the broker uses; :func:`redis_tls_kwargs` gives
the keyword arguments of a redis-py client (``redis_client.connect(url, **redis_tls_kwargs(s))``).
:func:`check` reads every file once at start-up, so a missing, unreadable or malformed one
stops the process with a :class:`ConfigError` naming its variable, not at the first connect.

A handshake that fails for a reason waiting cannot fix (an untrusted certificate, a name
that does not match, a port that does not speak TLS) is :func:`refusal`, which
:mod:`sink.permanent` reports as one line instead of retrying.
"""

from __future__ import annotations

import functools
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callback_sink.sink.errors import ConfigError, TlsRefused

if TYPE_CHECKING:
    from callback_sink.sink.settings_more import TlsSettings

#: SSL errors that a retry may cure: the peer went away mid-handshake (a restart).
TRANSIENT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError)
#: How redis-py names the server in its connection errors ("… connecting to host:port.").
_REDIS_SERVER = re.compile(r"connecting to (\S+?)\.?(?:\s|$)")


def _files(settings: TlsSettings, service: str) -> tuple[str, str, str]:
    """(CA, certificate, key) of ``service`` (``amqp`` or ``dedup``); "" when unset."""
    if service == "amqp":
        return settings.amqp_tls_ca_file, settings.amqp_tls_cert_file, settings.amqp_tls_key_file
    return settings.dedup_tls_ca_file, settings.dedup_tls_cert_file, settings.dedup_tls_key_file


def amqp_uses_tls(settings: Any) -> bool:
    """Whether any URL of ``SINK_AMQP_URL`` is ``amqps://``."""
    return any(url.startswith("amqps://") for url in settings.amqp_urls)


def redis_uses_tls(settings: Any) -> bool:
    """Whether ``SINK_DEDUP_URL`` is ``rediss://`` (or ``rediss+sentinel://``,
    ``rediss+cluster://``)."""
    return str(settings.dedup_url).startswith(("rediss://", "rediss+"))


def amqp_context(settings: Any) -> ssl.SSLContext | None:
    """The context of every ``amqps://`` connection (None for plain ``amqp://``); built once
    per process (the files are read at start-up: a renewed certificate needs a restart)."""
    if not amqp_uses_tls(settings):
        return None
    ca, cert, key = _files(settings, "amqp")
    return _context(ca, cert, key, settings.amqp_tls_check_hostname)


def redis_tls_kwargs(settings: Any) -> dict[str, Any]:
    """redis-py connection keywords for ``SINK_DEDUP_URL`` ({} unless ``rediss…://``): the
    CA to trust, the client certificate, the host-name check; for
    :func:`callback_sink.sink.redis_client.connect` and ``Redis.from_url``. The server's
    certificate is always verified."""
    if not redis_uses_tls(settings):
        return {}
    ca, cert, key = _files(settings, "dedup")
    kwargs: dict[str, Any] = {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": settings.dedup_tls_check_hostname,
    }
    if ca:
        kwargs["ssl_ca_certs"] = ca
    if cert:
        kwargs["ssl_certfile"], kwargs["ssl_keyfile"] = cert, key
    return kwargs


#: Per service: its URL variable, the schemes that turn TLS on, its file variables.
_VARIABLES = {
    "amqp": ("SINK_AMQP_URL", "amqps://", (
        "SINK_AMQP_TLS_CA_FILE", "SINK_AMQP_TLS_CERT_FILE", "SINK_AMQP_TLS_KEY_FILE")),
    "dedup": ("SINK_DEDUP_URL", "rediss://, rediss+sentinel:// or rediss+cluster://", (
        "SINK_DEDUP_TLS_CA_FILE", "SINK_DEDUP_TLS_CERT_FILE", "SINK_DEDUP_TLS_KEY_FILE")),
}  # fmt: skip


def check(settings: Any) -> None:
    """The TLS settings make sense together and every file they name loads; a
    :class:`ConfigError` naming the variable otherwise."""
    for service, uses in (("amqp", amqp_uses_tls(settings)), ("dedup", redis_uses_tls(settings))):
        url_var, schemes, names = _VARIABLES[service]
        files = _files(settings, service)
        given = [(name, path) for name, path in zip(names, files, strict=True) if path]
        if given and not uses:
            raise ConfigError(f"{given[0][0]} is set but {url_var} is not {schemes}: TLS is off")
        _, cert, key = files
        if bool(cert) != bool(key):
            have, lack = (names[1], names[2]) if cert else (names[2], names[1])
            raise ConfigError(f"{lack} is required with {have} (mutual TLS needs both)")
        for name, path in given:
            _readable(name, path)
        if uses:
            _load(names, files)


def _readable(var: str, path: str) -> None:
    try:
        with Path(path).open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror or exc}") from None


def _load(names: tuple[str, str, str], files: tuple[str, str, str]) -> None:
    """Load the files as the context will, so that a bad one stops the start, named."""
    ca, cert, key = files
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if ca:
            context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{names[0]}: {ca} holds no usable PEM certificate ({exc})") from None
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{names[1]} / {names[2]}: {cert} and {key} are not a PEM certificate and its "
                f"unencrypted private key ({exc})"
            ) from None


@functools.lru_cache(maxsize=8)
def _context(ca: str, cert: str, key: str, check_hostname: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname  # the chain is verified either way
    if cert:
        context.load_cert_chain(cert, key)
    return context


def refusal(exc: BaseException) -> str | None:
    """Why the TLS handshake in ``exc``'s chain failed for good, naming the server when the
    error does; None when ``exc`` is no such failure (a refused port, a reset: a retry may
    help)."""
    found = _find(exc)
    if found is None:
        return None
    server, reason = found
    return f"TLS with {server} failed: {reason}" if server else f"TLS failed: {reason}"


def failed(exc: BaseException, server: str) -> TlsRefused | None:
    """``exc`` as a :class:`TlsRefused` naming ``server`` (host:port) when it is a TLS
    failure retrying cannot fix, else None: aiormq's errors do not name the server."""
    found = _find(exc)
    if found is None:
        return None
    refused = TlsRefused(found[0] or server, found[1])
    refused.__cause__ = exc
    return refused


def _find(exc: BaseException) -> tuple[str | None, str] | None:
    server = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TlsRefused):
            return current.server, current.reason
        if server is None and (match := _REDIS_SERVER.search(str(current))):
            server = match.group(1)
        if isinstance(current, ssl.SSLError) and not isinstance(current, TRANSIENT):
            return server, describe(current)
        current = current.__cause__ or current.__context__
    return None


def describe(exc: ssl.SSLError) -> str:
    """What an operator should check, from an SSL error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or exc.reason or str(exc)
        if "hostname" in message.lower() or "ip address mismatch" in message.lower():
            return f"the server's certificate does not name its host ({message})"
        return f"the server's certificate is not trusted ({message}): check the CA file"
    reason = (exc.reason or str(exc)).lower()
    if "wrong_version_number" in reason or "record_layer_failure" in reason:
        return f"the port does not speak TLS ({exc.reason}): check the URL's port"
    if "alert" in reason:
        return f"the server refused us ({exc.reason}): check the client certificate and key"
    return str(exc.reason or exc)
