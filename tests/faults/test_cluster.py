"""A RabbitMQ cluster loses a node mid-stream: nothing lost, nothing handled twice.

An ingress and a worker process get the three nodes of a test cluster (:mod:`tests.cluster`)
in ``SINK_AMQP_URL`` and a steady stream of callbacks. Then, one at a time, with the stream
running: the node the ingress is connected to is SIGKILLed and restarted; then the node of the
work queue's quorum leader. Each kill prints a ``FAULT FIGURES`` line: callbacks sent, 200s,
lost, run twice, and the longest gaps (no 200 answer; no handler run) after the kill.

Only the three extra nodes are touched: the system broker and Redis are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.cluster import BIN, PORTS, Cluster, Node
from tests.faults.harness import (
    Figures,
    Sender,
    Sink,
    expected_pairs,
    stream_bodies,
)
from tests.needs import missing
from tests.processes import SinkProcess
from tests.recording import read_records

pytestmark = pytest.mark.faults

#: Callbacks per kill and their rate: the stream outlasts the kill and the node's restart.
COUNT = 3000
RATE = 100.0
#: How long a killed node stays down before it is restarted, seconds.
DOWN_S = 5.0
#: Replicas of each quorum queue: all three nodes.
QUORUM = "3"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    if not (BIN / "rabbitmq-server").exists() or shutil.which("erl") is None:
        missing(f"RabbitMQ is not installed in {BIN}")
    async with Cluster() as cluster:  # torn down whatever happens
        try:
            yield cluster
        finally:  # the nodes' logs outlive the cluster, in the test's tmp_path
            for node in cluster.nodes:
                with contextlib.suppress(OSError):
                    shutil.copytree(node.dir / "log", tmp_path / "cluster-logs" / node.name)


@pytest.fixture
async def sink(cluster: Cluster, tmp_path: Path, redis_url: str) -> AsyncIterator[Sink]:
    sink = Sink(
        tmp_path, ",".join(cluster.urls), redis_url,
        SINK_QUORUM_SIZE=QUORUM, SINK_INGRESS_PROCESSES="1", SINK_HANDLER_TIMEOUT="5",
    )  # fmt: skip
    try:
        yield sink
    finally:
        for index, process in enumerate(sink.all_processes()):  # the topology goes with the
            await process.kill()  # cluster; the processes' logs stay in tmp_path
            with (tmp_path / f"{process.command}-{index}.jsonl").open("wb") as out:
                out.writelines(orjson.dumps(line) + b"\n" for line in process.lines)


class TimedSender(Sender):
    """A :class:`Sender` that also notes when each 200 came."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.answered: list[float] = []

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> int:
        status = await super()._post(session, body)
        if status == 200:
            self.answered.append(time.monotonic())
        return status


async def watch_handled(records: Path, seen: list[float], stop: asyncio.Event) -> None:
    """Note the moments the number of handler runs grew (polled every 0.1 s)."""
    last = 0
    while not stop.is_set():
        total = sum(read_records(records).values())
        if total > last:
            seen.append(time.monotonic())
            last = total
        await asyncio.sleep(0.1)


def longest_gap(moments: list[float], start: float) -> float:
    """The longest stretch between ``start`` (a kill) and the last of ``moments`` with none of
    them, seconds: how long the kill stopped the flow."""
    points = [start, *sorted(m for m in moments if m > start)]
    return round(max((b - a for a, b in itertools.pairwise(points)), default=float("inf")), 2)


