"""Who each callback is about, and what it says: the spec's examples through interpret()."""

from __future__ import annotations

from typing import Any

import pytest

from callback_sink.handlers.directory import facts as f
from callback_sink.handlers.directory.facts import Fact
from callback_sink.handlers.directory.interpret import (
    AFFECTED_USER,
    affected_user,
    interpret,
    user_of,
)
from callback_sink.sink.events import from_document
from callback_sink.sink.examples import load_examples

MUC_EXAMPLES = [e for e in load_examples() if e.body.get("chat_type") == "muc"]

#: The affected user of each spec example the directory reads, as the spec's prose says.
EXPECTED_USER = {
    "create": "1111",
    "presence": "1111",
    "absence": "aaa111",
    "leave": "aaa111",
    "apply_accept": "aaa111",
    "invite_accept": "1111",
    "kick": "aaa111",
    "ban": "1111",
    "allow": "1111",
    "assing_owner": "2222",
    "add_admin": "2222",
    "remove_admin": "2222",
    "remove_mute": "2222",
    "add_mute": "2222",
    "add_user_white_list": "2222",
    "remove_user_white_list": "2222",
}


def group_example(operation: str) -> dict[str, Any]:
    """The spec's group example of an operation (its chat-room one if it has no other:
    the spec's group ``add_mute`` example is mislabelled ``ban``)."""
    bodies = [e.body for e in MUC_EXAMPLES if e.body["payload"]["operation"] == operation]
    return next((b for b in bodies if not b["payload"]["is_chatroom"]), bodies[0])


@pytest.mark.parametrize("operation", sorted(EXPECTED_USER))
def test_the_affected_user_is_read_from_the_field_the_table_names(operation: str) -> None:
    assert affected_user(from_document(group_example(operation))) == EXPECTED_USER[operation]


def test_presence_and_absence_name_the_member_in_from_and_the_group_in_to() -> None:
    for operation in ("presence", "absence"):
        assert AFFECTED_USER[operation] == "from"
    body = group_example("presence")
    assert body["to"] == body["group_id"]


@pytest.mark.parametrize(
    ("address", "user"),
    [
        ("alice", "alice"),
        ("XXXX#XXXX_1111@easemob.com", "1111"),
        ("XXXX#XXXX_1111@easemob.com/android_8070d7b2-795eb6e63d", "1111"),
        ("org#app_first_last@easemob.com", "first_last"),
        ("XXXX#XXXX", None),
        ("", None),
    ],
)
def test_a_jid_is_reduced_to_its_user(address: str, user: str | None) -> None:
    assert user_of(address, "org#app") == user


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("create", f.became_owner("1111")),
        ("presence", f.joined("1111")),
        ("absence", f.left("aaa111")),
        ("leave", f.left("aaa111")),
        ("kick", f.left("aaa111")),
        ("ban", f.blocked("1111")),
        ("allow", [Fact(f.BLOCK, "1111", present=False)]),
        ("assing_owner", f.became_owner("2222")),
        ("add_admin", [Fact(f.ADMIN, "2222")]),
        ("remove_admin", [Fact(f.ADMIN, "2222", present=False)]),
        ("remove_mute", [Fact(f.MUTE, "2222", present=False)]),
        ("add_user_white_list", [Fact(f.ALLOW, "2222")]),
        ("remove_user_white_list", [Fact(f.ALLOW, "2222", present=False)]),
        ("ban_group", [Fact(f.MUTED_ALL)]),
        ("remove_ban_group", [Fact(f.MUTED_ALL, present=False)]),
        ("destroy", [Fact(f.DESTROYED)]),
        ("update", []),  # the model fields come from a REST look-up
    ],
)
def test_each_legacy_group_example_states_its_facts(operation: str, expected: list[Fact]) -> None:
    found = interpret(from_document(group_example(operation)))
    assert found == [*expected, Fact(f.CHATROOM, present=False)]


@pytest.mark.parametrize(
    "operation",
    ["apply", "invite", "invite_decline", "block", "unblock", "update_announcement",
     "delete_announcement", "upload_file", "delete_file", "group_member_metadata_update"],
)  # fmt: skip
def test_events_that_change_no_kept_fact_give_no_fact(operation: str) -> None:
    assert interpret(from_document(group_example(operation))) == []


def test_a_chat_room_event_marks_its_group_a_chat_room() -> None:
    body = next(
        e.body for e in MUC_EXAMPLES
        if e.body["payload"]["operation"] == "kick" and e.body["payload"]["is_chatroom"]
    )  # fmt: skip
    assert Fact(f.CHATROOM, present=True) in interpret(from_document(body))


