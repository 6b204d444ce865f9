"""The emulator: the spec's response and error bodies, and callbacks of the spec's shapes."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.emulator.callbacks import CallbackSender
from callback_sink.easemob.emulator.state import Change
from callback_sink.easemob.models import NewGroup
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.easemob_cli import _callback_secret
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.events import from_document
from callback_sink.sink.examples import load_examples
from callback_sink.sink.settings import Settings
from callback_sink.sink.signature import verify
from tests.conftest import SECRET
from tests.directory_fixtures import (  # noqa: F401
    RunningEmulator,
    client_settings_for,
    emulator_fixture,
)

ENVELOPE = {"action", "application", "uri", "entities", "data", "timestamp", "duration",
            "organization", "applicationName"}  # fmt: skip
ERROR_FIELDS = {"error", "exception", "timestamp", "duration", "error_description"}


def spec_examples() -> dict[str, list[dict[str, Any]]]:
    """The spec's legacy group examples by operation (``add_mute``'s group example is
    mislabelled ``ban`` in the spec, so its chat-room example stands in)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for example in load_examples():
        body = example.body
        if body.get("chat_type") == "muc":
            found.setdefault(body["payload"]["operation"], []).append(body)
    return found


async def workload(emulator: RunningEmulator) -> str:
    """One of every REST change the emulator turns into callbacks."""
    async with emulator.client() as client:
        group_id = await client.create_group(NewGroup(name="g", owner="alice", members=("bob",)))
        await client.add_members(group_id, ["carol", "dave"])
        await client.add_admin(group_id, "bob")
        await client.remove_admin(group_id, "bob")
        await client.mute(group_id, ["carol"], 60_000)
        await client.unmute(group_id, ["carol"])
        await client.remove_member(group_id, "dave")
        await client.block(group_id, "carol")
        await client.unblock(group_id, "carol")
        await client.transfer_owner(group_id, "bob")
        await client.update_group(group_id, name="renamed")
        await client.delete_group(group_id)
    return group_id


async def test_every_change_gives_the_callbacks_a_real_server_sends(
    emulator: RunningEmulator,
) -> None:
    group_id = await workload(emulator)
    sent = [
        (d["payload"]["operation"], d["from"], d["to"]) for d in emulator.emulator.callbacks.outbox
    ]
    appkey = emulator.emulator.settings.appkey
    jid = f"{appkey}_{{}}@easemob.com".format
    assert sent == [
        ("create", jid("alice"), "alice"),
        ("presence", jid("bob"), group_id),
        ("presence", jid("carol"), group_id),
        ("presence", jid("dave"), group_id),
        ("add_admin", appkey, "bob"),
        ("remove_admin", appkey, "bob"),
        ("add_mute", appkey, "carol"),
        ("remove_mute", appkey, "carol"),
        ("kick", appkey, "dave"),
        ("absence", jid("dave"), group_id),
        ("ban", appkey, "carol"),
        ("absence", jid("carol"), group_id),
        ("allow", appkey, "carol"),
        ("assing_owner", jid("alice"), "bob"),
        ("update", appkey, "bob"),
        ("destroy", appkey, "admin"),
    ]


async def test_every_callback_has_the_fields_of_its_spec_example(
    emulator: RunningEmulator,
) -> None:
    await workload(emulator)
    examples = spec_examples()
    for doc in emulator.emulator.callbacks.outbox:
        operation = doc["payload"]["operation"]
        shapes = [(set(e), set(e["payload"])) for e in examples[operation]]
        assert (set(doc), set(doc["payload"])) in shapes, operation
        event = from_document(doc)
        assert event.name == f"muc:{operation}"
        assert event.group_id == doc["group_id"] and not event.is_chatroom


async def test_callbacks_are_signed_now_and_their_timestamps_strictly_increase(
    emulator: RunningEmulator,
) -> None:
    before = int(time.time() * 1000)
    await workload(emulator)
    outbox = emulator.emulator.callbacks.outbox
    assert all(verify(d["callId"], d["timestamp"], d["security"], [SECRET]) for d in outbox)
    stamps = [d["timestamp"] for d in outbox]
    assert stamps == sorted(set(stamps))
    # Stamped with the current time, as Easemob does: a sink's maximum age never refuses them.
    assert before <= stamps[0] and stamps[-1] <= time.time() * 1000 + len(stamps)
    assert len({d["callId"] for d in outbox}) == len(outbox)


