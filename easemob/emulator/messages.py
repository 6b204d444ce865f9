"""Messages that clients send, and the pre-send rule they pass through (emulator-only).

Easemob calls the pre-send URL only for messages sent from a client SDK, never for those
sent through the REST API, so the emulator has an endpoint of its own that stands for a
client sending a message (it is not part of Easemob's API)::

    POST /{org}/{app}/emulator/client-messages   (app token, like every emulator request)
    {"from": "alice", "to": "bob", "chat_type": "chat", "payload": {"type": "txt", "msg": "hi"}}

For each message it does what Easemob does: with a pre-send rule (``presend_url``) it POSTs
the signed pre-send callback (``callId``, ``timestamp``, ``chat_type``, ``group_id``,
``from``, ``to``, ``msg_id``, ``payload``, ``security``) and waits ``presend_timeout_ms`` for
``{"valid": …, "code": …, "payload": …}``. ``valid: false`` blocks the message; a
``payload`` replaces it; a late, non-200, unparsable or over-1,000-character answer, or one
without a boolean ``valid``, gets the rule's default policy (``presend_default``). A
delivered message is recorded and its post-send callback (``eventType: chat``, payload as
``{"ext": …, "bodies": [...]}``) goes to the sink through the emulator's callback sender.

The answer says what happened: ``{"msg_id", "delivered", "code", "payload", "presend"}``
with ``presend`` one of ``none`` (no rule), ``answer`` or ``default:<why>``.
``GET /{org}/{app}/emulator/client-messages`` lists ``delivered`` and ``blocked`` messages.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from callback_sink.easemob.emulator import checks
from callback_sink.easemob.emulator.callbacks import CallbackSender
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.sink import logs

log = logs.get("emulator")

#: The emulator-only endpoint, under ``/{org}/{app}``.
CLIENT_MESSAGES = "/emulator/client-messages"
#: An answer longer than this is a failed call for Easemob (it suspects an attack).
ANSWER_LIMIT = 1000
CHAT_TYPES = ("chat", "groupchat", "chatroom")


@dataclass
class PresendRule:
    """The app's pre-send rule; change it on ``emulator.messages.rule`` at run time."""

    #: Where the pre-send callback goes (empty: no rule, every message is delivered).
    url: str = ""
    #: How long the emulator waits for the answer, seconds.
    timeout: float = 0.2
    #: Deliver (True) or block (False) when the answer is late or unusable.
    default_valid: bool = True


@dataclass(frozen=True)
class PresendResult:
    """What the pre-send step decided for one message."""

    delivered: bool
    how: str  # none | answer | default:<why>
    code: str | None = None
    payload: dict[str, Any] | None = None


