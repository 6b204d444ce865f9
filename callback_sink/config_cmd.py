"""``callback-sink config``: the effective settings, as every other command would read them.

Each ``SINK_*`` variable with its value (secrets hidden, URLs without their password) and
where the value came from (``env`` or ``default``). Reading them is the validation: a bad
value is one line naming the variable and exit code 2, exactly as at a process's start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Any

import orjson

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.environment import SOURCES, masked, variables
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.sink.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config`` to the ``callback-sink`` parser."""
    p = sub.add_parser(
        "config",
        help="print the effective settings (secrets masked); exit 2 naming the first bad one",
    )
    p.add_argument("--json", action="store_true", help="one JSON object {variable: value}")
    p.set_defaults(command=_config)


def effective(settings: Settings) -> list[tuple[str, str, str]]:
    """``(variable, shown value, source)`` for every variable, in the settings' order."""
    loaded: dict[type[Any], Any] = {
        Settings: settings,
        DirectorySettings: DirectorySettings.from_env(),
        EasemobSettings: EasemobSettings.from_env(),
        EmulatorSettings: EmulatorSettings.from_env(),
    }
    rows = []
    for cls, prefix in SOURCES:
        values = {f.name: getattr(loaded[cls], f.name) for f in fields(cls)}
        for v in variables(cls, prefix):
            source = "env" if os.environ.get(v.name, "").strip() else "default"
            if source == "default" and os.environ.get(f"{v.name}_FILE", "").strip():
                source = "file"  # read from {VAR}_FILE (a secret kept out of the environment)
            if not v.field:  # a stand-in like SINK_SECRETS_FILE: show only when set
                if source == "env":
                    rows.append((v.name, os.environ[v.name], source))
                continue
            rows.append((v.name, masked(v, values[v.field]), source))
    return rows


def _config(args: argparse.Namespace, settings: Settings) -> int:
    rows = effective(settings)
    if args.json:
        sys.stdout.write(orjson.dumps({name: value for name, value, _ in rows}).decode() + "\n")
        return 0
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value}  [{source}]")
    return 0
