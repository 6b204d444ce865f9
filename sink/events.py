"""Typed callback events, decoded once from the raw body.

Every Easemob callback family becomes one :class:`Event`; the family decides the event's
name (see :mod:`sink.names`) and where the group id, the chat-room flag and the operation
live. The raw document is kept whole, unknown fields included.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from callback_sink.sink import names
from callback_sink.sink.apps import appkey_of
from callback_sink.sink.errors import DecodeError

# `muc_id` is `{appkey}_{group id}@conference.easemob.com`, the appkey being `org#app`.
_MUC_ID = re.compile(r"^[^_@]*_(?P<gid>[^@]+)@conference\.")

#: The fields without which a body is not a callback at all (the ingress answers 400).
REQUIRED_FIELDS = ("callId", "timestamp", "security")
#: The callId becomes the AMQP message id, a short string of at most 255 bytes.
MAX_CALL_ID_BYTES = 255
#: The family of ``eventType: chat_offline``: one callback per offline recipient.
OFFLINE = "offline"
#: The key the ingress adds to a pre-send callback to make it a ``presend:verdict`` record
#: (see :mod:`sink.presend`); no Easemob callback has it, and the ingress refuses one that does.
PRESEND_RECORD_KEY = "presend_verdict"
#: A dedup key longer than this (UTF-8 bytes) is replaced by its digest: an offline key
#: carries the unsigned ``to``, and a replay padding it to a megabyte would otherwise cost a
#: megabyte of Redis per handler for the whole dedup TTL. Every key up to this is kept as is
#: (any callId alone, and callId + any real username), so marks set before keys were bounded
#: still match after an upgrade and nothing runs again.
MAX_DEDUP_KEY_BYTES = 256
#: What a digested dedup key starts with; a callId never does (Easemob's are ``org#app_id``).
DIGEST_KEY_PREFIX = "blake2b:"


@dataclass(frozen=True, slots=True)
class Event:
    """One Easemob callback, as handlers see it.

    ``name`` is what handlers subscribe to (``muc:apply``); ``operation`` is the raw value
    Easemob sent (``apply``, ``JOIN``, ``remote_accept`` ...) even when the name is
    ``…:unknown``. ``raw`` is the whole document as received.
    """

    call_id: str
    name: str
    family: str
    operation: str | None
    chat_type: str | None
    group_id: str | None
    is_chatroom: bool
    from_: str | None
    to: str | None
    timestamp: int
    msg_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def appkey(self) -> str | None:
        """The app (``org#app``) this callback belongs to: from the callId
        (``{appkey}_{uuid}``), else the ``appkey`` field; None when neither names one. With
        ``SINK_APPS`` set, the ingress only lets in callbacks signed by this app's secret."""
        return appkey_of(self.raw)

    @property
    def payload(self) -> dict[str, Any]:
        """The callback's ``payload`` object (empty when absent or not an object)."""
        value = self.raw.get("payload")
        return value if isinstance(value, dict) else {}

    @property
    def kind(self) -> str:
        """What this callback is, as ``family:operation``: the event name (``muc:kick``,
        ``offline:chat``; ``unknown:unknown`` for a shape nobody knows).

        Handlers are chosen by it, so a callId bound to the kind it first arrived as cannot
        reach, as a replay with edited unsigned fields, a handler that never saw that
        callId (the signature covers only callId and timestamp).
        """
        return f"{self.family}:{self.name.partition(':')[2] or names.UNKNOWN}"

    @property
    def dedup_key(self) -> str:
        """The identity of this callback for deduplication.

        Easemob sends one ``chat_offline`` callback per offline recipient, all sharing one
        callId, so those, and only those, are told apart by ``to``. A key longer than
        :data:`MAX_DEDUP_KEY_BYTES` (only an offline one can be: ``to`` is unsigned and
        unbounded) is its fixed-length digest instead.
        """
        if self.family != OFFLINE:
            return self.call_id
        key = f"{self.call_id}|{self.to or ''}"
        raw = key.encode()
        if len(raw) <= MAX_DEDUP_KEY_BYTES:
            return key
        return DIGEST_KEY_PREFIX + hashlib.blake2b(raw, digest_size=16).hexdigest()


def parse(body: bytes) -> dict[str, Any]:
    """Parse a body into a callback document, or raise :class:`DecodeError` saying why."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"body is a JSON {type(doc).__name__}, not an object")
    missing = [key for key in REQUIRED_FIELDS if key not in doc]
    if missing:
        raise DecodeError(f"missing field(s): {', '.join(missing)}")
    if not isinstance(doc["callId"], str) or not doc["callId"]:
        raise DecodeError("callId is not a non-empty string")
    if len(doc["callId"].encode()) > MAX_CALL_ID_BYTES:
        raise DecodeError(f"callId is longer than {MAX_CALL_ID_BYTES} bytes")
    if isinstance(doc["timestamp"], bool) or not isinstance(doc["timestamp"], int):
        raise DecodeError("timestamp is not an integer")
    if not isinstance(doc["security"], str):
        raise DecodeError("security is not a string")
    return doc


def decode(body: bytes) -> Event:
    """Parse and classify a body: the one place a callback becomes an :class:`Event`."""
    return from_document(parse(body))


def from_document(doc: dict[str, Any]) -> Event:
    """Classify an already parsed and checked document into an :class:`Event`."""
    family, kind = _classify(doc)
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    group_id, is_chatroom = _group(doc, family, payload)
    return Event(
        call_id=doc["callId"],
        name=names.name_of(family, kind),
        family=family,
        operation=kind,
        chat_type=_str(doc.get("chat_type")),
        group_id=group_id,
        is_chatroom=is_chatroom,
        from_=_str(doc.get("from")),
        to=_str(doc.get("to")),
        timestamp=doc["timestamp"],
        msg_id=_str(doc.get("msg_id")),
        raw=doc,
    )


def _classify(doc: dict[str, Any]) -> tuple[str, str | None]:
    """Return (family, raw kind) following the table in PROTOCOL.md.

    ``eventType: chat_offline`` is decided first and alone: an offline message is never a
    group, contact or other event, whatever its (unsigned) ``chat_type`` and payload say.
    """
    chat_type = doc.get("chat_type")
    if isinstance(doc.get(PRESEND_RECORD_KEY), dict):
        return "presend", "verdict"
    if doc.get("eventType") == "chat_offline":
        return OFFLINE, _str(chat_type)
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    if chat_type == "muc":
        return "muc", _str(payload.get("operation"))
    if doc.get("event") == "group_op_event":
        return "group_op", _str(doc.get("operation"))
    if chat_type == "roster":
        return "roster", _str(payload.get("operation"))
    if chat_type == "recall":
        return "recall", "message"
    if chat_type in ("read_ack", "channel_ack"):
        return "receipt", chat_type
    if chat_type == "notify":
        return "notify", _str(payload.get("type"))
    if chat_type in ("chat", "groupchat"):
        return "message", chat_type
    if chat_type is None and "eventType" not in doc and ("reason" in doc or "status" in doc):
        return "session", _str(doc.get("reason"))
    return names.UNKNOWN, None


def _group(doc: dict[str, Any], family: str, payload: dict[str, Any]) -> tuple[str | None, bool]:
    if family == "group_op":
        return _str(doc.get("id")), doc.get("type") == "CHATROOM"
    group_id = _str(doc.get("group_id"))
    if group_id is None and isinstance(payload.get("muc_id"), str):
        match = _MUC_ID.match(payload["muc_id"])
        group_id = match.group("gid") if match else None
    return group_id, payload.get("is_chatroom") is True


def _str(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
