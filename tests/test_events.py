from typing import Any

import orjson
import pytest

from callback_sink.sink import names
from callback_sink.sink.errors import DecodeError
from callback_sink.sink.events import (
    DIGEST_KEY_PREFIX,
    MAX_DEDUP_KEY_BYTES,
    decode,
    from_document,
)
from callback_sink.sink.examples import load_examples

# The families of the four PROTOCOL.md examples, in document order, as the spec describes them.
PROTOCOL_EXPECTED = [
    ("session:login", None, False),
    ("roster:remote_accept", None, False),
    ("group_op:join", "262246968131585", False),
    ("offline:groupchat", "169XXXX21545", False),
]


def test_the_spec_ships_48_muc_examples_and_4_protocol_examples() -> None:
    sources = [e.source.split("#")[0] for e in load_examples()]
    assert sources.count("muc-callbacks.zh.md") == 48
    assert sources.count("PROTOCOL.md") == 4


@pytest.mark.parametrize(
    "example", [e for e in load_examples() if e.source.startswith("muc")], ids=lambda e: e.source
)
def test_every_muc_example_is_named_after_its_operation(example: Any) -> None:
    event = from_document(example.body)
    payload = example.body["payload"]
    assert event.name == f"muc:{payload['operation']}"
    assert event.name in names.KNOWN_NAMES
    assert event.group_id == example.body["group_id"]
    assert event.is_chatroom is payload["is_chatroom"]
    assert event.family == "muc"
    assert event.raw is example.body


def test_the_protocol_examples_get_their_family_names() -> None:
    examples = [e for e in load_examples() if e.source.startswith("PROTOCOL")]
    got = [
        (e.name, e.group_id, e.is_chatroom) for e in map(lambda x: from_document(x.body), examples)
    ]
    assert got == PROTOCOL_EXPECTED


def test_the_group_id_falls_back_to_muc_id_when_group_id_is_absent() -> None:
    event = from_document(
        {"chat_type": "muc", "callId": "c", "timestamp": 1, "security": "s",
         "payload": {"operation": "kick", "muc_id": "org#app_12345@conference.easemob.com"}}
    )  # fmt: skip
    assert event.group_id == "12345"
    assert event.is_chatroom is False


def test_a_chatroom_in_the_new_format_is_flagged() -> None:
    event = from_document(
        {"event": "group_op_event", "type": "CHATROOM", "operation": "MEMBER_ROLE_CHANGE",
         "id": "9", "callId": "c", "timestamp": 1, "security": "s"}
    )  # fmt: skip
    assert (event.name, event.is_chatroom, event.group_id) == (
        "group_op:member_role_change",
        True,
        "9",
    )


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ({"chat_type": "muc", "payload": {"operation": "brand_new_op"}}, "muc:unknown"),
        ({"chat_type": "roster", "payload": {"operation": "poke"}}, "roster:unknown"),
        ({"chat_type": "chat", "eventType": "chat"}, "message:chat"),
        ({"chat_type": "groupchat", "eventType": "chat", "group_id": "7"}, "message:groupchat"),
        ({"chat_type": "recall"}, "recall:message"),
        ({"chat_type": "read_ack"}, "receipt:read_ack"),
        ({"chat_type": "channel_ack"}, "receipt:channel_ack"),
        ({"chat_type": "notify", "payload": {"type": "reaction"}}, "notify:reaction"),
        ({"chat_type": "notify", "payload": {"type": "thread"}}, "notify:thread"),
        ({"reason": "logout", "status": "offline"}, "session:logout"),
        ({"reason": "replaced", "status": "offline"}, "session:replaced"),
        ({"chat_type": "hologram"}, "unknown"),
        ({"something": "else"}, "unknown"),
    ],
)
def test_each_family_has_a_name(doc: dict[str, Any], name: str) -> None:
    event = from_document({"callId": "c", "timestamp": 1, "security": "s", **doc})
    assert event.name == name
    assert names.is_subscribable(event.name)


def test_an_unknown_shape_keeps_every_field() -> None:
    doc = {"callId": "c", "timestamp": 1, "security": "s", "future": {"nested": [1, 2]}}
    event = decode(orjson.dumps(doc))
    assert event.name == "unknown"
    assert event.raw["future"] == {"nested": [1, 2]}


def test_offline_messages_sharing_a_call_id_are_told_apart_by_recipient() -> None:
    base = {"callId": "c", "timestamp": 1, "security": "s", "chat_type": "chat",
            "eventType": "chat_offline", "from": "a"}  # fmt: skip
    one = from_document({**base, "to": "b"})
    two = from_document({**base, "to": "c"})
    assert one.dedup_key != two.dedup_key
    assert from_document({**base, "eventType": "chat", "to": "b"}).dedup_key == "c"


# A captured group callback replayed as in issue 9: `eventType`, `to` and `payload` are not
# covered by the signature, so an attacker may set them to anything.
KICK_CAPTURE = {"chat_type": "muc", "callId": "XXXX#XXXX_1", "timestamp": 1, "security": "s",
                "payload": {"operation": "kick", "muc_id": "a#b_42@conference.easemob.com"},
                "group_id": "42", "from": "a#b", "to": "bob", "eventType": "chat"}  # fmt: skip
