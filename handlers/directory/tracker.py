"""record(event): interpret → look up what the callback does not say → store.

Legacy callbacks carry neither the group's model fields nor a mute's expiry. When REST
credentials are configured, ``create`` and ``update`` fetch the group's details and
``add_mute`` fetches the mute list; what comes back is stored with the event's own
timestamp, so a late event never overwrites what a newer one stored. A user the mute list
leaves out is stored as not muted: Easemob ends a timed mute silently, so a look-up is the
only way a late ``add_mute`` learns its mute already expired. A group that no longer
exists (404) is simply not looked up; a throttled or unreachable API asks the worker to
retry the callback later.
"""

from __future__ import annotations

from typing import Any

from callback_sink.easemob.redis_limiter import limiter_for
from callback_sink.easemob.rest import GroupClient
from callback_sink.easemob.settings import EasemobSettings
from callback_sink.handlers.directory import facts as f
from callback_sink.handlers.directory.facts import Fact
from callback_sink.handlers.directory.interpret import affected_user, interpret
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.handlers.directory.store import Directory
from callback_sink.handlers.transactional import Inbox, Transaction
from callback_sink.sink import logs
from callback_sink.sink.errors import EasemobError, EasemobThrottled, EasemobUnreachable, Retry
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import redis_tls_kwargs

log = logs.get("handlers.directory")

#: The directory handler's identity (``@on(name=...)``), also its inbox rows' handler.
HANDLER = "handlers.directory.track_groups"
#: Legacy operations whose facts need a REST lookup.
LOOKUPS = frozenset({"create", "update", "add_mute"})
#: When the REST API is throttled or down, retry the callback after this many seconds.
LOOKUP_RETRY_DELAY = 5.0


class Tracker:
    def __init__(
        self, directory: Directory, client: GroupClient | None = None, inbox: Inbox | None = None
    ) -> None:
        self.directory = directory
        self.client = client
        #: On PostgreSQL: each callback's facts commit with the handler's inbox row, so a
        #: crash can neither lose them nor apply them twice (exactly-once in the directory).
        self.inbox = inbox

    @classmethod
    async def open(cls, settings: DirectorySettings, easemob: EasemobSettings) -> Tracker:
        directory = await Directory.open(settings)
        client = None
        if settings.fetch and easemob.configured:
            sink = Settings.from_env()  # every worker of the app shares one REST quota
            tls = redis_tls_kwargs(sink)
            limiter = limiter_for(easemob, sink.dedup_url, sink.topology_prefix, tls)
            client = GroupClient(easemob, limiter=limiter)
        inbox = None
        if directory.engine.dialect.name == "postgresql":
            sink = Settings.from_env()
            inbox = Inbox(directory.engine, sink.inbox_table, sink.dedup_ttl)
            await inbox.start()
        log.info("directory.opened", lookups=client is not None, inbox=inbox is not None)
        return cls(directory, client, inbox)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.inbox is not None:
            await self.inbox.close()
        await self.directory.close()

    async def record(self, event: Event) -> int:
        """Apply one callback; how many stored facts it changed."""
        found = interpret(event)
        if not found or event.group_id is None:  # nothing the directory keeps
            return 0
        if self.inbox is None:
            return await self._store(event, event.group_id, found, None)
        # A duplicate raises InboxDuplicate here, before any REST lookup.
        async with self.inbox.transaction(HANDLER, event.dedup_key) as tx:
            return await self._store(event, event.group_id, found, tx)

    async def _store(
        self, event: Event, group_id: str, found: list[Fact], tx: Transaction | None
    ) -> int:
        found = found + await self._lookup(event, group_id)
        changed = await self.directory.apply(
            group_id, found, timestamp=event.timestamp, call_id=event.call_id, conn=tx
        )
        log.debug("directory.applied", group_id=group_id, facts=len(found), changed=changed)
        return changed

    async def _lookup(self, event: Event, group_id: str) -> list[Fact]:
        if self.client is None or event.family != "muc" or event.is_chatroom:
            return []
        if event.operation not in LOOKUPS:
            return []
        try:
            if event.operation == "add_mute":
                return await self._expiry(group_id, affected_user(event))
            details = await self.client.group(group_id)
        except (EasemobThrottled, EasemobUnreachable) as exc:
            raise Retry(f"Easemob REST lookup failed: {exc}", delay=LOOKUP_RETRY_DELAY) from exc
        except EasemobError as exc:
            if exc.status == 404:  # destroyed since: its later `destroy` callback says so
                log.info("directory.lookup_skipped", group_id=group_id, reason=exc.error)
            else:
                log.warning("directory.lookup_failed", group_id=group_id, status=exc.status,
                            error=exc.error)  # fmt: skip
            return []
        values: dict[str, Any] = {name: getattr(details, name) for name in f.MODEL_FIELDS}
        return f.fields(values)

    async def _expiry(self, group_id: str, user: str | None) -> list[Fact]:
        """The mute's expiry, from the mute list; a user the list leaves out is not muted.

        Easemob lifts an expired mute without a callback, so when an ``add_mute`` is handled
        after its mute ran out (the worker was down longer than the mute), absence from the
        list is the only sign of it; absence also covers a mute lifted or a member gone
        since, whose own callbacks are newer and win anyway.
        """
        assert self.client is not None
        if user is None:
            return []
        for mute in await self.client.mutes(group_id):
            if mute.user == user:
                return [Fact(f.MUTE, user, value=mute.expire)]
        log.info("directory.mute_gone", group_id=group_id, user=user)
        return [Fact(f.MUTE, user, present=False)]
