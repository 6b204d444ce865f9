"""``callback-sink dlq list|show|replay|purge``: look at and act on the dead-letter queue.

``list`` and ``show`` change no dead letter: they stream from the queue (one message in
memory at a time, at most ``--limit`` held unacknowledged on the broker), every dead letter
stays where it was, and two looks print the same thing (the broker's own delivery count,
which any read of a quorum queue bumps, is left out; see :mod:`callback_sink.worker.dlq`).
``show`` prints a readable block per letter (its headers, a traceback indented, then the
callback) or, with ``--json``, one JSON object per line.

``replay`` and ``purge`` scan the same way and act on the matching ones only. ``replay`` acks
a dead letter only after its copy was confirmed, so Ctrl-C loses nothing, and logs one
``dlq.replayed`` line per callback put back, with its ``call_id`` (``callback-sink trace``
reads it).
An unknown prefix or an unreachable broker is one line and exit 1 (see errors_cli).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TextIO

import orjson

from callback_sink.errors_cli import Failure
from callback_sink.sink import logs
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import amqp_context
from callback_sink.sink.topology import Topology
from callback_sink.worker.dlq import DeadLetter, DeadLetters, Selection, as_dict, render

log = logs.get("dlq")

#: Dead letters ``list`` and ``show`` print unless told otherwise: a screenful, and all
#: that is held unacknowledged on the broker while they are printed.
DEFAULT_LIMIT = 50
#: How often the progress line of ``replay`` / ``purge`` is redrawn, seconds.
PROGRESS_EVERY = 0.2

Command = Callable[[argparse.Namespace, Settings], int]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlq`` and its verbs to the ``callback-sink`` parser."""
    dlq = sub.add_parser("dlq", help="look at, replay or purge dead letters")
    verbs = dlq.add_subparsers(title="dlq commands", required=True)
    p = verbs.add_parser(
        "list", help="one line per dead letter, oldest first: call id, event, handler, error"
    )
    _selection(p, required=False)
    p.add_argument("--limit", type=_count, default=DEFAULT_LIMIT, help="show at most this many")
    p.add_argument("--json", action="store_true", help="one JSON object per line, with the body")
    p.set_defaults(command=_list)
    p = verbs.add_parser("show", help="a dead letter's failure headers and whole callback")
    p.add_argument("call_id")
    p.add_argument("--limit", type=_count, default=DEFAULT_LIMIT,
                   help="show at most this many dead letters with this call id")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(command=_show)
    for verb, command, what in (
        ("replay", _replay, "put dead letters back into the work queue; only the "
         "handlers that failed run again"),
        ("purge", _purge, "delete dead letters for good (needs --yes)"),
    ):  # fmt: skip
        p = verbs.add_parser(verb, help=what)
        _selection(p, required=True)
        p.add_argument("--limit", type=_count, help=f"{verb} at most this many (default: all)")
        if verb == "purge":
            p.add_argument("--yes", action="store_true", help="confirm the deletion")
        p.set_defaults(command=command)


def _selection(p: argparse.ArgumentParser, *, required: bool) -> None:
    if required:
        which = p.add_argument_group("which dead letters (at least one)")
        which.add_argument("call_id", nargs="?", help="one callback, by call id")
        which.add_argument("--all", action="store_true", help="every dead letter")
    else:
        which = p.add_argument_group("which dead letters (default: all)")
    which.add_argument("--event", help="those of one event name, e.g. muc:kick")
    which.add_argument("--handler", help="those whose failed handlers include this one")


def _count(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _select(args: argparse.Namespace) -> Selection:
    return Selection(*(getattr(args, k, None) for k in ("call_id", "event", "handler")))


def _open(settings: Settings, use: Callable[[DeadLetters], Awaitable[int]]) -> int:
    """Open the dead-letter queue of ``settings``, run ``use`` on it, close it (every
    message not acked goes back)."""

    async def run() -> int:
        topology = Topology(settings.topology_prefix)
        async with DeadLetters.open(settings.amqp_url, topology, amqp_context(settings)) as q:
            return await use(q)

    return asyncio.run(run())


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def use(q: DeadLetters) -> int:
        shown = await _print(q.letters(_select(args), limit=args.limit), args.json, table=True)
        if not args.json:
            whole = shown == q.depth
            print(f"{shown} dead letter(s)" if whole else f"{shown} of {q.depth} dead letter(s) "
                  "shown (--limit, --event, --handler)")  # fmt: skip
        return 0

    return _open(settings, use)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def use(q: DeadLetters) -> int:
        found = await _print(q.letters(_select(args), limit=args.limit), args.json, table=False)
        if not found:
            raise Failure(f"no dead letter with call id {args.call_id} among {q.depth}")
        return 0

    return _open(settings, use)


async def _print(letters: AsyncIterator[DeadLetter], json: bool, *, table: bool) -> int:
    count = 0
    rows: list[tuple[str, ...]] = []
    async for d in letters:
        if json:
            sys.stdout.write(orjson.dumps(as_dict(d)).decode() + "\n")
        elif table:  # printed once all are read: each column as wide as its longest value
            rows.append((d.call_id, d.event_name, d.handlers or "-", str(d.attempts), d.age(),
                         f"{d.reason}: {d.error}"))  # fmt: skip
        else:
            print(("\n" if count else "") + render(d))
        count += 1
    if rows:
        rows.insert(0, ("CALL ID", "EVENT", "HANDLER", "ATT", "AGE", "ERROR"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for call_id, event, handlers, attempts, age, error in rows:
            print(f"{call_id:{widths[0]}} {event:{widths[1]}} {handlers:{widths[2]}} "
                  f"{attempts:>3} {age:>5}  {error}"[:400])  # fmt: skip
    return count


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    _require_selection(args)

    async def use(q: DeadLetters) -> int:
        progress, done = _Progress("replay", q.depth), 0
        try:
            async for d in q.replay(_select(args), limit=args.limit, progress=progress):
                progress.clear()
                log.info("dlq.replayed", call_id=d.call_id, event_name=d.event_name,
                         handlers=d.handlers.split(","), replay_of=d.reason)  # fmt: skip
                done += 1
        finally:
            progress.clear()
        print(f"{done} dead letter(s) replayed")
        return 0

    return _open(settings, use)


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    _require_selection(args)
    if not args.yes:
        raise Failure("dlq purge deletes dead letters for good: add --yes to confirm")

    async def use(q: DeadLetters) -> int:
        progress, done = _Progress("purge", q.depth), 0
        try:
            async for _ in q.purge(_select(args), limit=args.limit, progress=progress):
                done += 1
        finally:
            progress.clear()
        print(f"{done} dead letter(s) purged")
        return 0

    return _open(settings, use)


def _require_selection(args: argparse.Namespace) -> None:
    if not (args.all or args.call_id or args.event or args.handler):
        raise Failure("say which dead letters: CALL_ID, --all, --event or --handler")


class _Progress:
    """``dlq replay: 1200/20000 scanned, 300 matched`` redrawn on stderr, only on a terminal."""

    def __init__(self, verb: str, total: int, stream: TextIO | None = None) -> None:
        self.verb, self.total, self.stream = verb, total, stream or sys.stderr
        self._shown = False
        self._last = 0.0

    def __call__(self, scanned: int, matched: int) -> None:
        now = time.monotonic()
        if not self.stream.isatty() or now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        self.stream.write(f"\rdlq {self.verb}: {scanned}/{self.total} scanned, {matched} matched")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
