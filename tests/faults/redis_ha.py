"""Throw-away Redis topologies for fault tests: a Sentinel group and a Redis Cluster, each its
own ``redis-server`` processes on free ports in a temp dir (the shared Redis on 6379 is never
touched). Use them as async context managers: every process is killed and its directory
removed on the way out, whatever happened inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from callback_sink.testing.ports import free_port
from tests.faults.harness import Figures, Sender, Sink, expected_pairs, reckon, run_cmd
from tests.faults.test_cluster import longest_gap, watch_handled
from tests.recording import read_records
from tests.waiting import until

#: Failure detection of the test topologies, milliseconds: fast, so that a failover fits a test.
DOWN_AFTER_MS = 1000
SERVICE = "mymaster"


def _server_args(port: int, workdir: Path) -> list[str]:
    return [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "no",
        "--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0",
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip


class _Processes:
    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"callback-sink-{name}-"))
        self.processes: dict[int, asyncio.subprocess.Process] = {}

    async def spawn(self, port: int, *argv: str) -> None:
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        self.processes[port] = await asyncio.create_subprocess_exec(
            *argv, cwd=workdir, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await until(lambda: _answers(port), within=20, what=f"redis on {port} answers")

    async def kill(self, port: int) -> None:
        """SIGKILL the server on ``port`` (no goodbye to its replicas or clients)."""
        process = self.processes[port]
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()

    async def __aenter__(self) -> _Processes:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for port in list(self.processes):
            with contextlib.suppress(ProcessLookupError):
                await self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


async def _answers(port: int) -> bool:
    client = Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (OSError, RedisError):  # not up, or loading: not yet
        return False
    finally:
        await client.aclose()


class SentinelGroup(_Processes):
    """One primary, two replicas, three sentinels (quorum 2)."""

    def __init__(self) -> None:
        super().__init__("sentinel")
        self.servers = [free_port() for _ in range(3)]
        self.sentinels = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    async def __aenter__(self) -> SentinelGroup:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _start(self) -> SentinelGroup:
        primary = self.servers[0]
        await self.spawn(primary, *_server_args(primary, self.dir / str(primary)))
        for port in self.servers[1:]:
            await self.spawn(port, *_server_args(port, self.dir / str(port)),
                             "--replicaof", "127.0.0.1", str(primary))  # fmt: skip
        for port in self.sentinels:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n",
                encoding="utf-8",
            )
            await self.spawn(port, "redis-server", str(conf), "--sentinel")
        await until(self._settled, within=60, what="sentinels see 2 replicas and each other")
        return self

    async def _settled(self) -> bool:
        client = Redis(port=self.servers[0], socket_timeout=1)
        try:
            info = await client.info("replication")
        finally:
            await client.aclose()
        if [info.get(f"slave{i}", {}).get("state") for i in (0, 1)] != ["online", "online"]:
            return False
        for port in self.sentinels:
            client = Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                fields = await client.sentinel_master(SERVICE)
            finally:
                await client.aclose()
            if int(fields["num-slaves"]) < 2 or int(fields["num-other-sentinels"]) < 2:
                return False
        return True

    async def primary(self) -> int:
        """The port of the primary the sentinels name now."""
        for port in self.sentinels:
            client = Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                _, found = await client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
                )
                return int(found)
            except OSError:
                continue
            finally:
                await client.aclose()
        raise RuntimeError("no sentinel answers")


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is a port too, and likely free."""
    while True:
        port = free_port()
        if port + 10_000 < 65_536:
            with contextlib.closing(socket.socket()) as bus, contextlib.suppress(OSError):
                bus.bind(("127.0.0.1", port + 10_000))
                return port