REPLAYED_AS_OFFLINE = [
    {**KICK_CAPTURE, "eventType": "chat_offline"},
    {**KICK_CAPTURE, "eventType": "chat_offline", "chat_type": "chat"},
    {**KICK_CAPTURE, "eventType": "chat_offline", "chat_type": "groupchat"},
    {**KICK_CAPTURE, "eventType": "chat_offline", "chat_type": "roster"},
    {**KICK_CAPTURE, "eventType": "chat_offline", "event": "group_op_event",
     "operation": "LEAVE", "payload": {"member": ["bob"], "type": "KICK"}},
]  # fmt: skip


@pytest.mark.parametrize("doc", REPLAYED_AS_OFFLINE, ids=lambda d: str(d.get("chat_type")))
def test_a_chat_offline_callback_is_an_offline_message_whatever_its_payload_says(
    doc: dict[str, Any],
) -> None:
    event = from_document(doc)
    assert event.family == "offline"
    assert event.name in ("offline:chat", "offline:groupchat", "offline:unknown")
    assert event.kind == event.name
    assert event.kind != from_document(KICK_CAPTURE).kind == "muc:kick"


def test_a_chat_offline_replay_to_three_recipients_is_never_a_group_kick() -> None:
    replays = [from_document({**REPLAYED_AS_OFFLINE[0], "to": to}) for to in ("x", "y", "z")]
    assert {event.name for event in replays} == {"offline:unknown"}
    assert not any(names.matches("muc", event.name) for event in replays)


@pytest.mark.parametrize("example", load_examples(), ids=lambda e: e.source)
def test_only_chat_offline_callbacks_get_a_dedup_key_per_recipient(example: Any) -> None:
    one = from_document({**example.body, "to": "first-recipient"})
    two = from_document({**example.body, "to": "second-recipient"})
    if example.body.get("eventType") == "chat_offline":
        assert one.dedup_key != two.dedup_key
        assert one.dedup_key.startswith(one.call_id)
    else:
        assert one.dedup_key == two.dedup_key == one.call_id


@pytest.mark.parametrize("example", load_examples(), ids=lambda e: e.source)
def test_the_kind_of_every_example_is_its_family_and_operation(example: Any) -> None:
    event = from_document(example.body)
    assert event.kind == event.name
    assert event.kind.partition(":")[0] == event.family


def test_an_unknown_shape_has_the_kind_unknown_unknown() -> None:
    assert from_document({"callId": "c", "timestamp": 1, "security": "s"}).kind == (
        "unknown:unknown"
    )


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"callId": "c", "timestamp": 1, "secur', "not valid JSON"),
        (b"[1, 2]", "JSON list"),
        (b'"text"', "JSON str"),
        (b'{"timestamp": 1, "security": "s"}', "callId"),
        (b'{"callId": "c", "security": "s"}', "timestamp"),
        (b'{"callId": "c", "timestamp": 1}', "security"),
        (b'{"callId": "", "timestamp": 1, "security": "s"}', "callId"),
        (b'{"callId": "c", "timestamp": "1", "security": "s"}', "timestamp"),
        (b'{"callId": "' + b"x" * 256 + b'", "timestamp": 1, "security": "s"}', "255 bytes"),
        (b'{"callId": "c", "timestamp": true, "security": "s"}', "timestamp"),
    ],
)
def test_a_body_that_is_not_a_callback_is_refused_with_the_reason(body: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode(body)


OFFLINE_BASE = {"callId": "XXXX#XXXX_976459883882744164", "timestamp": 1, "security": "s",
                "chat_type": "chat", "eventType": "chat_offline", "from": "a"}  # fmt: skip


def test_an_offline_key_with_a_megabyte_recipient_is_a_short_digest() -> None:
    padded = from_document({**OFFLINE_BASE, "to": "x" * 1_000_000})
    other = from_document({**OFFLINE_BASE, "to": "x" * 999_999 + "y"})
    assert len(padded.dedup_key.encode()) <= 200
    assert padded.dedup_key.startswith(DIGEST_KEY_PREFIX)
    assert padded.dedup_key != other.dedup_key


def test_keys_up_to_the_bound_are_unchanged_so_an_upgrade_reruns_nothing() -> None:
    normal = from_document({**OFFLINE_BASE, "to": "bob"})
    assert normal.dedup_key == "XXXX#XXXX_976459883882744164|bob"
    longest = "y" * (MAX_DEDUP_KEY_BYTES - len(OFFLINE_BASE["callId"]) - 1)
    assert from_document({**OFFLINE_BASE, "to": longest}).dedup_key.endswith(longest)
    long_call_id = {**OFFLINE_BASE, "callId": "c" * 255, "eventType": "chat"}
    assert from_document(long_call_id).dedup_key == "c" * 255
