"""``docs/reference/cli.md``: every command and option of ``callback-sink``, from its parser.

The page walks the same :class:`argparse.ArgumentParser` that ``callback-sink --help`` prints
(``callback_sink.cli``), so a command or an option added there appears here at the next
``python -m callback_sink.docs_gen``; hidden options (``help=SUPPRESS``) stay hidden.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from callback_sink import cli, environment
from callback_sink.docs_gen.markdown import HEADER, cell, code
from callback_sink.sink.setting import KINDS


def markdown() -> str:
    parser = cli._parser()
    out = [
        "# Command-line reference",
        "",
        HEADER,
        "",
        f"`{parser.prog}` {parser.description}",
        "",
        "Every command accepts `--help` (its options, defaults and environment variables) and "
        "`--debug` (a traceback instead of a one-line error). The overview of what each "
        "command is for is [Commands](commands.md); the variables are in "
        "[the settings reference](settings.md).",
        "",
        "## `callback-sink`",
        "",
        *_options(parser),
    ]
    for path, help_text, sub in _commands(parser):
        out += ["", f"## `{parser.prog} {path}`", "", help_text[:1].upper() + help_text[1:]]
        if sub.description:
            out += ["", sub.description]
        if _subcommands(sub):
            out += ["", "Sub-commands: " + ", ".join(f"`{n}`" for n, _, _ in _subcommands(sub))]
        out += ["", *_options(sub)]
        kinds = [k for k in KINDS if k in environment.kinds_of(path)]
        if kinds:
            read_by = ", ".join(f"`{k}`" for k in kinds)
            out += [
                "",
                f"Environment: the variables read by {read_by} in [the settings "
                "reference](settings.md) (`--help` lists them).",
            ]
    return "\n".join(out) + "\n"


def _subcommands(
    parser: argparse.ArgumentParser,
) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """The direct sub-commands of ``parser``: name, one-line help, parser."""
    found: list[tuple[str, str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            found += [(name, helps.get(name, ""), p) for name, p in action.choices.items()]
    return found


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """Every command below ``parser``, depth first: its path (``dlq list``), help, parser."""
    for name, help_text, sub in _subcommands(parser):
        path = f"{prefix} {name}".strip()
        yield path, help_text, sub
        yield from _commands(sub, path)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """A table of the arguments and options of ``parser`` (hidden ones left out)."""
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or (action.dest == "debug" and parser.epilog):
            continue  # --debug is on every command: said once, at the top
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        rows.append(f"| {_usage(action)} | {_default(action)} | {cell(action.help or '')} |")
    return rows if len(rows) > 2 else ["No options beyond `--help`."]


def _usage(action: argparse.Action) -> str:
    if not action.option_strings:
        return code(action.metavar if isinstance(action.metavar, str) else action.dest.upper())
    takes_value = action.nargs != 0
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return ", ".join(
        code(f"{flag} {metavar}" if takes_value else flag) for flag in action.option_strings
    )


def _default(action: argparse.Action) -> str:
    default = action.default
    if default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
        return ""
    return code(str(default))
