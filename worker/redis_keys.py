"""Where the dedup store's keys live: their names, and in a Redis Cluster their hash tags.

One server and Sentinel keep the names they always had (an upgrade keeps every done mark):

- ``{prefix}:dedup:{handler}:{key}`` a handler's claim or done mark of callback ``key``;
- ``{prefix}:kind:{callId}`` the kind a callId is bound to; ``{prefix}:runs:{key}`` its runs.

In a Redis Cluster a Lua script may only touch keys of one hash slot, and a claim touches the
callId's kind binding and every mark and run counter of the callback. All of them therefore
carry the callId as their hash tag, right after the prefix (which may then hold no braces):
``{prefix}:{#<callId>}:dedup:{handler}:{key}``, ``{prefix}:{#<callId>}:kind``,
``{prefix}:{#<callId>}:runs:{key}``. The ``#`` keeps the tag from being empty (Redis hashes
the whole key for ``{}``, e.g. for a callId that starts with ``}``). The callId is not always
part of the dedup key (a long offline key is a digest), so a claim carries its tag
(:attr:`Claim.tag`) to where it is settled. Every per-callback key of a script is built here
(:meth:`Keys.mark`, or :meth:`Keys.of` for a new kind of key), never by hand.
"""

from __future__ import annotations

from redis.crc import key_slot

__all__ = ["Keys", "slot"]

#: Starts every hash tag: a tag that is empty (``{}``) Redis ignores, hashing the whole key.
TAG_START = "#"


def slot(key: str) -> int:
    """The cluster hash slot of ``key`` (for tests and the probe keys)."""
    return int(key_slot(key.encode()))


class Keys:
    """The key names of one sink (``prefix``), tagged for a Redis Cluster when ``cluster``."""

    def __init__(self, prefix: str, cluster: bool) -> None:
        self.prefix = prefix
        self.cluster = cluster

    def of(self, part: str, tag: str, *rest: str) -> str:
        """The key ``part`` of the callback whose callId is ``tag`` (``rest`` names it
        further): ``{prefix}:{part}:{rest…}``, or in a cluster ``{prefix}:{<tag>}:{part}…``."""
        tail = ":".join((part, *rest))
        if self.cluster:
            return f"{self.prefix}:{{{TAG_START}{tag}}}:{tail}"
        return f"{self.prefix}:{tail}"

    def mark(self, key: str, handler: str, tag: str | None = None) -> str:
        """``handler``'s claim or done mark of callback ``key`` (callId ``tag``; ``key``
        itself when not given: right for every callback but an offline message's)."""
        return self.of("dedup", key if tag is None else tag, handler, key)

    def kind(self, call_id: str) -> str:
        return self.of("kind", call_id) if self.cluster else f"{self.prefix}:kind:{call_id}"

    def runs(self, key: str, tag: str | None = None) -> str:
        return self.of("runs", key if tag is None else tag, key)

    def patterns(self) -> list[str]:
        """``SCAN`` patterns matching every key of the store (what :meth:`purge` deletes)."""
        if self.cluster:
            return [f"{self.prefix}:{{{TAG_START}*}}:{part}*" for part in ("dedup", "kind", "runs")]
        return [f"{self.prefix}:{part}:*" for part in ("dedup", "kind", "runs")]

    def probe(self, tag: str = "") -> str:
        """The key a health probe writes (one per primary in a cluster: ``tag`` picks it)."""
        return f"{self.prefix}:probe:{{{tag}}}" if self.cluster else f"{self.prefix}:probe"
