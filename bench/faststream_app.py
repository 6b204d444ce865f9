"""The peer a Python team would write today: FastAPI + FastStream's ``RabbitRouter`` (aio-pika
underneath), about forty lines. Runs in the benchmark's own virtualenv (``bench/.venv-alt``)
under ``uvicorn --workers N`` (uvloop, httptools); never imported by callback-sink.

It does the same checks as the ingress (JSON body, callId/timestamp/security present, the
md5 signature) and publishes the body, persistent, to ``$ALT_QUEUE``, a quorum queue, through
the default exchange, awaiting the broker's confirm (FastStream's channels confirm by
default) before it answers 200. No logs, no spool, no limits. Nothing consumes the queue: the
benchmark counts its messages against the 200 answers, then deletes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from faststream.rabbit import QueueType, RabbitQueue
from faststream.rabbit.fastapi import RabbitRouter

SECRET = os.environ["ALT_SECRET"]
QUEUE = RabbitQueue(os.environ["ALT_QUEUE"], durable=True, queue_type=QueueType.QUORUM)

router = RabbitRouter(os.environ["ALT_BROKER"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with router.lifespan_context(app):
        await router.broker.declare_queue(QUEUE)
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/callbacks")
async def callbacks(request: Request) -> JSONResponse:
    body = await request.body()
    try:
        doc = json.loads(body)
        call_id, timestamp, security = doc["callId"], doc["timestamp"], doc["security"]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "malformed"}, status_code=400)
    expected = hashlib.md5(f"{call_id}{SECRET}{timestamp}".encode()).hexdigest()
    if security != expected:
        return JSONResponse({"error": "signature"}, status_code=401)
    await router.broker.publish(body, queue=QUEUE, persist=True, message_id=call_id)
    return JSONResponse({"status": "ok"})
