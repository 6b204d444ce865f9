"""Several broker URLs (one per cluster node): parsed, tried in order, failed over.

A cluster is stood in for by TCP relays to the one local broker: each relay is a "node", and
cutting a relay is that node dying for its clients. (The real three-node cluster runs in
``tests/faults/test_cluster.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from callback_sink.environment import masked, variables
from callback_sink.ingress.publisher import Publisher
from callback_sink.sink.amqp import CONNECT_ERRORS, connect_any, node_of, redact
from callback_sink.sink.errors import ConfigError, PublishError
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology
from tests.broker import queue_depth
from tests.conftest import Recorder, callback, post, signed
from tests.test_ingress_outage import Relay
from tests.waiting import until

DEAD = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture
async def relays(amqp_url: str) -> AsyncIterator[tuple[Relay, Relay]]:
    first, second = Relay(amqp_url), Relay(amqp_url)
    await first.start()
    await second.start()
    yield first, second
    await first.cut()
    await second.cut()


def test_amqp_url_may_list_one_url_per_node() -> None:
    settings = Settings.from_env(
        {"SINK_AMQP_URL": "amqp://u:p@rabbit-1:5672/ , amqp://u:p@rabbit-2:5672/,"}
    )
    assert settings.amqp_urls == ("amqp://u:p@rabbit-1:5672/", "amqp://u:p@rabbit-2:5672/")
    assert Settings().amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/",)


@pytest.mark.parametrize("value", ["amqp://h/,http://h2/", "amqp://h/,amqp://u:p@h2:port/", " , "])
def test_a_bad_url_in_the_list_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="SINK_AMQP_URL"):
        Settings.from_env({"SINK_AMQP_URL": value})


def test_quorum_size_is_unset_by_default_and_must_be_positive() -> None:
    assert Settings().quorum_size is None
    assert Settings.from_env({"SINK_QUORUM_SIZE": "3"}).quorum_size == 3
    with pytest.raises(ConfigError, match="SINK_QUORUM_SIZE"):
        Settings.from_env({"SINK_QUORUM_SIZE": "0"})


def test_every_queue_gets_the_quorum_size_only_when_it_is_set() -> None:
    assert Topology("p").quorum == {"x-queue-type": "quorum"}
    assert Topology("p", 3).quorum == {"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}


def test_no_password_of_any_node_is_shown() -> None:
    value = "amqp://sink:pw-one@rabbit-1:5672/,amqp://sink:pw-two@rabbit-2:5672/"
    [variable] = [v for v in variables(Settings, "SINK_") if v.name == "SINK_AMQP_URL"]
    shown = masked(variable, value)
    assert "pw-" not in shown and shown.count("sink:***@") == 2
    assert redact("amqp://sink:pw@rabbit-1:5672/") == "amqp://sink:***@rabbit-1:5672/"


async def test_connect_any_skips_a_dead_node_and_takes_the_next(amqp_url: str) -> None:
    connection = await connect_any([DEAD, amqp_url], per_node=5, reconnect_interval=1)
    try:
        assert connection.node == node_of(amqp_url)
    finally:
        await connection.close()


async def test_connect_any_takes_the_first_of_two_live_nodes(
    relays: tuple[Relay, Relay],
) -> None:
    first, second = relays
    connection = await connect_any([first.url, second.url], per_node=5, reconnect_interval=1)
    try:
        assert connection.node == node_of(first.url)
    finally:
        await connection.close()


async def test_connect_any_with_no_node_answering_raises() -> None:
    with pytest.raises(CONNECT_ERRORS):
        await connect_any(
            [DEAD, "amqp://guest:guest@127.0.0.1:2/"], per_node=2, reconnect_interval=1
        )


async def test_a_publisher_whose_node_dies_fails_over_to_the_next_and_publishes_there(
    settings: Settings, relays: tuple[Relay, Relay]
) -> None:
    first, second = relays
    publisher = Publisher([first.url, second.url], Topology(settings.topology_prefix), 5.0)
    await publisher.start()
    try:
        assert publisher.ready
        await publisher.publish("muc:create", "before", b"{}")
        await first.cut()  # the node dies: its URL refuses from now on

        async def published() -> bool:
            try:
                await publisher.publish("muc:create", "after", b"{}")
            except PublishError:  # not failed over yet: the ingress would spool this
                return False
            return True

        await until(published, 20, what="a publish through the second node", interval=0.1)
        assert publisher._connection is not None
        assert publisher._connection.node == node_of(second.url)
        assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 2
    finally:
        await publisher.close()


async def test_a_worker_whose_node_dies_consumes_from_the_next(
    ingress: Any, start_worker: Any, recorder: Recorder, relays: tuple[Relay, Relay]
) -> None:
    first, second = relays
    worker = await start_worker(recorder.handler("tests.one"), amqp_url=f"{first.url},{second.url}")
    assert await post(ingress, signed(callback("XXXX#XXXX_before"))) == 200
    await recorder.wait_for(1)
    await first.cut()
    assert await post(ingress, signed(callback("XXXX#XXXX_after"))) == 200
    await recorder.wait_for(2, within=30)
    assert [event.call_id for event in recorder.of("tests.one")] == [
        "XXXX#XXXX_before",
        "XXXX#XXXX_after",
    ]
    assert worker._connection.node == node_of(second.url)