@pytest.fixture
async def raw(emulator: RunningEmulator) -> AsyncIterator[Any]:
    """A plain HTTP client on the emulator, with a valid token."""
    settings = emulator.emulator.settings
    prefix = f"/{settings.org}/{settings.app}"
    async with aiohttp.ClientSession() as session:
        token_request = {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
        }
        url = emulator.server.make_url(f"{prefix}/token")
        async with session.post(url, json=token_request) as answer:
            token = (await answer.json())["access_token"]

        async def call(method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
            headers = {"Authorization": f"Bearer {token}"}
            url = emulator.server.make_url(prefix + path)
            async with session.request(method, url, headers=headers, **kwargs) as answer:
                return answer.status, await answer.json()

        yield call


async def test_a_token_answer_has_the_specs_fields(emulator: RunningEmulator) -> None:
    settings = emulator.emulator.settings
    async with aiohttp.ClientSession() as session:
        url = emulator.server.make_url(f"/{settings.org}/{settings.app}/token")
        request = {
            "grant_type": "client_credentials",
            "ttl": 120,
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
        }
        async with session.post(url, json=request) as answer:
            body = await answer.json()
    assert set(body) == {"access_token", "expires_in", "application"}
    assert body["expires_in"] == 120


async def test_a_success_body_has_the_specs_envelope(raw: Any) -> None:
    status, body = await raw("POST", "/chatgroups", json={
        "groupname": "g", "desc": "d", "public": True, "owner": "alice"})  # fmt: skip
    assert status == 200 and set(body) >= ENVELOPE
    assert set(body["data"]) == {"groupid"}
    status, body = await raw("GET", f"/chatgroups/{body['data']['groupid']}")
    details = body["data"][0]
    assert {"id", "name", "description", "public", "membersonly", "allowinvites", "maxusers",
            "affiliations_count", "affiliations"} <= set(details)  # fmt: skip
    assert details["affiliations"] == [{"owner": "alice"}]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/chatgroups/404", None, 404, "service_resource_not_found"),
        ("PUT", "/chatgroups/{g}", {"public": False}, 400, "illegal_argument"),
        ("PUT", "/chatgroups/{g}", {"groupname": "a/b"}, 400, "illegal_argument"),
        ("POST", "/chatgroups/{g}/users/alice", None, 403, "forbidden_op"),
        ("DELETE", "/chatgroups/{g}/users/nobody", None, 403, "forbidden_op"),
        ("POST", "/chatgroups/{g}/blocks/users/alice", None, 403, "forbidden_op"),
        ("POST", "/chatgroups/{g}/mute", {"usernames": ["bob"]}, 400, "illegal_argument"),
        ("POST", "/chatgroups", {"groupname": "g"}, 400, "illegal_argument"),
    ],
)
async def test_a_refused_request_answers_easemobs_error_body(
    raw: Any, method: str, path: str, body: Any, status: int, error: str
) -> None:
    group = {"groupname": "g", "desc": "d", "public": True, "owner": "alice", "members": ["bob"]}
    _, created = await raw("POST", "/chatgroups", json=group)
    answer_status, answer = await raw(method, path.format(g=created["data"]["groupid"]), json=body)
    assert (answer_status, answer["error"]) == (status, error)
    assert set(answer) == ERROR_FIELDS


async def test_a_request_without_a_valid_token_is_refused_with_401(
    emulator: RunningEmulator,
) -> None:
    settings = emulator.emulator.settings
    async with aiohttp.ClientSession() as session:
        url = emulator.server.make_url(f"/{settings.org}/{settings.app}/chatgroups")
        async with session.get(url, headers={"Authorization": "Bearer forged"}) as answer:
            body = await answer.json()
    assert answer.status == 401 and body["error"] == "unauthorized"


