"""A three-node RabbitMQ cluster on this one machine, for the cluster fault scenario.

The nodes run beside the system broker (which is left alone: its port 5672, node name, cookie
and data are never touched), each with its own node name, AMQP port (5681-5683), distribution
port (25681-25683), config, data, log and pid files under one directory, and the cluster's own
Erlang cookie. The scripts of ``/usr/lib/rabbitmq/bin`` are called directly: the ``/usr/sbin``
wrappers would switch to the system node's user, home and cookie. No plugin is enabled (so no
management or Prometheus port is opened).

From a shell (idempotent: ``start`` first kills whatever a previous run left, by its pid
files)::

    .venv/bin/python -m tests.cluster start   # prints the three URLs, comma-separated
    .venv/bin/python -m tests.cluster stop
    .venv/bin/python -m tests.cluster check   # start, print the timing, stop

In a test, ``async with Cluster() as cluster:`` starts it and always tears it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import TracebackType

BIN = Path("/usr/lib/rabbitmq/bin")
#: Default root of the cluster's files; one cluster per root at a time.
ROOT = Path(os.environ.get("SINK_TEST_CLUSTER_DIR", f"/tmp/callback-sink-cluster-{os.getuid()}"))
#: AMQP ports of nodes 1..3; each node's distribution port is this plus DIST_OFFSET.
PORTS = (5681, 5682, 5683)
DIST_OFFSET = 20000
#: Ports rabbitmqctl's own short-lived Erlang node may take: away from the system node's CLI
#: range (35672-35682), so both can run tools at once.
CTL_DIST_PORTS = (35781, 35799)
#: The cluster's own cookie (any fixed string; it only has to be the same on every node).
COOKIE = "callback-sink-test-cluster"
#: A node on 2 busy cores boots in 3-8 s; this is the bound of one start or one CLI call.
NODE_TIMEOUT = 90.0


class Node:
    """One RabbitMQ node of the cluster: its name, port and files."""

    def __init__(self, root: Path, index: int) -> None:
        self.index = index
        self.root = root
        self.dir = root / f"node{index}"
        self.port = PORTS[index - 1]
        self.name = f"sink-cluster-{index}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.group_file = self.dir / "group.pid"  # the process group of its start script
        self.pid_file = self.dir / "beam.pid"  # written by RabbitMQ: the Erlang VM itself
        self.process: asyncio.subprocess.Process | None = None

    def env(self) -> dict[str, str]:
        """The environment of both ``rabbitmq-server`` and ``rabbitmqctl`` for this node."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root / "home"),  # holds the cluster's .erlang.cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "empty.env"),  # not the system's
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + DIST_OFFSET),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(CTL_DIST_PORTS[0]),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(CTL_DIST_PORTS[1]),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "data"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            # Schedulers that sleep instead of spinning: three nodes share two busy cores.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1} "
            "+sbwt none +sbwtdcpu none +sbwtdio none",
        }

    def prepare(self, seed: Node | None) -> None:
        """Write the node's config; a node with a ``seed`` joins the seed's cluster on its
        first boot (peer discovery from a fixed list: no CLI round trips, which cost seconds)."""
        for sub in ("data", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        config = [f"listeners.tcp.local = 127.0.0.1:{self.port}", "log.file.level = warning"]
        if seed is not None:
            config += [
                "cluster_formation.peer_discovery_backend = classic_config",
                f"cluster_formation.classic_config.nodes.1 = {seed.name}",
            ]
        (self.dir / "rabbitmq.conf").write_text("\n".join(config) + "\n")

    async def start(self) -> None:
        """Start the node (fresh or after a kill: its data dir is kept) and wait until it runs."""
        self.pid_file.unlink(missing_ok=True)
        with (self.dir / "log" / "console.log").open("ab") as console:
            self.process = await asyncio.create_subprocess_exec(
                str(BIN / "rabbitmq-server"), env=self.env(), cwd=self.dir,
                stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console,
                start_new_session=True,
            )  # fmt: skip
        self.group_file.write_text(str(self.process.pid))
        # The AMQP listener opens last in the boot: once it answers, the node runs (a CLI
        # ``await_startup`` would cost seconds of its own Erlang VM start).
        deadline = time.monotonic() + NODE_TIMEOUT
        while await _port_closed(self.port):
            if self.process.returncode is not None or time.monotonic() > deadline:
                log = self.dir / "log" / "console.log"
                raise RuntimeError(f"{self.name} did not start; see {log}")
            await asyncio.sleep(0.2)

    async def ctl(self, *args: str, tool: str = "rabbitmqctl") -> str:
        """Run a CLI tool against this node; its output, or RuntimeError with its errors."""
        process = await asyncio.create_subprocess_exec(
            str(BIN / tool), "-n", self.name, "-q", *args, env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"{tool} {' '.join(args)} on {self.name}: timed out") from None
        if process.returncode != 0:
            text = (err or out).decode(errors="replace").strip()
            raise RuntimeError(f"{tool} {' '.join(args)} on {self.name}: {text}")
        return out.decode(errors="replace")

    def beam_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    async def kill(self) -> None:
        """SIGKILL the node: no goodbye to its peers or its clients (a crashed host)."""
        beam, group = self.beam_pid(), _read_pid(self.group_file)
        if beam is not None and self._owns(beam):
            with contextlib.suppress(ProcessLookupError):
                os.kill(beam, signal.SIGKILL)
        if group is not None and self._owns(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10)
            self.process = None
        await _wait_port_closed(self.port)

    def _owns(self, pid: int) -> bool:
        """Whether ``pid`` is still this node's process (a stale pid file may name another)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"RABBITMQ_PID_FILE={self.pid_file}".encode() in environ.split(b"\0")


class Cluster:
    """Three clustered nodes; ``async with`` starts them and always tears them down."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.nodes = [Node(root, i) for i in (1, 2, 3)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_by_port(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def node_by_name(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Kill leftovers of a previous run, start three fresh nodes and cluster them."""
        await self.stop()
        for port in PORTS:
            if not await _port_closed(port):
                raise RuntimeError(f"port {port} is taken by something else: cannot start")
        (self.root / "home").mkdir(parents=True)
        cookie = self.root / "home" / ".erlang.cookie"
        cookie.write_text(COOKIE)
        cookie.chmod(0o400)
        (self.root / "empty.env").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        first, *others = self.nodes
        first.prepare(seed=None)
        for node in others:
            node.prepare(seed=first)
        await first.start()
        await asyncio.gather(*(node.start() for node in others))
        await first.ctl("await_online_nodes", str(len(self.nodes)))

    async def stop(self) -> None:
        """SIGKILL every node of this root (also those of an earlier run) and remove its files."""
        await asyncio.gather(*(node.kill() for node in self.nodes))
        shutil.rmtree(self.root, ignore_errors=True)

    async def leader_of(self, queue: str) -> Node:
        """The node of ``queue``'s quorum leader, asked of any running node."""
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                out = await node.ctl("list_queues", "name", "leader", "--no-table-headers")
                for line in out.splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == queue:
                        return self.node_by_name(parts[1])
        raise RuntimeError(f"no running node knows the leader of {queue}")


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


async def _port_closed(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def _wait_port_closed(port: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await _port_closed(port) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _main(command: str) -> int:
    cluster = Cluster()
    started = time.monotonic()
    if command == "start":
        await cluster.__aenter__()
        print(",".join(cluster.urls))
        print(f"started and clustered in {time.monotonic() - started:.1f}s", file=sys.stderr)
    elif command == "stop":
        await cluster.stop()
    elif command == "check":
        async with cluster:
            up = time.monotonic() - started
            print(",".join(cluster.urls))
        print(f"up in {up:.1f}s, down in {time.monotonic() - started - up:.1f}s", file=sys.stderr)
    else:
        print("usage: python -m tests.cluster start|stop|check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1] if len(sys.argv) > 1 else "")))