def test_an_event_reporting_a_failure_gives_no_fact() -> None:
    body = group_example("kick")
    body = {**body, "payload": {**body["payload"], "status": {"error_code": "403"}}}
    assert interpret(from_document(body)) == []


def new_format(operation: str, payload: dict[str, Any] | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "callId": "XXXX#XXXX_34092a82", "security": "", "appkey": "XXXX#XXXX",
        "id": "262246968131585", "type": "GROUP", "event": "group_op_event",
        "operation": operation, "operator": "@ppAdmin", "timestamp": 1729497286675, **extra,
    }  # fmt: skip
    if payload is not None:
        body["payload"] = payload
    return from_document(body)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (new_format("JOIN", {"member": ["tst01", "tst02"], "type": "DIRECT"}),
         f.joined("tst01") + f.joined("tst02")),
        (new_format("LEAVE", {"member": ["tst"], "type": "QUIT"}), f.left("tst")),
        (new_format("LEAVE", {"member": ["tst01"], "type": "KICK"}), f.left("tst01")),
        (new_format("DELETE"), [Fact(f.DESTROYED)]),
        (new_format("UPDATE", {"owner": "tst", "new_owner": "tst01", "type": "OWNER"}),
         f.became_owner("tst01")),
        (new_format("UPDATE", {"mute": True, "type": "MUTE"}), [Fact(f.MUTED_ALL)]),
        (new_format("UPDATE", {"mute": False, "type": "MUTE"}),
         [Fact(f.MUTED_ALL, present=False)]),
        (new_format("UPDATE", {"type": "INFO", "info": {"title": "New", "max_users": 2000,
                                                        "description": "d"}}),
         f.fields({"name": "New", "description": "d", "maxusers": 2000})),
        (new_format("ADMIN", {"admin": ["tst028"], "type": "ADD"}), [Fact(f.ADMIN, "tst028")]),
        (new_format("ADMIN", {"admin": ["tst01"], "type": "REMOVE"}),
         [Fact(f.ADMIN, "tst01", present=False)]),
        (new_format("MUTE", {"member": ["tst01"], "expire_timestamp": 1729585614955,
                             "type": "ADD"}),
         [Fact(f.MUTE, "tst01", value=1729585614955)]),
        (new_format("MUTE", {"member": ["tst01"], "type": "REMOVE"}),
         [Fact(f.MUTE, "tst01", present=False)]),
        (new_format("BLOCK", {"member": ["tst02"], "expire_timestamp": 4638873600000,
                              "type": "ADD"}), f.blocked("tst02")),
        (new_format("BLOCK", {"member": ["tst07"], "type": "REMOVE"}),
         [Fact(f.BLOCK, "tst07", present=False)]),
        (new_format("WHITE", {"member": ["tst01", "tst02"], "type": "REMOVE"}),
         [Fact(f.ALLOW, "tst01", present=False), Fact(f.ALLOW, "tst02", present=False)]),
        (new_format("SOMETHING_NEW", {"type": "X"}), []),
    ],
)  # fmt: skip
def test_each_new_format_event_states_its_facts(event: Any, expected: list[Fact]) -> None:
    chatroom = [Fact(f.CHATROOM, present=False)] if expected else []
    assert interpret(event) == [*expected, *chatroom]


def test_a_new_format_create_gives_owner_members_admins_and_the_model_fields() -> None:
    event = new_format("CREATE", {
        "role": {"tst": "owner", "abc": "admin"},
        "member": ["abc"],
        "info": {"owner": "XXXX#XXXX_tst", "title": "测试01", "description": "描述",
                 "max_users": "200", "public": "true", "allow_user_invites": "false",
                 "mute": "false"},
    })  # fmt: skip
    found = interpret(event)
    assert found[:4] == f.became_owner("tst")
    assert Fact(f.MEMBER, "abc") in found and Fact(f.ADMIN, "abc") in found
    fields = {fact.subject: fact.value for fact in found if fact.kind == f.FIELD}
    assert fields == {"name": "测试01", "description": "描述", "maxusers": 200, "public": True,
                      "allowinvites": False}  # fmt: skip


def test_a_new_format_create_without_roles_reads_the_owner_from_info() -> None:
    event = new_format("CREATE", {"member": [], "info": {"owner": "XXXX#XXXX_tst"}})
    assert interpret(event)[:4] == f.became_owner("tst")
