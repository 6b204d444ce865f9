"""Callbacks the emulator sends: legacy ``muc`` documents, signed, POSTed like Easemob does.

:func:`document` gives each :class:`Change` the shape of its example in
muc-callbacks.zh.md (who is ``from``, who is ``to``, which payload fields are present).
:class:`CallbackSender` stamps them with strictly increasing timestamps, keeps them in
``outbox`` and, when a sink URL is set, POSTs them: a non-200 or a failure is retried once,
immediately, then the callback is dropped, as Easemob does. It can delay callbacks by a
random amount (so that they overtake one another) and send some twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from callback_sink.easemob.emulator.state import Change
from callback_sink.sink import logs
from callback_sink.sink.signature import sign

log = logs.get("emulator")

#: Payload fields follow the spec's group examples: ``presence`` and ``absence`` carry no
#: ``status``, and only these operations carry a ``reason``.
_BARE = frozenset({"presence", "absence"})
_WITH_REASON = frozenset({"create", "destroy", "ban", "allow"})


def muc_id(appkey: str, group_id: str) -> str:
    return f"{appkey}_{group_id}@conference.easemob.com"


def jid(appkey: str, user: str) -> str:
    """A user's address as ``from`` spells it: ``{appkey}_{user}@easemob.com``."""
    return f"{appkey}_{user}@easemob.com"


def document(
    change: Change, *, appkey: str, host: str, timestamp: int, msg_id: str
) -> dict[str, Any]:
    """The unsigned legacy callback for ``change``.

    The affected user is ``to`` for every operation except ``presence`` and ``absence``,
    where it is ``from`` (as a jid) and ``to`` is the group id.
    """
    op, group_id, user = change.operation, change.group_id, change.user or ""
    payload: dict[str, Any] = {"muc_id": muc_id(appkey, group_id)}
    if op in _WITH_REASON:
        payload["reason"] = ""
    payload["is_chatroom"] = False
    payload["operation"] = op
    if op not in _BARE:
        payload["status"] = {"description": "", "error_code": "ok"}
    if op in _BARE:
        sender, receiver = jid(appkey, user), group_id
    elif op == "create":
        sender, receiver = jid(appkey, user), user
    elif op == "assing_owner":
        sender, receiver = jid(appkey, change.actor or ""), user
    elif op == "destroy":
        sender, receiver = appkey, "admin"
    else:
        sender, receiver = appkey, user
    return {
        "chat_type": "muc",
        "callId": f"{appkey}_{msg_id}",
        "security": "",
        "payload": payload,
        "group_id": group_id,
        "host": host,
        "appkey": appkey,
        "from": sender,
        "to": receiver,
        "eventType": "chat",
        "msg_id": msg_id,
        "timestamp": timestamp,
    }


class Stamp:
    """Strictly increasing millisecond timestamps (wall clock, bumped on ties), and the
    message ids derived from them, so that "the latest callback wins" is well defined."""

    def __init__(self) -> None:
        self._last = 0
        self._serial = 0

    def next(self) -> tuple[int, str]:
        self._last = max(int(time.time() * 1000), self._last + 1)
        self._serial = (self._serial + 1) % 10000
        return self._last, f"{self._last}{self._serial:04d}"


class CallbackSender:
    """Signs, records and delivers callbacks; ``start()`` / ``stop()`` bracket its life."""

    def __init__(
        self,
        *,
        appkey: str,
        host: str,
        secret: str,
        sink_url: str,
        delay: float = 0.0,
        duplicate_rate: float = 0.0,
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.appkey = appkey
        self.host = host
        self.sink_url = sink_url
        self.delay = delay
        self.duplicate_rate = duplicate_rate
        self._secret = secret
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._stamp = Stamp()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._delayed: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        #: Every callback emitted, signed, in emission order.
        self.outbox: list[dict[str, Any]] = []
        #: Delivery counts: accepted (200), retried, dropped (failed twice).
        self.accepted = 0
        self.retried = 0
        self.dropped = 0
        #: Called with each callback dropped after its two attempts (callback storage).
        self.on_dropped: Callable[[bytes], None] | None = None

    async def start(self) -> None:
        if self.sink_url:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._consumer = asyncio.get_running_loop().create_task(self._deliver_in_order())

    async def stop(self) -> None:
        """Deliver what is queued (bounded by the time-out), then close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), self._timeout)
        tasks = [*self._delayed, *([self._consumer] if self._consumer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self) -> None:
        """Wait until every emitted callback has been delivered or dropped."""
        await self._queue.join()
        while self._delayed:
            await asyncio.gather(*list(self._delayed), return_exceptions=True)

    def emit(self, changes: list[Change]) -> None:
        """Stamp, sign, record and schedule one callback per change, in order."""
        for change in changes:
            timestamp, msg_id = self._stamp.next()
            doc = document(change, appkey=self.appkey, host=self.host, timestamp=timestamp,
                           msg_id=msg_id)  # fmt: skip
            self.send_document(doc)

    def stamp(self) -> tuple[int, str]:
        """The next callback timestamp (strictly increasing) and a message id derived from it."""
        return self._stamp.next()

    def sign(self, call_id: str, timestamp: int) -> str:
        """The ``security`` of a callback this emulator sends (pre-send ones too)."""
        return sign(call_id, self._secret, timestamp)

    def send_document(self, doc: dict[str, Any]) -> None:
        """Sign (its callId and timestamp), record and schedule one callback document."""
        doc["security"] = self.sign(doc["callId"], doc["timestamp"])
        self.outbox.append(doc)
        if not self.sink_url:
            return
        body = orjson.dumps(doc)
        copies = 2 if self._rng.random() < self.duplicate_rate else 1
        for _ in range(copies):
            if self.delay > 0:
                wait = self._rng.uniform(0, self.delay)
                task = asyncio.get_running_loop().create_task(self._deliver_later(body, wait))
                self._delayed.add(task)
                task.add_done_callback(self._delayed.discard)
            else:
                self._queue.put_nowait(body)

    async def _deliver_in_order(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                await self.deliver(body)
            finally:
                self._queue.task_done()

    async def _deliver_later(self, body: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.deliver(body)

    async def deliver(self, body: bytes) -> int:
        """POST one callback; retry once at once on a non-200 or a failure; the last status
        (0: no answer)."""
        for attempt in (1, 2):
            status = await self._post(body)
            if status == 200:
                self.accepted += 1
                return status
            if attempt == 1:
                self.retried += 1
        self.dropped += 1
        log.warning("emulator.callback_dropped", status=status)
        if self.on_dropped is not None:
            self.on_dropped(body)
        return status

    async def _post(self, body: bytes) -> int:
        assert self._session is not None
        try:
            async with self._session.post(
                self.sink_url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("emulator.callback_failed", error=type(exc).__name__)
            return 0
