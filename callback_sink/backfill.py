"""``callback-sink backfill``: get back the callbacks Easemob kept in its callback storage.

After an outage longer than the spool covers (or a ban after 90 failures in 30 s), Easemob's
paid callback storage (回调异常缓存) holds the callbacks that failed twice, for 3 days, in
10-minute buckets. ``backfill`` lists the buckets in a time range through the REST client
(``SINK_EASEMOB_*``: its token handling, pacing and 429 / 503 back-off) and asks Easemob to
re-send each one to ``--target``. Before asking for a bucket it opens, in the shared Redis
store (``SINK_DEDUP_URL``), an exemption from the ingress's replay window for that app and
bucket (:mod:`sink.replay_window`): the re-sent callbacks are old on purpose.

Running it twice is harmless: callbacks already handled are duplicates to the workers' dedup.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from callback_sink.easemob.redis_limiter import limiter_for
from callback_sink.easemob.settings import EasemobSettings
from callback_sink.easemob.storage import BUCKET, CallbackStorage, StoredBucket
from callback_sink.easemob.transport import Transport
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.redis_client import connect
from callback_sink.sink.replay_window import is_shared, open_exemption
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import redis_tls_kwargs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backfill",
        help="ask Easemob to re-send the callbacks its callback storage kept (after an "
        "outage or a ban) to a sink; settings: SINK_EASEMOB_*",
    )
    p.add_argument("--target", required=True, metavar="URL",
                   help="where Easemob re-sends them: the sink's callback URL")  # fmt: skip
    p.add_argument("--since", type=instant, metavar="ISO-8601",
                   help="only buckets that end after this time (no offset: UTC)")  # fmt: skip
    p.add_argument("--until", type=instant, metavar="ISO-8601",
                   help="only buckets that start before this time (no offset: UTC)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="only count the stored callbacks in range; re-send nothing")  # fmt: skip
    p.set_defaults(command=_backfill)


def instant(raw: str) -> dt.datetime:
    """An ISO-8601 time; without an offset it is UTC."""
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO-8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class BackfillReport:
    """What one run found and asked for."""

    buckets: int
    callbacks: int
    requested: int = 0
    refused: int = 0


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    easemob = EasemobSettings.from_env()
    if not easemob.configured:
        raise ConfigError(
            "backfill talks to Easemob's REST API: set SINK_EASEMOB_HOST, SINK_EASEMOB_ORG, "
            "SINK_EASEMOB_APP, SINK_EASEMOB_CLIENT_ID and SINK_EASEMOB_CLIENT_SECRET"
        )
    if not args.target.startswith(("http://", "https://")):
        raise ConfigError(f"--target {args.target!r} is not an http(s) URL")
    report = asyncio.run(backfill(easemob, settings, target=args.target, since=args.since,
                                  until=args.until, dry_run=args.dry_run))  # fmt: skip
    return 1 if report.refused else 0


async def backfill(
    easemob: EasemobSettings,
    settings: Settings,
    *,
    target: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
) -> BackfillReport:
    """List the stored buckets in ``[since, until)``; unless ``dry_run``, open each one's
    replay-window exemption and ask Easemob to re-send it to ``target``."""
    tls = redis_tls_kwargs(settings)
    limiter = limiter_for(easemob, settings.dedup_url, settings.topology_prefix, tls)
    async with Transport(easemob, limiter=limiter) as transport:
        storage = CallbackStorage(transport)
        buckets = [b for b in await storage.info() if _within(b, since, until)]
        found = BackfillReport(len(buckets), sum(b.size for b in buckets))
        span = f" from {buckets[0].date} to {buckets[-1].date} (UTC+8)" if buckets else ""
        if dry_run:
            print(f"{found.callbacks} stored callback(s) in {found.buckets} bucket(s){span}; "
                  "dry run: nothing re-sent", file=out)  # fmt: skip
            return found
        _warn_about_the_window(buckets, settings)
        return await _resend(storage, buckets, found, easemob, settings, target, out)


async def _resend(
    storage: CallbackStorage,
    buckets: list[StoredBucket],
    found: BackfillReport,
    easemob: EasemobSettings,
    settings: Settings,
    target: str,
    out: TextIO,
) -> BackfillReport:
    appkey = f"{easemob.org}#{easemob.app}"
    shared = is_shared(settings.dedup_url) and settings.max_age_s > 0
    redis = connect(settings.dedup_url, **redis_tls_kwargs(settings)) if shared else None
    progress = Progress(out, len(buckets))
    requested = refused = 0
    try:
        for bucket in buckets:
            if redis is not None:
                await open_exemption(redis, settings.topology_prefix, appkey, bucket.start_ms,
                                     settings.backfill_window_s)  # fmt: skip
            if await storage.retry(bucket.date, retry=bucket.retry, target_url=target):
                requested += bucket.size
            else:
                refused += 1
            progress.step(bucket, requested)
    finally:
        progress.done()
        if redis is not None:
            await redis.aclose()
    print(f"asked Easemob to re-send {requested} of {found.callbacks} stored callback(s) in "
          f"{found.buckets} bucket(s) to {target}"
          + (f"; {refused} bucket(s) refused" if refused else ""), file=out)  # fmt: skip
    return BackfillReport(found.buckets, found.callbacks, requested, refused)


def _within(bucket: StoredBucket, since: dt.datetime | None, until: dt.datetime | None) -> bool:
    start = bucket.start
    return (since is None or start + BUCKET > since) and (until is None or start < until)


def _warn_about_the_window(buckets: list[StoredBucket], settings: Settings) -> None:
    """Say so when the ingress will refuse some of what comes back: callbacks older than
    ``SINK_MAX_AGE_S`` need an exemption in a Redis store the ingress shares."""
    if not buckets or not settings.max_age_s or is_shared(settings.dedup_url):
        return
    oldest = buckets[0].start_ms / 1000 - BUCKET.total_seconds()
    if time.time() - oldest > settings.max_age_s:
        print("callback-sink backfill: some stored callbacks are older than SINK_MAX_AGE_S "
              f"({settings.max_age_s:g}s) and SINK_DEDUP_URL is not Redis, so no exemption "
              "can be opened: the ingress will refuse them. Share a Redis store "
              "(SINK_DEDUP_URL=redis://…) with the ingress, or run it with SINK_MAX_AGE_S=0 "
              "for the backfill.", file=sys.stderr)  # fmt: skip


class Progress:
    """One line rewritten in place on a terminal; nothing per bucket otherwise."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.count = 0
        self.live = out.isatty()

    def step(self, bucket: StoredBucket, requested: int) -> None:
        self.count += 1
        if self.live:
            self.out.write(f"\rbucket {self.count}/{self.total} ({bucket.date}): "
                           f"{requested} callback(s) requested")  # fmt: skip
            self.out.flush()

    def done(self) -> None:
        if self.live and self.count:
            self.out.write("\n")
            self.out.flush()
