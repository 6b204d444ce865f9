"""Apps and their secrets: which secret may sign which app's callbacks.

A company runs several appkeys (prod, staging, regions), each with up to 4 callback rules and
a secret per rule. ``SINK_APPS="org#app1=secretA|secretA2,org#app2=secretB"`` (or
``SINK_APPS_FILE``, one app a line) maps each appkey to its secrets; a callback is accepted
only with a secret of its own app. ``SINK_SECRETS`` alone keeps meaning "any app".

The appkey of a callback comes from its ``callId``, which Easemob documents as
``{appkey}_{uuid}`` (everything before the last ``_``), or from its ``appkey`` field when the
callId carries none; when both are present and differ, the callback is refused. A callback
that names no app at all (the spec's own ``chat_offline`` example: a callId without ``_`` and
no ``appkey`` field) is accepted when exactly one configured app's secret verifies it, and is
that app's from then on; when none or several do, it is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from callback_sink.sink.errors import ConfigError, Rejected
from callback_sink.sink.signature import verify

#: One app and its secrets, as ``SINK_APPS`` spells them.
App = tuple[str, tuple[str, ...]]
#: What ``SINK_APPS`` is parsed into: one entry per app, in the order given.
Apps = tuple[App, ...]

#: Easemob allows up to 4 callback rules (4 secrets) per app.
MAX_SECRETS_PER_APP = 4


def parse_app(raw: str) -> App:
    """``org#app=secret1|secret2`` → ``("org#app", ("secret1", "secret2"))``."""
    appkey, sep, secrets = raw.partition("=")
    appkey = appkey.strip()
    names = tuple(s.strip() for s in secrets.split("|") if s.strip())
    org, hash_, app = appkey.partition("#")
    if not sep or not org or not hash_ or not app:
        raise ValueError(f"{raw.partition('=')[0].strip()!r}: expected org#app=secret[|secret…]")
    if not names:
        raise ValueError(f"{appkey}: no secret after '='")
    if len(names) > MAX_SECRETS_PER_APP:
        raise ValueError(f"{appkey}: more than {MAX_SECRETS_PER_APP} secrets (rules per app)")
    return appkey, names


def _checked(apps: Sequence[App]) -> Apps:
    seen: set[str] = set()
    for appkey, _ in apps:
        if appkey in seen:
            raise ValueError(f"{appkey} is listed twice")
        seen.add(appkey)
    return tuple(apps)


def parse_apps(raw: str) -> Apps:
    """The ``SINK_APPS`` syntax: apps separated by commas."""
    return _checked([parse_app(part) for part in raw.split(",") if part.strip()])


def read_apps_file(var: str, path: str) -> Apps:
    """``SINK_APPS_FILE``: one ``org#app=secret|…`` a line; blank lines and ``#`` comments
    (a line whose first non-blank character is ``#``) are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from None
    entries = [line.strip() for line in lines]
    entries = [line for line in entries if line and not line.startswith("#")]
    try:
        apps = _checked([parse_app(line) for line in entries])
    except ValueError as exc:
        raise ConfigError(f"{var}: {path}: {exc}") from None
    if not apps:
        raise ConfigError(f"{var}: {path} lists no app")
    return apps


def appkey_of(doc: Mapping[str, Any]) -> str | None:
    """The app a callback belongs to: from its callId (``{appkey}_{uuid}``), else from its
    ``appkey`` field; None when neither names one. :func:`claimed_appkey` also refuses a
    callback whose two sources disagree."""
    from_call_id = _from_call_id(doc.get("callId"))
    if from_call_id is not None:
        return from_call_id
    field = doc.get("appkey")
    return field if isinstance(field, str) and field else None


def claimed_appkey(doc: Mapping[str, Any]) -> str | None:
    """Like :func:`appkey_of`, but a callId and an ``appkey`` field that name two different
    apps are a refusal (401): the callId is signed, the field is not."""
    from_call_id = _from_call_id(doc.get("callId"))
    field = doc.get("appkey")
    if from_call_id is not None and isinstance(field, str) and field and field != from_call_id:
        raise Rejected(401, "the callId's appkey and the appkey field differ")
    return appkey_of(doc)


def _from_call_id(call_id: object) -> str | None:
    if not isinstance(call_id, str):
        return None
    appkey, sep, _ = call_id.rpartition("_")
    return appkey if sep and "#" in appkey else None


def secrets_for(doc: Mapping[str, Any], apps: Apps, any_app: Sequence[str]) -> Sequence[str]:
    """The secrets that may sign ``doc``: its own app's when ``apps`` is configured (a
    callback of an unlisted app, or of no app, gets 401), else ``any_app``."""
    if not apps:
        return any_app
    appkey = claimed_appkey(doc)
    if appkey is None:
        raise Rejected(401, "the callback names no appkey (SINK_APPS is set)")
    for listed, secrets in apps:
        if listed == appkey:
            return secrets
    raise Rejected(401, "the callback's app is not in SINK_APPS", details={"appkey": appkey})


def check_signature(doc: Mapping[str, Any], apps: Apps, any_app: Sequence[str]) -> str | None:
    """Refuse (401) a callback whose ``security`` no secret of its app (see
    :func:`secrets_for`) produces. With ``apps``, a callback naming no app is accepted when
    exactly one app's secret verifies it: that app is returned (None otherwise)."""
    if apps and claimed_appkey(doc) is None:
        return _only_app(doc, apps)
    secrets = secrets_for(doc, apps, any_app)
    if not verify(doc["callId"], doc["timestamp"], doc["security"], secrets):
        raise Rejected(401, "signature does not match its app's secret" if apps else
                       "signature does not match any configured secret")  # fmt: skip
    return None


def _only_app(doc: Mapping[str, Any], apps: Apps) -> str:
    """The one app whose secret signed ``doc``, a callback naming no app."""
    call_id, timestamp, security = doc["callId"], doc["timestamp"], doc["security"]
    signers = [appkey for appkey, secrets in apps if verify(call_id, timestamp, security, secrets)]
    if len(signers) == 1:
        return signers[0]
    if signers:
        raise Rejected(401, "the callback names no appkey and several apps' secrets verify it")
    raise Rejected(401, "the callback names no appkey and no app's secret verifies it")


def all_secrets(apps: Apps, any_app: Sequence[str]) -> tuple[str, ...]:
    """Every configured secret, whichever form configured it."""
    return (*any_app, *(secret for _, secrets in apps for secret in secrets))
