"""Sentinel and Cluster URLs for SINK_DEDUP_URL, the keys' hash tags, and SINK_DEDUP_WAIT.

The fault scenarios with real Sentinel groups and Clusters are in tests/faults
(test_redis_sentinel.py, test_redis_cluster.py); these are fast and need at most the shared
Redis (a primary without replicas: every WAIT for one comes back short).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from callback_sink.sink.errors import ConfigError
from callback_sink.sink.events import DIGEST_KEY_PREFIX
from callback_sink.sink.redis_client import connect, first_host, parse
from callback_sink.sink.replay_window import is_shared
from callback_sink.sink.settings import Settings
from callback_sink.worker.dedup import Claim, ClaimRequest, State
from callback_sink.worker.redis_keys import Keys, slot
from callback_sink.worker.redis_store import RedisStore
from callback_sink.worker.replica_wait import ReplicaWait

SENTINEL = "redis+sentinel://app:s3cret@s1:26379,s2:26380,s3/mymaster/2"


def test_a_sentinel_url_names_its_sentinels_service_db_and_the_servers_password() -> None:
    target = parse(SENTINEL + "?sentinel_password=watch")
    assert target.topology == "sentinel"
    assert target.nodes == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (target.service, target.db) == ("mymaster", 2)
    assert (target.username, target.password) == ("app", "s3cret")
    assert target.sentinel_password == "watch" and not target.tls
    assert "s3cret" not in repr(target) and "watch" not in repr(target)


def test_a_cluster_url_names_its_seed_nodes_and_rediss_turns_tls_on() -> None:
    target = parse("rediss+cluster://:pw@c1:7000,c2:7001,[::1]:7002")
    assert target.topology == "cluster" and target.tls
    assert target.nodes == (("c1", 7000), ("c2", 7001), ("::1", 7002))
    assert target.password == "pw" and target.username is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379,s2:26379",  # no service
        "redis+sentinel://s1:26379/mymaster/zero",
        "redis+sentinel://s1:26379/mymaster/0/extra",
        "redis+sentinel://s1:port/mymaster",
        "redis+sentinel://s1:26379,,s2:1/mymaster",
        "redis+sentinel://s1:26379/mymaster?timeout=3",
        "redis+cluster://c1:7000,c2:70000",
        "redis+cluster://c1:7000/1",  # a cluster has db 0 only
        "redis+cluster://c1:7000?sentinel_password=x",
        "redis+sentinels://s1/mymaster",  # a typo of the scheme
    ],
)
def test_a_bad_sentinel_or_cluster_url_stops_start_up_naming_sink_dedup_url(url: str) -> None:
    with pytest.raises(ConfigError, match="SINK_DEDUP_URL"):
        Settings.from_env({"SINK_DEDUP_URL": url})


def test_settings_accept_sentinel_and_cluster_urls_and_treat_them_as_shared() -> None:
    for url in (SENTINEL, "redis+cluster://c1:7000,c2:7001", "rediss+cluster://c1:7000/0"):
        assert Settings.from_env({"SINK_DEDUP_URL": url}).dedup_url == url
        assert is_shared(url)
    assert first_host(SENTINEL) == "redis+sentinel://app:s3cret@s1:26379/mymaster/2"


def test_a_cluster_prefix_may_not_hold_braces_its_hash_tags_follow_it() -> None:
    with pytest.raises(ConfigError, match="SINK_TOPOLOGY_PREFIX"):
        Settings.from_env({"SINK_DEDUP_URL": "redis+cluster://c1:7000",
                           "SINK_TOPOLOGY_PREFIX": "a{b}"})  # fmt: skip


async def test_connect_builds_a_sentinel_managed_or_a_cluster_client_without_connecting() -> None:
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import SentinelConnectionPool

    sentinel = connect(SENTINEL, socket_timeout=1)
    cluster = connect("redis+cluster://127.0.0.1:1", socket_timeout=1)
    try:
        assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
        assert sentinel.connection_pool.service_name == "mymaster"
        assert isinstance(cluster, RedisCluster)
    finally:
        await sentinel.aclose()
        await cluster.aclose()


def test_one_server_and_sentinel_keep_the_key_names_an_upgrade_relies_on() -> None:
    keys = Keys("p", cluster=False)
    assert keys.mark("cid|bob", "h", "cid") == "p:dedup:h:cid|bob"
    assert (keys.kind("cid"), keys.runs("cid|bob", "cid")) == ("p:kind:cid", "p:runs:cid|bob")
    assert keys.probe() == "p:probe"


CALL_IDS = ["cid", "", "{", "}", "a}b{c", "{x}", "ünï", "x" * 300]


@pytest.mark.parametrize("call_id", CALL_IDS)
def test_every_key_of_a_callback_shares_one_cluster_slot(call_id: str) -> None:
    keys = Keys("sink-1", cluster=True)
    for key in (call_id, f"{call_id}|bob", DIGEST_KEY_PREFIX + "0" * 32):
        touched = [keys.kind(call_id), keys.runs(key, call_id), keys.of("crash", call_id),
                   *(keys.mark(key, h, call_id) for h in ("a", "b{", "}c"))]  # fmt: skip
        assert len({slot(k) for k in touched}) == 1, touched


class Recorder:
    """Stands in for the store's scripts and batches: records the keys of each call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        self.calls.append(keys)
        if len(keys) > 1 and ":kind" in keys[0]:  # the claim: bound kind, runs, all claimed
            return [args[0].encode(), 1, *([b"claimed"] * (len(keys) - 2))]
        return 1

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        self.calls.append(keys)
        return [1] * len(keys)