def connected_nodes(process: SinkProcess, cluster: Cluster) -> set[Node]:
    """The cluster nodes that ``process`` (or a child of it) has a TCP connection to."""
    assert process.process is not None
    pids = _descendants(process.process.pid)
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{process.process.pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and fields[9] in inodes and remote_port in PORTS:
                ports.add(remote_port)
    return {cluster.node_by_port(port) for port in ports}


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()  # "pid (comm) state ppid ..."
        except OSError:
            continue
        ppid = int(text.rsplit(") ", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(text.split(" ", 1)[0]))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


async def kill_and_restart(
    sink: Sink, cluster: Cluster, scenario: str, tag: str, victim: Callable[[], Awaitable[Node]]
) -> Figures:
    """Stream ``COUNT`` callbacks; at a quarter, SIGKILL ``victim()``'s node, restart it after
    ``DOWN_S``; wait for the stream, the restart and the handling; count."""
    sender = TimedSender(sink.url, stream_bodies(COUNT, tag), RATE)
    handled: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_handled(sink.records, handled, stop))
    stream = asyncio.create_task(sender.run())
    figures = Figures(scenario)
    try:
        await sender.reached(0.25)
        node = await victim()
        figures.notes["killed"] = node.name
        killed_at = time.monotonic()
        await node.kill()
        await asyncio.sleep(DOWN_S)  # the scenario: the node stays down DOWN_S
        await node.start()
        figures.notes["node_back_after_s"] = round(time.monotonic() - killed_at, 1)
        await asyncio.wait_for(stream, 300)
        await wait_handled(sink, sender, within=120)
        stop.set()
        await watcher
        figures.notes["longest_gap_200_s"] = longest_gap(sender.answered, killed_at)
        figures.notes["longest_gap_handled_s"] = longest_gap(handled, killed_at)
        await cluster.nodes[0].ctl("await_online_nodes", "3")
    finally:
        stop.set()
        stream.cancel()
        await asyncio.gather(stream, watcher, return_exceptions=True)
    return tally(sink, sender, figures, tag)


async def wait_handled(sink: Sink, sender: Sender, within: float) -> None:
    expected = expected_pairs(sender.accepted)
    deadline = time.monotonic() + within
    while not expected <= set(read_records(sink.records)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # anything redelivered late would show up now


def tally(sink: Sink, sender: Sender, figures: Figures, tag: str) -> Figures:
    counts = {k: n for k, n in read_records(sink.records).items() if f"|{tag}-" in k}
    expected = expected_pairs(sender.accepted)
    figures.sent = len(sender.bodies)
    figures.accepted = len(sender.accepted)
    figures.refused = len(sender.refused)
    figures.non_200_answers = sender.non_200
    figures.handled = sum(counts.values())
    figures.lost = len(expected - set(counts))
    figures.extra_runs = sum(n - 1 for n in counts.values() if n > 1)
    figures.notes["unexpected_records"] = len(set(counts) - expected)
    figures.notes["spooled"] = sum(
        line.get("durable") == "spool" and str(line.get("call_id")).startswith(f"{tag}-")
        for p in sink.all_processes()
        for line in p.events("callback.accepted")
    )
    figures.seconds = round(time.monotonic() - sender.started_at, 1)
    print(f"\nFAULT FIGURES {figures.report()}")
    return figures


def assert_nothing_lost_nothing_twice(figures: Figures) -> None:
    """The spool covers a node loss: every callback answered 200, handled once per handler."""
    assert figures.lost == 0, figures
    assert figures.extra_runs == 0, figures
    assert figures.notes["unexpected_records"] == 0, figures
    assert figures.refused == 0 and figures.non_200_answers == 0, figures
    assert figures.accepted == figures.sent, figures


async def test_killing_the_connected_node_then_the_leader_node_loses_nothing(
    cluster: Cluster, sink: Sink
) -> None:
    ingress = await sink.start_ingress()
    worker = await sink.start_worker()

    async def connected_node() -> Node:
        [node] = connected_nodes(ingress, cluster)
        return node

    async def leader_node() -> Node:
        return await cluster.leader_of(f"{sink.prefix}.work")

    first = await kill_and_restart(
        sink, cluster, "cluster: SIGKILL the ingress's node, restart it", "node", connected_node
    )
    first.notes["worker_moved_to"] = sorted(n.name for n in connected_nodes(worker, cluster))
    assert_nothing_lost_nothing_twice(first)

    second = await kill_and_restart(
        sink, cluster, "cluster: SIGKILL the work queue leader's node, restart it", "leader",
        leader_node,
    )  # fmt: skip
    assert_nothing_lost_nothing_twice(second)
    assert ingress.process is not None and ingress.process.returncode is None
    assert worker.process is not None and worker.process.returncode is None
