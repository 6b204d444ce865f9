"""``--help`` for every command: options with their defaults, then the ``SINK_*`` variables.

:func:`document` walks the finished parser, so commands added anywhere (``cli.py``,
``easemob_cli.py``, …) get the same treatment without each knowing about it.
"""

from __future__ import annotations

import argparse

from callback_sink import environment

DEBUG_HELP = "on a failure, show the traceback instead of one line"


class Formatter(argparse.HelpFormatter):
    """Shows ``(default: …)`` after an option's help when there is a default worth saying
    (not None, not False, and not already in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return action.help
        return f"{text} (default: %(default)s)"


class CommandFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    """A command's help: keeps the layout of the environment epilog."""


def document(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give ``parser`` and each sub-command the formatter, the environment epilog and a
    ``--debug`` option (also accepted after the command name)."""
    parser.formatter_class = CommandFormatter if path else Formatter
    if path:
        parser.epilog = environment.epilog(path)
        if "--debug" not in parser._option_string_actions:
            parser.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
            )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                document(sub, f"{path} {name}".strip())