@pytest.fixture
async def cluster_store() -> AsyncIterator[tuple[RedisStore, Recorder]]:
    store = RedisStore("redis+cluster://127.0.0.1:1", "sink-1")  # never connects here
    recorder = Recorder()
    for name in ("_batch", "_settle"):
        setattr(store, name, recorder)
    for name in ("_renew", "_release"):
        setattr(store, name, recorder)
    yield store, recorder
    await store.close()


async def test_each_script_of_an_offline_callback_touches_one_slot(
    cluster_store: tuple[RedisStore, Recorder],
) -> None:
    store, recorder = cluster_store
    key = DIGEST_KEY_PREFIX + "f" * 32  # a long offline key: its digest holds no callId
    ask = ClaimRequest(key, "cid-9", "offline:chat", ["a", "b"], 5, 60, 3)
    claims = await store.claim_all(ask)
    assert all(c.state is State.CLAIMED and c.tag == "cid-9" for c in claims.claims)
    claim = claims.claims[0]
    await store.renew([((key, "a"), claim)], 5)
    await store.done(key, "a", claim, 60)
    await store.release(key, "b", claims.claims[1])
    slots = {slot(k) for keys in recorder.calls for k in keys}
    assert len(recorder.calls) == 4 and slots == {slot("{#cid-9}")}


async def test_a_wait_no_replica_answers_logs_dedup_wait_short_and_counts_it(
    redis_url: str, prefix: str
) -> None:
    store = RedisStore(redis_url, prefix, ReplicaWait(replicas=1, timeout_ms=20))
    name = "callback_sink_dedup_wait_short_total"
    before = REGISTRY.get_sample_value(name) or 0.0
    try:
        ask = ClaimRequest("call-w", "call-w", "chat:chat", ["h"], 5, 60, 3)
        (claim,) = (await store.claim_all(ask)).claims
        with capture_logs() as logs:
            assert await store.done("call-w", "h", claim, 60)
        assert (await store.claim_all(ask)).claims == (Claim(State.DONE),)
    finally:
        await store.purge()
        await store.close()
    (line,) = [line for line in logs if line["event"] == "dedup.wait_short"]
    assert line["log_level"] == "warning"
    assert (line["acked"], line["wanted"], line["timeout_ms"]) == (0, 1, 20)
    assert REGISTRY.get_sample_value(name) == before + 1


async def test_without_sink_dedup_wait_done_marks_send_no_wait(redis_url: str, prefix: str) -> None:
    store = RedisStore(redis_url, prefix, ReplicaWait(replicas=0))
    before = REGISTRY.get_sample_value("callback_sink_dedup_waits_total") or 0.0
    try:
        ask = ClaimRequest("call-n", "call-n", "chat:chat", ["h"], 5, 60, 3)
        (claim,) = (await store.claim_all(ask)).claims
        assert await store.done("call-n", "h", claim, 60)
    finally:
        await store.purge()
        await store.close()
    assert (REGISTRY.get_sample_value("callback_sink_dedup_waits_total") or 0.0) == before


def test_the_wait_settings_are_declared_bounded_and_off_by_default() -> None:
    settings = Settings.from_env({})
    assert (settings.dedup_wait, settings.dedup_wait_timeout_ms) == (0, 100)
    env = {"SINK_DEDUP_WAIT": "1", "SINK_DEDUP_WAIT_TIMEOUT_MS": "250"}
    assert ReplicaWait.of(Settings.from_env(env)) == ReplicaWait(1, 250)
    with pytest.raises(ConfigError, match="SINK_DEDUP_WAIT_TIMEOUT_MS"):
        Settings.from_env({"SINK_DEDUP_WAIT_TIMEOUT_MS": "0"})
