"""Every example of the user documents runs (tests/doc_blocks.py says which and how).

Python examples run next to ``myapp``, a stand-in for the application the documents talk about
(its CRM client and its store record what they are asked), with the emulator standing in for
Easemob's REST API; then whatever an example defines is exercised through the testing kit:
each handler gets one callback of an event it subscribes to and must succeed at once, the
hooks run, each ``@presend`` function answers from its chain. Shell examples run in bash
against a ``callback-sink run`` (or the emulator) of their own; the documents' local
addresses are mapped to theirs, and nothing they post may be refused.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import os
import sys
import tomllib
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.handlers.presend import collect_presend
from callback_sink.handlers.registry import collect
from callback_sink.sink import names
from callback_sink.sink.examples import load_examples
from callback_sink.sink.settings import Settings
from callback_sink.testing import (
    SinkTester,
    make_event,
    make_presend_event,
    registry_of,
    run_presend,
)
from callback_sink.testing.ports import free_port
from tests import doc_blocks
from tests.doc_blocks import ROOT, Block
from tests.processes import SinkProcess

#: The application the examples import: ``myapp.crm``, ``myapp.store``.
MYAPP = {
    "myapp/__init__.py": '"""The stand-in application of the README\'s examples."""\n',
    "myapp/crm.py": '''"""A CRM client that records what it is asked."""

calls: list[tuple[str, object]] = []


class Invalid(Exception):
    pass


class RateLimited(Exception):
    retry_after = 0.1


class Pool:
    async def close(self) -> None:
        calls.append(("close", None))


async def connect() -> Pool:
    calls.append(("connect", None))
    return Pool()


async def review(*, group: str, user: str | None, reason: object) -> None:
    calls.append(("review", group))


async def audit_log(call_id: str, name: str, raw: object) -> None:
    calls.append(("audit", name))
''',
    "myapp/store.py": '''"""A store that records what it saves."""

saved: list[tuple[object, ...]] = []


async def save(*values: object) -> None:
    saved.append(values)
''',
    # What the kit example's ``crm_throttling`` fixture is, in the user's own conftest.
    "tests/conftest.py": """import pytest

from myapp import crm


@pytest.fixture
def crm_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    async def throttled(**_: object) -> None:
        raise crm.RateLimited("slow down")

    monkeypatch.setattr(crm, "review", throttled)
""",
    "pytest.ini": "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
}
#: The README's local addresses: the sink of `callback-sink run`, and the emulator.
SINK_ADDRESS = "http://127.0.0.1:8080"
#: The PostgreSQL of the machine (deploy/ensure-services.sh), for the inbox examples.
INBOX_URL = "postgresql://postgres@127.0.0.1:5432/test"
EMULATOR_ADDRESS = "http://127.0.0.1:8090"