class Messages:
    """Client-sent messages: the pre-send rule, the delivered and blocked messages."""

    def __init__(
        self,
        settings: EmulatorSettings,
        callbacks: CallbackSender,
        clock: Callable[[], float],
    ) -> None:
        self.rule = PresendRule(
            settings.presend_url,
            settings.presend_timeout_ms / 1000,
            settings.presend_default == "accept",
        )
        self.appkey = settings.appkey
        self._callbacks = callbacks
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        #: Every message delivered / blocked, as recorded (``msg_id``, ``from``, ``to``,
        #: ``chat_type``, ``payload``; ``code`` for a blocked one), in order.
        self.delivered: list[dict[str, Any]] = []
        self.blocked: list[dict[str, Any]] = []
        #: Pre-send outcomes: ``none``, ``answer``, ``default:<why>``.
        self.outcomes: Counter[str] = Counter()

    def add_routes(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + CLIENT_MESSAGES, self.receive)
        app.router.add_get(prefix + CLIENT_MESSAGES, self.listing)
        app.cleanup_ctx.append(self._session_ctx)

    async def _session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession()
        yield
        await self._session.close()
        self._session = None

    async def receive(self, request: web.Request) -> web.Response:
        body = await checks.body(request)
        message = _message(body)
        outcome, msg_id = await self.send(message)
        answer = {"msg_id": msg_id, "delivered": outcome.delivered, "code": outcome.code,
                  "payload": outcome.payload, "presend": outcome.how}  # fmt: skip
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def listing(self, request: web.Request) -> web.Response:
        answer = {"delivered": self.delivered, "blocked": self.blocked,
                  "presend": dict(self.outcomes)}  # fmt: skip
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def send(self, message: dict[str, Any]) -> tuple[PresendResult, str]:
        """Pass ``message`` through the pre-send rule, then deliver or block it."""
        msg_id = str(uuid.uuid4().int % 10**18)
        outcome = await self._presend(message, msg_id)
        self.outcomes[outcome.how] += 1
        record = {"msg_id": msg_id, **message}
        if not outcome.delivered:
            self.blocked.append({**record, "code": outcome.code})
            return outcome, msg_id
        if outcome.payload is not None:
            record["payload"] = outcome.payload
        self.delivered.append(record)
        self._post_send(record)
        return outcome, msg_id

    async def _presend(self, message: dict[str, Any], msg_id: str) -> PresendResult:
        rule = self.rule
        if not rule.url:
            return PresendResult(True, "none")
        timestamp = int(self._clock() * 1000)
        doc: dict[str, Any] = {"callId": f"{self.appkey}_{uuid.uuid4()}", "timestamp": timestamp,
                               "chat_type": message["chat_type"]}  # fmt: skip
        if message["chat_type"] != "chat":
            doc["group_id"] = message["to"]
        doc.update({"from": message["from"], "to": message["to"], "msg_id": msg_id,
                    "payload": message["payload"]})  # fmt: skip
        doc["security"] = self._callbacks.sign(doc["callId"], timestamp)
        try:
            answer = await self._call(rule, orjson.dumps(doc))
        except _Unusable as exc:
            log.info("emulator.presend_default", reason=exc.why, msg_id=msg_id,
                     delivered=rule.default_valid)  # fmt: skip
            return PresendResult(rule.default_valid, f"default:{exc.why}")
        valid, code, payload = answer["valid"], answer.get("code"), answer.get("payload")
        return PresendResult(
            valid,
            "answer",
            code if isinstance(code, str) else None,
            payload if valid and isinstance(payload, dict) else None,
        )

    async def _call(self, rule: PresendRule, body: bytes) -> dict[str, Any]:
        if self._session is None:
            raise _Unusable("not-started")
        try:
            async with asyncio.timeout(rule.timeout):
                async with self._session.post(
                    rule.url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    status, text = response.status, await response.read()
        except TimeoutError:
            raise _Unusable("timeout") from None
        except aiohttp.ClientError:
            raise _Unusable("unreachable") from None
        if status != 200:
            raise _Unusable(f"status-{status}")
        if len(text.decode(errors="replace")) > ANSWER_LIMIT:
            raise _Unusable("too-long")
        try:
            answer = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise _Unusable("not-json") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("valid"), bool):
            raise _Unusable("no-valid")
        return answer

    def _post_send(self, record: dict[str, Any]) -> None:
        """The post-send message callback of a delivered message, as Easemob sends it."""
        timestamp, serial = self._callbacks.stamp()
        payload = dict(record["payload"])
        ext = payload.pop("ext", {})
        bodies = payload["bodies"] if isinstance(payload.get("bodies"), list) else [payload]
        doc: dict[str, Any] = {
            "callId": f"{self.appkey}_{serial}",
            "eventType": "chat",
            "timestamp": timestamp,
            "chat_type": "chat" if record["chat_type"] == "chat" else "groupchat",
            "from": record["from"],
            "to": record["to"],
            "msg_id": record["msg_id"],
            "payload": {"ext": ext if isinstance(ext, dict) else {}, "bodies": bodies},
            "securityVersion": "1.0.0",
            "security": "",
            "appkey": self.appkey,
            "host": self._callbacks.host,
        }
        if record["chat_type"] != "chat":
            doc["group_id"] = record["to"]
        self._callbacks.send_document(doc)


class _Unusable(Exception):
    """The pre-send answer cannot be used; ``why`` says how (the default policy applies)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _message(body: dict[str, Any]) -> dict[str, Any]:
    """The message a client sends: ``from``, ``to``, ``chat_type`` (default ``chat``) and a
    ``payload`` object (``{"type": "txt", "msg": "…"}``)."""
    sender = checks.text(body.get("from"), "from")
    receiver = checks.text(body.get("to"), "to")
    chat_type = body.get("chat_type", "chat")
    if chat_type not in CHAT_TYPES:
        raise checks.bad_request(f"chat_type must be one of {', '.join(CHAT_TYPES)}")
    payload = body.get("payload")
    if not isinstance(payload, dict) or not payload:
        raise checks.bad_request('payload must be a message object, e.g. {"type":"txt","msg":"hi"}')
    return {"from": sender, "to": receiver, "chat_type": chat_type, "payload": payload}
