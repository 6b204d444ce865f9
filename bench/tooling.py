"""What the benchmark runs with: wrk, the alternative's virtualenv, the ingress's options, and
a description of this machine and its services for the header and the JSON file."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import redis.asyncio as aioredis
from common import (
    ALT_REQUIREMENTS,
    ALT_VENV,
    AMQP_URL,
    BENCH,
    CLI,
    PYTHON,
    REDIS_URL,
    REPO,
    log,
)

from callback_sink.sink.settings import Settings


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: apt-get install -y wrk")
    apt = ["apt-get", "install", "-y", "-q", "wrk"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        apt.insert(0, "sudo")
    result = subprocess.run(apt, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        subprocess.run([*apt[:-4], "update", "-q"], capture_output=True, check=False)
        subprocess.run(apt, capture_output=True, text=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: could not install wrk (apt-get install -y wrk)")
    return found


def ensure_alt_venv() -> Path:
    """bench/.venv-alt with FastAPI, uvicorn, Celery and FastStream (bench/alt-requirements.txt)."""
    stamp = ALT_VENV / ".installed"
    wanted = ALT_REQUIREMENTS.read_text(encoding="utf-8")
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return ALT_VENV
    log(f"installing FastAPI + uvicorn + Celery + FastStream into {ALT_VENV.relative_to(REPO)}")
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"
    if not (ALT_VENV / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(ALT_VENV)], check=True)
    pip = [str(ALT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(ALT_REQUIREMENTS)], check=True)
    stamp.write_text(wanted, encoding="utf-8")
    return ALT_VENV


def ingress_has_processes() -> bool:
    """Whether this callback-sink's ingress takes ``--processes N``."""
    try:
        out = subprocess.run(
            [CLI, "ingress", "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--processes" in out.stdout


def ingress_command(processes: int, multi: bool) -> list[str]:
    return [CLI, "ingress", "--processes", str(processes)] if multi else [CLI, "ingress"]


async def describe() -> dict[str, Any]:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        assert connection.transport is not None
        version = connection.transport.connection.server_properties.get("version", "?")
        rabbit = version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        redis_version = (await client.info("server")).get("redis_version", "?")
    finally:
        await client.aclose()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: ASYNC221
    settings = Settings()
    echo: dict[str, float] = {}
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
        wakeup = subprocess.run(  # noqa: ASYNC221
            [PYTHON, str(BENCH / "wakeup.py")], capture_output=True, check=False, timeout=60
        )
        if wakeup.returncode == 0:
            echo = orjson.loads(wakeup.stdout)
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "rabbitmq": rabbit,
        "redis": redis_version,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?",
        "loop_available": loop,
        "worker_prefetch": settings.prefetch,
        "worker_concurrency": settings.concurrency,
        "load_before": os.getloadavg(),
        # the CPU a lone wake-up costs a process here, at a low and a high rate (wakeup.py)
        "echo_cpu_us": echo,
    }