def ids(block: Block) -> str:
    return block.id


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``myapp`` and every example that names its file, importable; the current directory."""
    for relative, text in MYAPP.items():
        write(tmp_path / relative, text)
    for block in doc_blocks.of("python"):
        if block.path is not None:
            write(tmp_path / block.path, block.text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SINK_DIRECTORY_URL", f"sqlite:///{tmp_path / 'directory.sqlite3'}")
    # The database of the transactional handlers' examples (make test starts PostgreSQL).
    monkeypatch.setenv("SINK_INBOX_URL", os.environ.get("SINK_TEST_INBOX_URL", INBOX_URL))
    yield tmp_path
    for name in [n for n in sys.modules if n == "myapp" or n.startswith(("myapp.", "readme_"))]:
        del sys.modules[name]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
async def easemob(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    """The emulator, as the Easemob app of ``SINK_EASEMOB_*`` (the REST client's example)."""
    settings = EmulatorSettings(sink_url="")
    emulator = Emulator(settings)
    server = TestServer(emulator.app())
    await server.start_server()
    for key, value in {
        "HOST": str(server.make_url("")).rstrip("/"), "ORG": settings.org, "APP": settings.app,
        "CLIENT_ID": settings.client_id, "CLIENT_SECRET": settings.client_secret,
    }.items():  # fmt: skip
        monkeypatch.setenv(f"SINK_EASEMOB_{key}", value)
    yield emulator
    await server.close()


@pytest.mark.parametrize("block", doc_blocks.of("python"), ids=ids)
async def test_the_python_example_runs_and_what_it_defines_works(
    block: Block, app_dir: Path, easemob: Emulator
) -> None:
    if block.path is not None and Path(block.path).name.startswith("test_"):
        return await run_pytest(app_dir, block.path)
    module = await execute(block)
    await exercise(module)


async def execute(block: Block) -> types.ModuleType:
    """The example as a module: imported from its file if it names one, else run as written
    (top-level ``await`` allowed, as in an asyncio REPL)."""
    if block.path is not None:
        return importlib.import_module(block.path.removesuffix(".py").replace("/", "."))
    name = f"readme_{block.line}"
    module = types.ModuleType(name)
    module.__file__ = f"{block.document}:{block.line}"
    sys.modules[name] = module
    code = compile(block.text, module.__file__, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, module.__dict__)  # the example itself: that is the point
    if inspect.iscoroutine(result):
        await asyncio.wait_for(result, 30)
    return module


async def exercise(module: types.ModuleType) -> None:
    """Each handler gets one callback it subscribes to and handles it at once (no retry, no
    dead letter); the hooks run; each ``@presend`` function answers from its chain."""
    handlers = collect(module)
    if handlers:
        transactional = any(h.options.transactional for h in handlers)
        inbox = {"inbox_url": os.environ["SINK_INBOX_URL"]} if transactional else {}
        async with SinkTester(module, **inbox) as tester:
            for handler in handlers:
                report = await tester.run(make_event(event_for(handler.subscriptions[0])))
                steps = report.steps(handler.name)
                assert len(steps) == 1 and not report.dead_letters, (handler.name, steps)
    else:
        registry = registry_of([module])
        await registry.startup()
        await registry.shutdown()
    if collect_presend(module):
        decision = await run_presend(make_presend_event("hello"), module)
        assert decision.source == "chain", decision


def event_for(subscription: str) -> str:
    """A concrete event name that ``subscription`` (a name, a family or ``*``) receives."""
    if subscription in names.KNOWN_NAMES:
        return subscription
    for name in sorted(names.KNOWN_NAMES):
        if names.matches(subscription, name) and not name.endswith(":unknown"):
            return name
    raise AssertionError(f"no event name for {subscription!r}")


async def run_pytest(app_dir: Path, test_file: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{app_dir}{os.pathsep}{ROOT}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file,
        cwd=app_dir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, out.decode()


@pytest.mark.parametrize("block", doc_blocks.of("toml"), ids=ids)
def test_the_toml_example_parses(block: Block) -> None:
    assert tomllib.loads(block.text)


@pytest.fixture
def shell_dir(tmp_path: Path) -> Path:
    """A scratch project folder: ``.venv`` is this project's, ``my-callback.json`` a
    callback of the spec (what ``callback-sink sign my-callback.json`` signs)."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "my-callback.json").write_bytes(orjson.dumps(load_examples()[0].body))
    return tmp_path


async def bash(script: str, cwd: Path, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 0, f"exit {process.returncode}:\n{script}\n{text}"
    return text


def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINK_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env | {"PYTHONPATH": str(ROOT)}


def script_of(block: Block) -> str:
    if block.lang == "console":
        return "\n".join(line[2:] for line in block.text.splitlines() if line.startswith("$ "))
    return block.text


@pytest.mark.parametrize("block", doc_blocks.of("sh", "console"), ids=ids)
async def test_the_shell_example_runs(
    block: Block, shell_dir: Path, settings: Settings, easemob: Emulator
) -> None:
    script = script_of(block)
    env = shell_env()
    if EMULATOR_ADDRESS in script:
        base = os.environ["SINK_EASEMOB_HOST"]  # the emulator the `easemob` fixture serves
        await bash(script.replace(EMULATOR_ADDRESS, base), shell_dir, env)
        assert easemob.state.groups, "the example made no group"
        return
    if SINK_ADDRESS not in script:
        await bash(script, shell_dir, env)
        return
    port = free_port()
    sink = SinkProcess(
        "run", {"SINK_PORT": str(port), "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
                "SINK_SPOOL_DIR": str(shell_dir / "spool")}, cwd=shell_dir,
    )  # fmt: skip
    for name in [n for n in sink.env if n.startswith(("SINK_SECRETS", "SINK_APPS"))]:
        del sink.env[name]
    await sink.start("worker.started")
    try:
        await bash(script.replace(SINK_ADDRESS, f"http://127.0.0.1:{port}"), shell_dir, env)
        await sink.wait_for_line("callback.accepted", within=30)
    finally:
        await sink.stop()
    assert sink.events("callback.rejected") == []
