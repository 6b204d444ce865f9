"""The emulator's client-sent messages through a real ingress's pre-send chain and a worker."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.handlers.presend import load_presend
from callback_sink.ingress.app import create_app
from callback_sink.ingress.presend import install
from callback_sink.sink.settings import Settings
from tests.conftest import SECRET, Recorder
from tests.presend_fixtures import BANNED
from tests.waiting import drain_and_stop

MESSAGES = 1000


async def test_the_emulator_delivers_exactly_the_messages_the_chain_lets_through(
    settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    worker = await start_worker(recorder.handler("audit", ("presend:verdict",)),
                                recorder.handler("chat", ("message",)))  # fmt: skip
    app = create_app(settings)
    install(app, load_presend(["tests.presend_fixtures"], use_entry_points=False))
    sink = TestClient(TestServer(app))
    await sink.start_server()
    base = str(sink.make_url("")).rstrip("/")
    emulator = Emulator(
        EmulatorSettings(
            sink_url=f"{base}/callbacks",
            presend_url=f"{base}/presend",
            presend_timeout_ms=5000,
            callback_secret=SECRET,
        )
    )
    api = TestClient(TestServer(emulator.app()))
    await api.start_server()
    try:
        token = await _token(api)
        texts = [f"message {i} {BANNED if i % 10 == 0 else 'fine'}" for i in range(MESSAGES)]
        slots = asyncio.Semaphore(16)

        async def send(text: str) -> dict[str, Any]:
            async with slots:
                response = await api.post(
                    "/easemob-demo/chatdemoui/emulator/client-messages",
                    json={"from": "alice", "to": "bob", "payload": {"type": "txt", "msg": text}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status == 200
                answer: dict[str, Any] = await response.json()
                return answer

        answers = await asyncio.gather(*(send(text) for text in texts))
        delivered = [m["payload"]["msg"] for m in emulator.messages.delivered]
        assert sorted(delivered) == sorted(t for t in texts if BANNED not in t)
        assert len(emulator.messages.blocked) == MESSAGES // 10
        assert {a["presend"] for a in answers} == {"answer"}
        assert {m["code"] for m in emulator.messages.blocked} == {"banned-word"}

        listing = await api.get("/easemob-demo/chatdemoui/emulator/client-messages",
                                headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert len((await listing.json())["delivered"]) == MESSAGES - MESSAGES // 10

        await recorder.wait_for(MESSAGES + len(delivered), within=120)
        await drain_and_stop(worker)  # nothing more can arrive: each audit counted once
        audits = Counter(e.call_id for e in recorder.of("audit"))
        assert len(audits) == MESSAGES and set(audits.values()) == {1}
        verdicts = Counter(e.raw["presend_verdict"]["valid"] for e in recorder.of("audit"))
        assert verdicts == {True: MESSAGES - MESSAGES // 10, False: MESSAGES // 10}
        chats = recorder.of("chat")
        assert sorted(e.payload["bodies"][0]["msg"] for e in chats) == sorted(delivered)
        assert {e.name for e in chats} == {"message:chat"}
    finally:
        await api.close()
        await sink.close()


async def test_without_an_answer_the_emulator_applies_the_rules_default_policy() -> None:
    emulator = Emulator(
        EmulatorSettings(
            sink_url="",
            presend_url="http://127.0.0.1:1/presend",
            presend_default="reject",
            callback_secret=SECRET,
        )
    )
    api = TestClient(TestServer(emulator.app()))
    await api.start_server()
    try:
        token = await _token(api)
        response = await api.post(
            "/easemob-demo/chatdemoui/emulator/client-messages/",
            json={"from": "alice", "to": "g1", "chat_type": "groupchat",
                  "payload": {"type": "txt", "msg": "hi"}},
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        answer = await response.json()
        assert (answer["delivered"], answer["presend"]) == (False, "default:unreachable")
        emulator.messages.rule.url = ""  # no rule: every message is delivered
        response = await api.post(
            "/easemob-demo/chatdemoui/emulator/client-messages",
            json={"from": "alice", "to": "bob", "payload": {"type": "txt", "msg": "hi"}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert (await response.json())["presend"] == "none"
        assert [m["msg_id"] for m in emulator.messages.delivered] == [
            doc["msg_id"] for doc in emulator.callbacks.outbox
        ]
    finally:
        await api.close()


async def _token(api: TestClient[Any, Any]) -> str:
    response = await api.post("/easemob-demo/chatdemoui/token", json={
        "grant_type": "client_credentials", "client_id": "emulator-client-id",
        "client_secret": "emulator-client-secret"})  # fmt: skip
    token: str = (await response.json())["access_token"]
    return token
