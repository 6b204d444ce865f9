"""A worker whose channel the broker closes reopens it, says why, and is not ready meanwhile.

The broker closes the channel itself: ``rabbitmqctl eval`` makes RabbitMQ's own channel
process handle a ``basic.ack`` of a delivery tag it never issued, as if the worker had sent
it, so the broker answers with ``channel.close`` 406 PRECONDITION_FAILED, the reply code a
``consumer_timeout`` closes a channel with. The worker's connection stays up: only the
channel goes, as with a consumer timeout (RabbitMQ 3.10 cannot set a per-queue timeout, and
changing the broker-wide one would close other tests' channels).
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.worker.consumer import Worker
from callback_sink.worker.probes import readiness
from tests.conftest import Recorder, callback, post, signed
from tests.needs import missing
from tests.waiting import drain_and_stop, until

Client = TestClient[Any, Any]
#: Longer than the whole test: the slow handler is never cut short while the test waits.
HANDLER_TIMEOUT = 300.0
#: A delivery tag no channel of the test has been given.
FOREIGN_TAG = 987654321


async def broker_closes_channels_consuming(queue: str) -> None:
    """Make RabbitMQ close every channel consuming from ``queue`` (vhost ``/``) with 406."""
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl is not installed (it comes with rabbitmq-server)")
    expression = (
        f'Q = rabbit_misc:r(<<"/">>, queue, <<"{queue}">>), '
        f"Chs = lists:usort([proplists:get_value(channel_pid, C) "
        f'|| C <- rabbit_amqqueue:consumers_all(<<"/">>), '
        f"proplists:get_value(queue_name, C) =:= Q]), "
        f"[rabbit_channel:do(Ch, {{'basic.ack', {FOREIGN_TAG}, false}}) || Ch <- Chs], "
        f"length(Chs)."
    )
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "eval", expression,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    assert int(out.decode().strip().splitlines()[-1]) >= 1, f"no consumer on {queue}"


async def test_a_channel_the_broker_closed_is_reopened_and_consuming_resumes(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    """The scenario of a consumer timeout: a handler still runs when the broker closes the
    channel; its redelivered copy must not keep the worker from handling new callbacks."""
    release = asyncio.Event()

    async def long_for_slow(event: Event) -> None:
        if event.payload.get("operation") == "slow":
            await release.wait()

    worker: Worker = await start_worker(
        recorder.handler("tests.after_close", behaviour=long_for_slow),
        handler_timeout=HANDLER_TIMEOUT,  # the slow handler outlives the test
    )
    assert await post(ingress, signed(callback(operation="slow"))) == 200
    await until(lambda: worker._inflight, 10, what="the slow handler to run")
    assert (await readiness(worker))["ready"]
    # On a local broker the reopen takes milliseconds: readiness is asked from the close
    # callback (its task reads `consuming` on the next loop turn, long before the reopen's
    # round trips end), not by polling, which could miss the gap.
    asked: list[asyncio.Task[dict[str, bool]]] = []
    channel = worker._channel
    assert channel is not None
    channel.close_callbacks.add(lambda *_: asked.append(asyncio.create_task(readiness(worker))))
    with capture_logs() as logs:
        await broker_closes_channels_consuming(worker.topology.work_queue)
        await until(lambda: asked, 10, what="the worker's channel to close")
        gap = await asked[0]
        await until(lambda: worker.consuming, 30, what="the worker to consume again")
        for _ in range(3):
            assert await post(ingress, signed(callback())) == 200
        await recorder.wait_for(3, within=10)  # while the slow handler still runs
        assert (await readiness(worker))["ready"]
        release.set()
        await recorder.wait_for(4, within=20)
    assert gap["ready"] is False and gap["consuming"] is False
    closed = [e for e in logs if e["event"] == "worker.channel_closed"]
    assert len(closed) == 1, logs
    assert closed[0]["log_level"] == "error" and closed[0]["cancelled"] == 1
    assert closed[0]["reply_code"] == 406 and "PRECONDITION_FAILED" in closed[0]["reply_text"]
    assert worker.metrics.channel_closed._value.get() == 1
    await drain_and_stop(worker)
    assert len(recorder.of("tests.after_close")) == 4  # the slow one's copy did not run again