async def test_an_unknown_path_answers_easemobs_error_body(raw: Any) -> None:
    status, body = await raw("GET", "/chatgroups/1/nothing-here")
    assert (status, body["error"]) == (404, "service_resource_not_found")
    assert set(body) == ERROR_FIELDS


def test_the_emulator_signs_with_its_own_secret_else_the_sinks_else_the_dev_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sink = Settings()
    own = EmulatorSettings(callback_secret="own")
    assert _callback_secret(own, replace(sink, secrets=("rule",))) == "own"
    assert _callback_secret(EmulatorSettings(), replace(sink, secrets=("rule",))) == "rule"
    with pytest.raises(ConfigError, match="SINK_EMULATOR_CALLBACK_SECRET"):
        _callback_secret(EmulatorSettings(), sink)
    (tmp_path / ".sink-dev-secret").write_text("dev\n")
    assert _callback_secret(EmulatorSettings(), sink) == "dev"


async def test_faults_are_injected_at_the_configured_rates() -> None:
    settings = EmulatorSettings(sink_url="", seed=3, throttle_rate=0.3, unavailable_rate=0.2)
    emulator = Emulator(settings, callback_secret=SECRET)
    async with TestClient(TestServer(emulator.app())) as client:
        statuses = []
        for _ in range(200):
            async with client.get(f"/{settings.org}/{settings.app}/chatgroups") as answer:
                statuses.append(answer.status)
    # Seeded, so the counts are fixed; the bounds still hold for any seed: 200 draws at 0.3 and
    # 0.2 expect 60 and 40 (standard deviations 6.5 and 5.7), these are about +-3 of them.
    assert 40 <= statuses.count(429) <= 80
    assert 20 <= statuses.count(503) <= 60
    assert emulator.faults.injected == {429: statuses.count(429), 503: statuses.count(503)}


class Sink:
    """A stand-in receiver answering from a script of statuses (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[bytes] = []

    async def receive(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({}, status=status)


async def sending_to(sink: Sink, **options: Any) -> tuple[CallbackSender, TestServer]:
    app = web.Application()
    app.router.add_post("/callbacks", sink.receive)
    server = TestServer(app)
    await server.start_server()
    sender = CallbackSender(appkey="o#a", host="h", secret=SECRET,
                            sink_url=str(server.make_url("/callbacks")), **options)  # fmt: skip
    await sender.start()
    return sender, server


async def test_a_refused_callback_is_retried_once_then_dropped() -> None:
    sink = Sink(500, 500, 503, 200)
    sender, server = await sending_to(sink)
    sender.emit([Change("presence", "1", "alice"), Change("presence", "1", "bob")])
    await sender.drain()
    await sender.stop()
    await server.close()
    assert len(sink.bodies) == 4
    assert (sender.accepted, sender.retried, sender.dropped) == (1, 2, 1)


async def test_callbacks_can_be_duplicated_and_delayed_out_of_order() -> None:
    sink = Sink()
    sender, server = await sending_to(sink, delay=0.05, duplicate_rate=1.0, rng=random.Random(1))
    sender.emit([Change("presence", "1", f"u{i}") for i in range(20)])
    await asyncio.wait_for(sender.drain(), 10)
    await sender.stop()
    await server.close()
    assert len(sink.bodies) == 40 and sender.accepted == 40
    arrived = list(dict.fromkeys(sink.bodies))
    emitted = [orjson.dumps(doc) for doc in sender.outbox]
    assert sorted(arrived) == sorted(emitted)
    assert arrived != emitted  # some overtook others


async def test_callbacks_reach_the_real_ingress_and_are_accepted(
    ingress: TestClient[Any, Any],
) -> None:
    settings = EmulatorSettings(sink_url=str(ingress.make_url("/callbacks")), seed=5)
    emulator = Emulator(settings, callback_secret=SECRET)
    server = TestServer(emulator.app())
    await server.start_server()
    try:
        running = RunningEmulator(emulator, server, client_settings_for(server, settings))
        await workload(running)
        await asyncio.wait_for(emulator.callbacks.drain(), 10)
    finally:
        await server.close()
    assert emulator.callbacks.accepted == len(emulator.callbacks.outbox) == 16
    assert emulator.callbacks.dropped == 0
