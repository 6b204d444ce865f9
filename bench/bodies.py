"""Signed callbacks for the benchmark: every spec example the ingress accepts, re-signed with
a unique callId and a fresh timestamp, as JSON bytes (and as files for wrk's Lua script)."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from callback_sink.sink.errors import DecodeError
from callback_sink.sink.events import from_document, parse
from callback_sink.sink.examples import load_examples
from callback_sink.sink.names import routing_key
from callback_sink.sink.signature import sign


@cache
def examples() -> tuple[dict[str, Any], ...]:
    """The spec examples the ingress accepts, each with its event name under ``"_name"``
    (removed before signing)."""
    kept = []
    for example in load_examples():
        body = dict(example.body)
        try:
            doc = parse(orjson.dumps(body))
        except DecodeError:
            continue
        body["_name"] = from_document(doc).name
        kept.append(body)
    return tuple(kept)


def build(count: int, secret: str, tag: str, start: int = 0) -> list[bytes]:
    """``count`` signed callbacks with callIds ``{tag}-{i}``, timestamps of now (in ms)."""
    now_ms = int(time.time() * 1000)
    source = examples()
    bodies = []
    for i in range(start, start + count):
        body = dict(source[i % len(source)])
        del body["_name"]
        body["callId"] = call_id = f"{tag}-{i}"
        body["timestamp"] = now_ms
        body["security"] = sign(call_id, secret, now_ms)
        bodies.append(orjson.dumps(body))
    return bodies


def build_messages(count: int, secret: str, tag: str) -> list[tuple[str, str, bytes]]:
    """(event name, callId, body) of ``count`` callbacks, as the ingress would publish them."""
    source = examples()
    out = []
    for i, body in enumerate(build(count, secret, tag)):
        out.append((source[i % len(source)]["_name"], f"{tag}-{i}", body))
    return out


def routing_key_of(name: str) -> str:
    return routing_key(name)


def write_for_wrk(directory: Path, bodies: list[bytes], threads: int) -> None:
    """One file per wrk thread (``bodies-1.txt`` …), one compact JSON body per line, the
    bodies dealt round-robin so that every thread has its own callIds."""
    directory.mkdir(parents=True, exist_ok=True)
    for t in range(threads):
        chunk = bodies[t::threads]
        (directory / f"bodies-{t + 1}.txt").write_bytes(b"\n".join(chunk) + b"\n")
