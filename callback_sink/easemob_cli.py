"""Sub-commands of ``callback-sink`` that deal with the REST API and the group directory.

``emulate`` runs the local Easemob stand-in; ``groups list`` and ``groups show GROUP_ID``
print the group directory kept by ``callback_sink.handlers.directory``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from dataclasses import replace
from typing import Any

import orjson

from callback_sink import backfill
from callback_sink.easemob.emulator import Emulator, serve
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.errors_cli import Failure
from callback_sink.service import stop_on_signals
from callback_sink.sink.devsecret import DEV_SECRET_FILE, read_dev_secret
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's sub-commands to the ``callback-sink`` parser."""
    p = sub.add_parser(
        "emulate",
        help="run a local stand-in for Easemob's group REST API that POSTs the matching "
        "signed callbacks to a sink (settings: SINK_EMULATOR_*)",
    )
    p.add_argument("--host", help="listen address (SINK_EMULATOR_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (SINK_EMULATOR_PORT, default 8090)")
    p.add_argument("--sink-url", help="where callbacks go ('none': nowhere) "
                   "(SINK_EMULATOR_SINK_URL; default: the local sink's callback URL, from "
                   "SINK_HOST, SINK_PORT and SINK_PATH)")  # fmt: skip
    p.add_argument("--callback-storage", action="store_true", default=None,
                   help="keep callbacks that failed twice and re-send them on request, like "
                   "Easemob's callback storage (SINK_EMULATOR_CALLBACK_STORAGE)")  # fmt: skip
    p.set_defaults(command=_emulate)
    backfill.register(sub)

    groups = sub.add_parser(
        "groups", help="read the group directory (callback_sink.handlers.directory)"
    )
    groups.set_defaults(command=lambda args, settings: _usage(groups))
    commands = groups.add_subparsers(title="groups commands")
    p = commands.add_parser("list", help="one line per group or chat room")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(command=_groups_list)
    p = commands.add_parser("show", help="everything the directory knows about one group")
    p.add_argument("group_id")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(command=_groups_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _emulate(args: argparse.Namespace, settings: Settings) -> int:
    emulator_settings = EmulatorSettings.from_env(sink=settings)
    overrides = {"host": args.host, "port": args.port, "sink_url": args.sink_url,
                 "callback_storage": args.callback_storage}  # fmt: skip
    chosen: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if chosen.get("sink_url", "").lower() == "none":
        chosen["sink_url"] = ""
    emulator_settings = replace(emulator_settings, **chosen)
    emulator_settings.check()
    emulator = Emulator(emulator_settings, callback_secret=_callback_secret(emulator_settings,
                                                                            settings))  # fmt: skip
    s = emulator_settings
    print(f"callback-sink emulate: REST API http://{s.host}:{s.port}/{s.org}/{s.app} "
          f"(client id {s.client_id}; secret: SINK_EMULATOR_CLIENT_SECRET)\n"
          f"callback-sink emulate: callbacks to {s.sink_url or 'nowhere (kept in memory)'}"
          + ("; callback storage on" if s.callback_storage else ""), flush=True)  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(emulator, stop)

    asyncio.run(main())
    return 0


def _callback_secret(emulator: EmulatorSettings, settings: Settings) -> str:
    """The secret callbacks are signed with: the emulator's own, else the sink's first,
    else the development secret ``callback-sink run`` created."""
    if emulator.callback_secret:
        return emulator.callback_secret
    if settings.secrets:
        return settings.secrets[0]
    for appkey, secrets in settings.apps:  # SINK_APPS: the emulated app's own secret
        if appkey == emulator.appkey:
            return secrets[0]
    dev = read_dev_secret()
    if dev:
        return dev
    if not emulator.sink_url:
        return "emulator"
    raise ConfigError(
        "no callback secret: set SINK_EMULATOR_CALLBACK_SECRET or SINK_SECRETS, or run "
        f"`callback-sink run` once in this directory to create {DEV_SECRET_FILE}"
    )


def _groups_list(args: argparse.Namespace, settings: Settings) -> int:
    from callback_sink.handlers.directory import open_directory

    async def main() -> int:
        async with open_directory(create=False) as directory:
            views = await directory.groups()
        if args.json:
            for view in views:
                sys.stdout.write(orjson.dumps(view.as_dict()).decode() + "\n")
            return 0
        print(f"{'GROUP ID':<20} {'TYPE':<5} {'OWNER':<16} {'MEMBERS':>7}  {'STATE':<9} NAME")
        for v in views:
            count = len(v.members) + (v.owner is not None)
            state = "destroyed" if v.destroyed else "active"
            print(f"{v.group_id:<20} {'room' if v.is_chatroom else 'group':<5} "
                  f"{v.owner or '?':<16} {count:>7}  {state:<9} {v.name or ''}")  # fmt: skip
        print(f"{len(views)} group(s)")
        return 0

    return asyncio.run(main())


def _groups_show(args: argparse.Namespace, settings: Settings) -> int:
    from callback_sink.handlers.directory import open_directory

    async def main() -> int:
        async with open_directory(create=False) as directory:
            view = await directory.group(args.group_id)
        if view is None:
            raise Failure(f"no group {args.group_id} in the directory (SINK_DIRECTORY_URL)")
        if args.json:
            sys.stdout.write(orjson.dumps(view.as_dict(), option=orjson.OPT_INDENT_2).decode())
            sys.stdout.write("\n")
            return 0
        print(f"{'chat room' if view.is_chatroom else 'group'} {view.group_id}"
              f"{' (destroyed)' if view.destroyed else ''}")  # fmt: skip
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        # Easemob lifts a timed mute silently when it runs out: show the ones still in force.
        mutes = [f"{m.user} until {_when(m.expire)}" for m in view.muted(now)]
        lines = [
            ("name", view.name),
            ("description", view.description),
            ("owner", view.owner),
            (f"admins ({len(view.admins)})", ", ".join(view.admins)),
            (f"members ({len(view.members)})", ", ".join(view.members)),
            (f"muted ({len(mutes)})", ", ".join(mutes)),
            ("whole group muted", _yes(view.muted_all)),
            (f"blocked ({len(view.blocked)})", ", ".join(view.blocked)),
            (f"allowed ({len(view.allowed)})", ", ".join(view.allowed)),
            ("public", _yes(view.public)),
            ("membersonly", _yes(view.membersonly)),
            ("allowinvites", _yes(view.allowinvites)),
            ("maxusers", view.maxusers),
            ("updated", _when(view.updated_at)),
        ]
        for label, value in lines:
            print(f"  {label + ':':<22}{'-' if value is None or value == '' else value}")
        return 0

    return asyncio.run(main())


def _yes(value: bool | None) -> str | None:
    return None if value is None else ("yes" if value else "no")


def _when(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
