"""TLS servers of the tests' own: a throw-away CA and its certificates, a ``redis-server``
and a RabbitMQ node that speak TLS only, each on a free port and always stopped.

The shared RabbitMQ (5672) and Redis (6379) are never touched. Certificates are made with the
``openssl`` CLI (the ``cryptography`` package is not a dependency): a CA, a server
certificate for ``localhost`` and ``127.0.0.1`` signed by it, a client certificate signed by
it (mutual TLS), and a second, unrelated CA (what a wrong ``*_TLS_CA_FILE`` looks like).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from callback_sink.testing.ports import free_port
from tests.cluster import BIN, NODE_TIMEOUT

#: What a server certificate must carry for Python's default checks (SAN, key usage).
SERVER_EXT = (
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
    "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
)
CLIENT_EXT = (
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=clientAuth\n"
)
#: A redis-server starts in well under a second; this bounds a loaded machine.
REDIS_TIMEOUT = 30.0


@dataclass(frozen=True)
class Pki:
    """The files of a test CA: ``ca`` signed ``server_*`` and ``client_*``; ``other_ca``
    signed nothing of them."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, check=True, timeout=60,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", key, "-out", cert, cwd=directory,
    )  # fmt: skip
    return cert, key


def _signed(directory: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr"))
    (directory / f"{name}.ext").write_text(ext)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key,
        "-out", csr, cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-days", "2", "-out", cert, "-extfile", directory / f"{name}.ext", cwd=directory,
    )  # fmt: skip
    key.chmod(0o644)  # the test's servers and clients read it (a real key stays 0600)
    return cert, key


def make_pki(directory: Path) -> Pki:
    """A fresh CA, server and client certificates, and an unrelated CA, under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    server = _signed(directory, "localhost", ca, SERVER_EXT)
    client = _signed(directory, "client", ca, CLIENT_EXT)
    other, _ = _ca(directory, "other-ca")
    return Pki(ca[0], *server, *client, other)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, process: subprocess.Popen[bytes], within: float, what: str) -> None:
    """Poll until ``port`` accepts (its server's listener opens last in the boot)."""
    deadline = time.monotonic() + within
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_tls(pki: Pki, directory: Path) -> Iterator[int]:
    """A ``redis-server`` speaking TLS only, requiring a client certificate signed by the
    test CA; yields its port and always kills it."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
             "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
             "--save", "", "--appendonly", "no", "--dir", str(directory)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        _wait_listening(port, process, REDIS_TIMEOUT, f"redis-server with TLS (see {log})")
        yield port
    finally:
        process.kill()
        process.wait(timeout=30)


class TlsBroker:
    """A RabbitMQ node of its own (name, ports, cookie, data and logs under ``root``) whose
    only listener is TLS, requiring a client certificate signed by the test CA. ``with``
    starts it and always SIGKILLs it."""

    def __init__(self, pki: Pki, root: Path) -> None:
        self.pki = pki
        self.root = root
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"tls-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqps://guest:guest@localhost:{self.port}/"
        self.pid_file = root / "beam.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "empty.env"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "data"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1} "
            "+sbwt none +sbwtdcpu none +sbwtdio none",
        }

    def _prepare(self) -> None:
        for sub in ("home", "data", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cookie = self.root / "home" / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        (self.root / "empty.env").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(
            "\n".join([
                "listeners.tcp = none",
                f"listeners.ssl.default = 127.0.0.1:{self.port}",
                f"ssl_options.cacertfile = {self.pki.ca}",
                f"ssl_options.certfile = {self.pki.server_cert}",
                f"ssl_options.keyfile = {self.pki.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = true",
                "log.file.level = warning",
                "",
            ])
        )  # fmt: skip

    def __enter__(self) -> TlsBroker:
        self._prepare()
        try:
            with (self.root / "log" / "console.log").open("ab") as console:
                self.process = subprocess.Popen(
                    [str(BIN / "rabbitmq-server")], env=self.env(), cwd=self.root,
                    stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                    start_new_session=True,
                )  # fmt: skip
            _wait_listening(self.port, self.process, NODE_TIMEOUT, f"{self.name} ({self.root})")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGKILL the Erlang VM and the start script's process group; remove the data."""
        with contextlib.suppress(OSError, ValueError):
            beam = int(self.pid_file.read_text().strip())
            mine = f"RABBITMQ_PID_FILE={self.pid_file}".encode()
            if mine in Path(f"/proc/{beam}/environ").read_bytes().split(b"\0"):
                os.kill(beam, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.root / "data", ignore_errors=True)


def rabbitmq_missing() -> str | None:
    """Why a second RabbitMQ node cannot be started here, or None."""
    if not (BIN / "rabbitmq-server").exists():
        return f"no {BIN / 'rabbitmq-server'}"
    return None
