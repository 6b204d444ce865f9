"""pytest fixtures for handler packages, active wherever callback-sink is installed.

Registered through the ``pytest11`` entry point, so a handler package's tests get them by
depending on the sink (the async fixtures need ``pytest-asyncio``):

- ``make_event``: :func:`callback_sink.testing.make_event`.
- ``sink_tester``: a factory of :class:`~callback_sink.testing.SinkTester`\\ s
  (``sink_tester("myapp.callbacks", max_attempts=3)``); their shutdown hooks run after the
  test.
- ``sink_e2e``: an async factory of running sinks (``await sink_e2e("myapp.callbacks")``):
  a real ingress and worker on the local RabbitMQ. Opt-in: a test using it is marked
  ``sink_e2e`` (deselect with ``-m "not sink_e2e"``) and fails at once, saying so, when the
  broker is not reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from callback_sink.sink.events import Event
from callback_sink.testing import (
    BrokerUnreachable,
    RunningSink,
    SinkFactory,
    SinkTester,
    TesterFactory,
    make_event,
)
from callback_sink.testing.tester import HandlerSource

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - pytest then says the async fixture needs a plugin
    async_fixture = pytest.fixture  # type: ignore[assignment]

E2E_MARK = "sink_e2e"

__all__ = ["SinkFactory", "TesterFactory"]  # the fixtures' types, also in callback_sink.testing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{E2E_MARK}: end-to-end test on the local RabbitMQ (the sink_e2e fixture)"
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_MARK in getattr(item, "fixturenames", ()):
            item.add_marker(getattr(pytest.mark, E2E_MARK))


@pytest.fixture(name="make_event")
def make_event_fixture() -> Callable[..., Event]:
    """``make_event("muc:create", group_id="42")``: a valid callback stamped now."""
    return make_event


@async_fixture
async def sink_tester() -> AsyncIterator[TesterFactory]:
    """``sink_tester(*handler_modules, **settings)``: a :class:`SinkTester`; the start-up hooks
    run before its first callback, the shutdown hooks after the test."""
    made: list[SinkTester] = []

    def make(*handlers: HandlerSource, **options: Any) -> SinkTester:
        tester = SinkTester(*handlers, **options)
        made.append(tester)
        return tester

    yield make
    for tester in reversed(made):
        await tester.shutdown()


@async_fixture
async def sink_e2e() -> AsyncIterator[SinkFactory]:
    """``await sink_e2e(*handler_modules, **settings)``: a running ingress + worker on the
    local RabbitMQ (default handlers: the installed entry points); stopped after the test."""
    started: list[RunningSink] = []

    async def start(*handlers: HandlerSource, **options: Any) -> RunningSink:
        try:
            sink = await RunningSink.start(*handlers, **options)
        except BrokerUnreachable as exc:
            pytest.fail(f"sink_e2e: {exc}", pytrace=False)
        started.append(sink)
        return sink

    yield start
    for sink in reversed(started):
        await sink.stop()
