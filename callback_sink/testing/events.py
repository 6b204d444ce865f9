"""Valid callbacks of any event name, built from the specification's examples.

:func:`make_event` answers the question every handler test starts with ("give me a
``muc:kick``"): a copy of the spec's example of that name (or of a sibling of its family,
with the operation changed), a fresh callId, the current time, and the test's overrides.
The result goes through the real decoder, so the test sees exactly what a worker would.
"""

from __future__ import annotations

import copy
import functools
import uuid
from typing import Any

import orjson

from callback_sink.sink import names
from callback_sink.sink.events import Event, decode
from callback_sink.sink.examples import load_examples, now_ms, resign
from callback_sink.sink.presend import Decision, Verdict, example_document, record_document

#: What :func:`make_event` signs with when the test does not care about the signature.
DEFAULT_SECRET = "callback-sink-testing"
#: Keyword arguments whose document field is not a valid Python name, or lives elsewhere.
FIELD_NAMES = {"from_": "from", "call_id": "callId", "event_type": "eventType"}


def make_event(name: str, **overrides: Any) -> Event:
    """A valid callback called ``name`` (``muc:create``, ``roster:add``, ``unknown`` …),
    decoded as a worker decodes it, with a fresh callId and the current timestamp.

    ``overrides`` replace top-level fields (``to="bob"``, ``from_="alice"``,
    ``call_id="…"``, ``timestamp=…``); ``payload={…}`` is merged into the payload;
    ``group_id=`` and ``is_chatroom=`` go wherever this family keeps them. An override that
    turns the callback into another event name raises :class:`ValueError`, and so does
    ``message:unknown``, which no callback decodes to.
    """
    return decode(make_body(name, secret=DEFAULT_SECRET, **overrides))


def make_body(name: str, *, secret: str, **overrides: Any) -> bytes:
    """Like :func:`make_event`, as the JSON body Easemob would POST, signed with ``secret``:
    for tests of an ingress (a sink with ``SINK_MAX_AGE_S`` accepts it: it is stamped now)."""
    doc = _shape(name)
    doc["callId"] = f"XXXX#XXXX_{uuid.uuid4().hex}"
    doc["timestamp"] = now_ms()
    _apply(doc, overrides)
    body = orjson.dumps(resign(doc, secret, now=False))
    found = decode(body).name
    if found != name:
        raise ValueError(f"make_event({name!r}, ...) built a {found!r} callback instead")
    return body


def sign_event(event: Event, secret: str) -> bytes:
    """``event`` as a body signed with ``secret`` (its own callId and timestamp kept)."""
    return orjson.dumps(resign(event.raw, secret, now=False))


@functools.cache
def _examples() -> dict[str, dict[str, Any]]:
    """The first spec example of each event name."""
    found: dict[str, dict[str, Any]] = {}
    for example in load_examples():
        body = orjson.dumps(example.body)
        found.setdefault(decode(body).name, example.body)
    return found


def _shape(name: str) -> dict[str, Any]:
    """A document of event ``name``: its own spec example, else a sibling's, adjusted."""
    if not names.is_subscribable(name) or name == names.ALL or name in names.FAMILIES:
        raise ValueError(f"make_event({name!r}): not an event name (see docs/reference/events.md)")
    examples = _examples()
    if name in examples:
        return copy.deepcopy(examples[name])
    family, _, kind = name.partition(":")
    if family == "presend":  # the ingress's record of an accepted pre-send callback
        return record_document(example_document(), Decision(Verdict.accept(), "chain"))
    doc = copy.deepcopy(examples[_SIBLING.get(family, "offline:groupchat")])
    payload = doc.setdefault("payload", {})
    if family in ("muc", "roster"):
        payload["operation"] = kind
    elif family == "group_op":
        doc["operation"] = kind.upper()
    elif family == "session":
        doc["reason"], doc["status"] = kind, "online" if kind == "login" else "offline"
    elif family in ("message", "offline"):
        doc["chat_type"] = kind
        doc["eventType"] = "chat_offline" if family == "offline" else "chat"
        if kind != "groupchat":
            doc.pop("group_id", None)
    else:  # recall, receipt, notify, unknown: a delivered message's envelope
        doc["eventType"] = "chat"
        doc.pop("group_id", None)
        doc["chat_type"], doc["payload"] = _OTHER_SHAPES.get(family, ("new_kind", {}))
        if family == "receipt":
            doc["chat_type"] = kind
        elif family == "notify":
            doc["payload"] = {"type": kind}
    return doc


#: Where a name without a spec example of its own borrows its envelope from.
_SIBLING = {
    "muc": "muc:create",
    "group_op": "group_op:join",
    "roster": "roster:remote_accept",
    "session": "session:login",
}
#: chat_type and payload of the families the spec has no example of.
_OTHER_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "recall": ("recall", {"recall_id": "8924312242322"}),
    "receipt": ("read_ack", {"ack_message_id": "8924312242322"}),
    "notify": ("notify", {}),
}


def _apply(doc: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Put the test's overrides where the decoder looks for them."""
    overrides = dict(overrides)
    payload = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    new_format = doc.get("event") == "group_op_event"
    if "payload" in overrides:
        payload = {**payload, **overrides.pop("payload")}
    if "is_chatroom" in overrides:
        chatroom = bool(overrides.pop("is_chatroom"))
        if new_format:
            doc["type"] = "CHATROOM" if chatroom else "GROUP"
        else:
            payload["is_chatroom"] = chatroom
    if "group_id" in overrides:
        group_id = overrides.pop("group_id")
        if new_format:
            doc["id"] = group_id
        else:
            doc["group_id"] = group_id
            if isinstance(payload.get("muc_id"), str):
                appkey = doc.get("appkey", "XXXX#XXXX")
                payload["muc_id"] = f"{appkey}_{group_id}@conference.easemob.com"
    if payload or "payload" in doc:
        doc["payload"] = payload
    for key, value in overrides.items():
        doc[FIELD_NAMES.get(key, key)] = value
