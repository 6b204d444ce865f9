"""The one place a Redis client for ``SINK_DEDUP_URL`` is made: one server, Sentinel or Cluster.

Every process that talks to the dedup store (the worker's marks, the shared REST rate limiter,
``backfill``'s and the ingress's replay-window exemptions) calls :func:`connect`, so the three
topologies are accepted everywhere alike:

- ``redis://[user:pass@]host:port/db``, ``rediss://…``, ``unix:///path?db=n``: one server.
- ``redis+sentinel://[user:pass@]host1:26379,host2:26379,…/service/db`` (``rediss+sentinel``:
  TLS to the servers and the sentinels): the sentinels are asked where ``service``'s primary
  is; after a failover the client's connection pool asks again at the first connection error
  (or a ``READONLY`` answer from a demoted primary), so a worker follows the new primary
  without a restart. ``user:pass`` is the servers' password; ``?sentinel_password=…`` (and
  ``sentinel_username``) is the sentinels' own, when they require one.
- ``redis+cluster://[user:pass@]host1:7000,host2:7001,…`` (``rediss+cluster``): any reachable
  nodes; the client learns the slot map from them, follows ``MOVED`` and refreshes the map
  when a primary fails. Cluster has no databases: a ``/db`` other than ``/0`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from callback_sink.sink.errors import ConfigError

if TYPE_CHECKING:  # the settings parse URLs in every process; only users load redis-py
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    Client = aioredis.Redis | RedisCluster

__all__ = ["SCHEMES", "Target", "connect", "first_host", "is_cluster", "parse"]

#: Every scheme SINK_DEDUP_URL may use for Redis, by topology.
SINGLE = ("redis://", "rediss://", "unix://")
SENTINEL = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER = ("redis+cluster://", "rediss+cluster://")
SCHEMES = (*SINGLE, *SENTINEL, *CLUSTER)
#: Query parameters a Sentinel / Cluster URL may carry.
_OPTIONS = {"sentinel_password", "sentinel_username"}


@dataclass(frozen=True)
class Target:
    """What a Redis URL names: its topology and where to connect."""

    #: ``single``, ``sentinel`` or ``cluster``.
    topology: str
    url: str = field(repr=False)
    #: (host, port) of each sentinel or cluster seed node (empty for one server).
    nodes: tuple[tuple[str, int], ...] = ()
    #: The Sentinel service (the ``master`` name the sentinels monitor).
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def _bad(url: str, why: str) -> ConfigError:
    shown = url.split("://", 1)[0]
    return ConfigError(f"SINK_DEDUP_URL ({shown}://…) is not a valid Redis URL: {why}")


def parse(url: str) -> Target:
    """Read a Redis ``SINK_DEDUP_URL``; :class:`ConfigError` naming the variable when bad."""
    if url.startswith(SINGLE):
        return Target("single", url)
    if not url.startswith((*SENTINEL, *CLUSTER)):
        raise _bad(url, f"the scheme must be one of {', '.join(SCHEMES)}")
    sentinel = url.startswith(SENTINEL)
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(url, item, 26379 if sentinel else 6379) for item in hostlist.split(","))
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if unknown := set(query) - _OPTIONS:
        raise _bad(url, f"unknown option(s) {', '.join(sorted(unknown))}")
    if not sentinel and query:
        raise _bad(url, "sentinel_* options apply to redis+sentinel:// only")
    path = [unquote(p) for p in parts.path.split("/") if p]
    service, db = "", 0
    if sentinel:
        if not path or len(path) > 2:
            raise _bad(url, "the path must be /<service>[/<db>] (the sentinels' master name)")
        service, db = path[0], _db(url, path[1] if len(path) == 2 else "0")
    elif path and (len(path) > 1 or _db(url, path[0]) != 0):
        raise _bad(url, "Redis Cluster has database 0 only: no path, or /0")
    return Target(
        "sentinel" if sentinel else "cluster", url, nodes, service, db,
        tls=url.startswith("rediss+"),
        username=unquote(username) or None, password=unquote(password) or None,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
    )  # fmt: skip


def _node(url: str, item: str, default_port: int) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = port, str(default_port)
    host = host.strip("[]")  # an IPv6 address in brackets
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(url, f"{item!r} is not host:port")
    return host, int(port)


def _db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"database {text!r} is not a number")
    return int(text)


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER)


def first_host(url: str) -> str:
    """``url`` with only its first host: a URL parser that knows one host a URL (yarl) can
    check the rest of a Sentinel / Cluster URL (:func:`parse` checked every host)."""
    if not url.startswith((*SENTINEL, *CLUSTER)):
        return url
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    return parts._replace(netloc=userinfo + at + hostlist.split(",")[0]).geturl()


def connect(url: str, **options: Any) -> Client:
    """A client of the Redis ``url`` names; ``options`` (``socket_timeout``,
    ``health_check_interval``, …) apply to every connection to a server. For a Cluster the
    answer is a :class:`RedisCluster` (keys a script touches must share one slot)."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    target = parse(url)
    if target.topology == "single":
        return aioredis.Redis.from_url(url, **options)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        auth["ssl"] = True
    if target.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, **auth, **options)
    sentinel_kwargs = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl_"))}
    sentinel_kwargs.update(username=target.sentinel_username, password=target.sentinel_password)
    if target.tls:
        sentinel_kwargs["ssl"] = True
    sentinels = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinels.master_for(target.service, db=target.db, **auth, **options)
    return client