class RedisClusterGroup(_Processes):
    """Three primaries and three replicas, ``cluster-node-timeout`` :data:`DOWN_AFTER_MS`."""

    def __init__(self) -> None:
        super().__init__("cluster")
        self.ports = [_cluster_port() for _ in range(6)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    async def __aenter__(self) -> RedisClusterGroup:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _start(self) -> RedisClusterGroup:
        for port in self.ports:
            await self.spawn(port, *_server_args(port, self.dir / str(port)),
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(DOWN_AFTER_MS),
                "--cluster-replica-validity-factor", "0",
            )  # fmt: skip
        await run_cmd("redis-cli", "--cluster", "create",
                      *(f"127.0.0.1:{p}" for p in self.ports),
                      "--cluster-replicas", "1", "--cluster-yes")  # fmt: skip
        await until(self._ok, within=60, what="every cluster node says cluster_state:ok")
        return self

    async def _ok(self) -> bool:
        for port in self.ports:
            if port in self.processes and self.processes[port].returncode is not None:
                continue
            client = Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                info = await client.execute_command("CLUSTER", "INFO")
            finally:
                await client.aclose()
            text = info if isinstance(info, str) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return True

    async def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot now."""
        live = [p for p in self.ports if self.processes[p].returncode is None]
        client = Redis(port=live[0], socket_timeout=1, decode_responses=True)
        try:
            slot = int(await client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in await client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            await client.aclose()
        raise RuntimeError(f"no primary serves slot of {key!r}")

    async def moved(self, key: str, old: int) -> bool:
        """``key``'s slot is served by another primary than ``old`` (a replica took over),
        and every live node says the cluster is ok."""
        return await self.primary_of(key) != old and await self._ok()


async def stream_with_a_kill(
    sink: Sink,
    bodies: list[tuple[str, bytes, str]],
    rate: float,
    kill: Callable[[], Awaitable[None]] | None,
    figures: Figures,
    resend: bool = True,
) -> Figures:
    """Stream ``bodies`` at ``rate``; at 30 % of it run ``kill`` (None: no fault); wait until
    everything accepted is handled and count (:func:`reckon`). ``figures.notes`` gets the
    longest stretch without a handler run after the kill, seconds (``longest_pause_s``), and
    what the workers logged about the store.

    Then, with ``resend``, every accepted callback is posted once more, as Easemob re-sends
    one (the sink needs ``SINK_EDGE_DEDUP_SIZE=0``): each copy must meet its done marks.
    ``extra_runs`` then also counts the done marks the failover lost (``twice_on_resend``)."""
    handled: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_handled(sink.records, handled, stop))
    sender = Sender(sink.url, bodies, rate)
    run = asyncio.create_task(sender.run())
    try:
        await sender.reached(0.3)
        killed_at = time.monotonic()
        if kill is not None:
            await kill()
        await run
        await reckon(sink, sender, figures, within=150)
    finally:
        stop.set()
        await asyncio.wait([watcher, run], timeout=10)
    if kill is not None:
        figures.notes["longest_pause_s"] = longest_gap(handled, killed_at)
    if resend:
        await _resend(sink, bodies, sender, figures)
    outcomes = Counter(str(line.get("outcome")) for w in sink.workers
                       for line in w.events("callback.handled"))  # fmt: skip
    figures.notes["outcomes"] = dict(outcomes)
    if os.environ.get("SINK_HA_DUMP"):
        for w in sink.workers:
            for line in w.lines:
                if line.get("event") != "callback.handled" or line.get("outcome") != "ok":
                    print("LINE", orjson.dumps(line).decode()[:400])
    for event in ("dedup.unavailable", "dedup.recovered", "dedup.mark_lost", "dedup.wait_short"):
        figures.notes[event] = sum(len(w.events(event)) for w in sink.workers)
    print(f"\nREDIS HA FIGURES {orjson.dumps(asdict(figures)).decode()}")
    return figures


def _settled(sink: Sink) -> int:
    """``callback.handled`` lines that ended a (handler, callback): ran, or found it done."""
    return sum(line.get("outcome") in ("ok", "duplicate")
               for w in sink.workers for line in w.events("callback.handled"))  # fmt: skip


async def _resend(
    sink: Sink, bodies: list[tuple[str, bytes, str]], sender: Sender, figures: Figures
) -> None:
    accepted = {key for key, _ in sender.accepted}
    again = [body for body in bodies if body[0] in accepted]
    before, runs_before = _settled(sink), figures.extra_runs
    expected = len(expected_pairs(sender.accepted))
    await Sender(sink.url, again, rate=200.0).run()
    await until(lambda: _settled(sink) - before >= expected, within=120,
                what="every re-sent copy ran or met its done marks")  # fmt: skip
    counts = read_records(sink.records)
    figures.extra_runs = sum(n - 1 for n in counts.values() if n > 1)
    figures.notes["twice_on_resend"] = figures.extra_runs - runs_before
