"""The usual alternative: FastAPI + Celery ``.delay()``, the way such an endpoint is
commonly written. Runs in the benchmark's own virtualenv (``bench/.venv-alt``) under
``uvicorn --workers 2``; never imported by callback-sink.

It does the same checks as the ingress (JSON body, callId/timestamp/security present, the
md5 signature) and hands the document to a Celery task with ``.delay()``. Broker: the same
RabbitMQ; queue ``$ALT_QUEUE``, a quorum queue (as durable as the sink's work queue);
messages persistent (Celery's default). ``ALT_CONFIRM=1`` turns on publisher confirms
(``broker_transport_options={'confirm_publish': True}``): each ``.delay()`` then waits for
the broker's confirm, as the sink does before answering 200. Nothing consumes the queue:
the benchmark counts its messages against the 200 answers, then deletes it.
"""

from __future__ import annotations

import hashlib
import os

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECRET = os.environ["ALT_SECRET"]

celery = Celery("alt", broker=os.environ["ALT_BROKER"])
celery.conf.task_default_queue = os.environ["ALT_QUEUE"]
celery.conf.task_default_exchange = os.environ["ALT_QUEUE"]
celery.conf.task_default_routing_key = os.environ["ALT_QUEUE"]
celery.conf.task_default_queue_type = "quorum"
celery.conf.broker_connection_retry_on_startup = True
if os.environ.get("ALT_CONFIRM") == "1":
    celery.conf.broker_transport_options = {"confirm_publish": True}


@celery.task(name="alt.handle")
def handle(doc: dict) -> None:  # never runs here: nothing consumes the queue
    pass


app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ok"}


@app.post("/callbacks")
async def callbacks(request: Request) -> JSONResponse:
    try:
        doc = await request.json()
        call_id, timestamp, security = doc["callId"], doc["timestamp"], doc["security"]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "malformed"}, status_code=400)
    expected = hashlib.md5(f"{call_id}{SECRET}{timestamp}".encode()).hexdigest()
    if security != expected:
        return JSONResponse({"error": "signature"}, status_code=401)
    handle.delay(doc)
    return JSONResponse({"status": "ok"})
