"""The drainer: republishes spooled callbacks once RabbitMQ is back, oldest first.

One background task per ingress, started and stopped by the app's cleanup context. It sleeps
while the spool is empty and polls the publisher, backing off, while the broker is away. Then it
reads batches of records oldest first, publishes each batch through the same
:class:`~ingress.publisher.Publisher` as live callbacks, and commits the leading run of
confirmed records, which the spool then deletes. A failed publish ends the pass: the records
from the first failure on stay spooled (any confirmed after it are published again later: at
least once, and the workers deduplicate by call id).

Republished callbacks may overtake, or be overtaken by, live ones: Easemob does not order
callbacks either, and every callback carries its own timestamp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from callback_sink.ingress.publisher import Publisher
from callback_sink.ingress.spool import Batch, Spool
from callback_sink.sink import logs

log = logs.get("spool")

#: Records published concurrently and then committed together (one fsync per batch).
BATCH = 128
#: Back-off while the broker is away or refuses, seconds: first retry soon, then calmer.
RETRY_MIN = 0.1
RETRY_MAX = 5.0


class Background:
    """A task that runs until :meth:`stop`; the base of the drainer and the sibling adopter."""

    name = "background"

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float) -> None:
        """Let the batch in hand get its confirms and commit, then stop; cancel after
        ``grace`` seconds. Whatever is not committed stays spooled for the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait([task], timeout=grace)
        if not done:
            log.warning("spool.drainer_cancelled", task=self.name, grace=grace)
            task.cancel()
            await asyncio.wait([task])
        elif task.exception() is not None:
            log.error("spool.drainer_crashed", task=self.name, error=repr(task.exception()))

    async def _run(self) -> None:
        raise NotImplementedError

    async def _until(self, waiting: Awaitable[object]) -> None:
        """Wait for ``waiting`` or for :meth:`stop`, whichever comes first."""
        tasks = {asyncio.ensure_future(waiting), asyncio.ensure_future(self._stopping.wait())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class Drainer(Background):
    """Moves the spool's records to the broker in the background."""

    name = "spool-drainer"

    def __init__(self, spool: Spool, publisher: Publisher, *, batch: int = BATCH) -> None:
        super().__init__()
        self._spool = spool
        self._publisher = publisher
        self._batch = batch

    async def _run(self) -> None:
        delay = RETRY_MIN
        while not self._stopping.is_set():
            if self._spool.records == 0:
                await self._until(self._spool.wait_for_records())
                continue
            if self._publisher.ready:
                try:
                    if await self._drain():
                        delay = RETRY_MIN
                        continue
                except Exception as exc:  # a disk error, or a bug: retry later, never die
                    log.error("spool.drain_failed", error=f"{type(exc).__name__}: {exc}")
            await self._until(asyncio.sleep(delay))
            delay = min(delay * 2, RETRY_MAX)

    async def _drain(self) -> bool:
        """Publish batches until the spool is empty (True), a publish fails or we stop."""
        started = time.perf_counter()
        log.info("spool.draining", records=self._spool.records)
        sent, error = await republish(
            self._spool, self._publisher, self._batch, self._stopping.is_set
        )
        if error is not None:
            log.warning("spool.republish_failed", error=error, records=self._spool.records)
        log.info(
            "spool.drained",
            records=sent,
            remaining=self._spool.records,
            bytes=self._spool.bytes,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return error is None and self._spool.records == 0


async def republish(
    spool: Spool, publisher: Publisher, size: int, enough: Callable[[], bool]
) -> tuple[int, str | None]:
    """Publish ``spool``'s records in batches of ``size``, oldest first, committing each batch's
    leading run of confirmed records, until it is empty, a publish fails (its error is
    returned) or ``enough()``; return how many were confirmed and committed."""
    sent = 0
    while not enough():
        batch = await spool.read_batch(size)
        if batch is None:
            break
        confirmed, error = await _publish(publisher, batch)
        await spool.commit(batch, confirmed)
        sent += confirmed
        if error is not None:
            return sent, error
    return sent, None


async def _publish(publisher: Publisher, batch: Batch) -> tuple[int, str | None]:
    """Publish a batch; return how many leading records were confirmed, and the error."""
    results = await asyncio.gather(
        *(publisher.publish(r.name, r.call_id, r.body) for r in batch.records),
        return_exceptions=True,
    )
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            return index, f"{type(result).__name__}: {result}"
    return len(results), None
