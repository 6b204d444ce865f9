"""``callback-sink``: run the ingress, the worker, or both; sign and send test callbacks."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson

from callback_sink import scaffold, service
from callback_sink.easemob_cli import register as register_easemob_commands
from sink import logs
from sink.devsecret import DEV_SECRET_FILE, ensure_dev_secret, read_dev_secret
from sink.errors import ConfigError, SpoolError, StartupError
from sink.examples import load_examples, resign
from sink.settings import Settings
from sink.topology import Topology
from worker.dlq import DeadLetter, DeadLetters, render


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format, settings.log_level)
        result: int = args.command(args, settings)
        return result
    except ConfigError as exc:
        print(f"callback-sink: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"callback-sink: cannot start: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callback-sink",
        description="Durable receiver for Easemob / Agora Chat callbacks. "
        "Configured by SINK_* environment variables (see README).",
    )
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser(
        "ingress",
        help="run the HTTP ingress (POST /callbacks): N processes sharing the port, "
        "supervised by this one",
    )
    p.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="ingress processes (default: SINK_INGRESS_PROCESSES, else the usable CPUs)",
    )
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    p.set_defaults(command=_ingress)
    p = sub.add_parser("worker", help="run a worker consuming the queue")
    p.set_defaults(command=_worker)
    p = sub.add_parser(
        "run",
        help="run ingress and worker in one process (development); generates a "
        f"development secret in {DEV_SECRET_FILE} when none is configured",
    )
    p.set_defaults(command=_run)
    p = sub.add_parser(
        "sign",
        help="print a callback body stamped with the current time and a correct `security`",
    )
    p.add_argument("file", help="JSON file with the callback body ('-' for standard input)")
    p.add_argument("--secret", help="secret to sign with (default: the first configured one)")
    p.add_argument(
        "--keep-timestamp",
        action="store_true",
        help="sign the body's own timestamp instead of the current time (a sink refuses "
        "callbacks older than SINK_MAX_AGE_S)",
    )
    p.set_defaults(command=_sign)
    p = sub.add_parser(
        "send", help="post every example of the spec, re-signed and stamped now, to a sink"
    )
    p.add_argument("url", help="the sink's callback URL, e.g. http://127.0.0.1:8080/callbacks")
    p.add_argument("--secret", help="secret to sign with (default: the first configured one)")
    p.add_argument(
        "--keep-ids",
        action="store_true",
        help="send the examples' own callIds (by default each run makes them unique, "
        "so that a second run is not deduplicated away)",
    )
    p.set_defaults(command=_send)
    p = sub.add_parser(
        "init",
        help="write a ready handler package in a new folder NAME: entry point, an example "
        "handler, tests using callback_sink.testing, a README",
    )
    p.add_argument("name", help="the package's name, a Python identifier (e.g. acme_handlers)")
    p.set_defaults(command=_init)
    _dlq_parser(sub)
    register_easemob_commands(sub)
    return parser


def _dlq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="look at, replay or purge dead letters")
    verbs = dlq.add_subparsers(title="dlq commands", required=True)
    p = verbs.add_parser("list", help="one line per dead letter: call id, event, handler, error")
    p.set_defaults(command=_dlq_list)
    p = verbs.add_parser("show", help="a dead letter's failure headers and whole callback")
    p.add_argument("call_id")
    p.set_defaults(command=_dlq_show)
    for verb, command, what in (
        ("replay", _dlq_replay, "put dead letters back into the work queue; only the "
         "handlers that failed run again"),
        ("purge", _dlq_purge, "delete dead letters for good (needs --yes)"),
    ):  # fmt: skip
        p = verbs.add_parser(verb, help=what)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("call_id", nargs="?", help="one callback, by call id")
        which.add_argument("--all", action="store_true", help="every dead letter")
        which.add_argument("--event", help="those of one event name, e.g. muc:apply")
        which.add_argument("--handler", help="those whose failed handlers include this one")
        if verb == "purge":
            p.add_argument("--yes", action="store_true", help="confirm the deletion")
        p.set_defaults(command=command)


def _dead_letters(
    settings: Settings, action: Callable[[DeadLetters], Awaitable[list[DeadLetter]]]
) -> list[DeadLetter]:
    """Open the dead-letter queue, run ``action`` on it, close it (unreplayed letters return)."""

    async def run() -> list[DeadLetter]:
        async with DeadLetters.open(settings.amqp_url, Topology(settings.topology_prefix)) as q:
            return await action(q)

    return asyncio.run(run())


def _dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    letters = _dead_letters(settings, lambda q: q.letters())
    print(f"{'CALL ID':40} {'EVENT':24} {'HANDLER':32} {'ATT':>3} {'AGE':>5}  ERROR")
    for d in letters:
        print(f"{d.call_id:40} {d.event_name:24} {d.handlers or '-':32} {d.attempts:>3} "
              f"{d.age():>5}  {d.reason}: {d.error}"[:240])  # fmt: skip
    print(f"{len(letters)} dead letter(s)")
    return 0


def _dlq_show(args: argparse.Namespace, settings: Settings) -> int:
    found = [d for d in _dead_letters(settings, lambda q: q.letters()) if d.call_id == args.call_id]
    for letter in found:
        print(render(letter))
    if not found:
        print(f"no dead letter with call id {args.call_id}", file=sys.stderr)
    return 0 if found else 1


def _dlq_select(args: argparse.Namespace) -> dict[str, str | None]:
    return {"call_id": args.call_id, "event": args.event, "handler": args.handler}


def _dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    done = _dead_letters(settings, lambda q: q.replay(**_dlq_select(args)))
    for d in done:
        print(f"replayed {d.call_id} {d.event_name} ({d.handlers})")
    print(f"{len(done)} dead letter(s) replayed")
    return 0


def _dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        print("dlq purge deletes dead letters for good: add --yes to confirm", file=sys.stderr)
        return 2
    done = _dead_letters(settings, lambda q: q.purge(**_dlq_select(args)))
    print(f"{len(done)} dead letter(s) purged")
    return 0


def _ingress(args: argparse.Namespace, settings: Settings) -> int:
    if args.child is not None:
        child = functools.partial(service.run_ingress_child, index=args.child)
        return _spooling(lambda: service.serve(child, settings))
    processes = settings.ingress_processes if args.processes is None else args.processes
    if processes < 1:
        raise ConfigError("--processes must be at least 1")
    return _spooling(lambda: service.supervise(settings, processes))


def _spooling(run: Callable[[], int | None]) -> int:
    """Run an ingress; a spool it cannot use (read-only, locked) is one line and exit 1."""
    try:
        return run() or 0
    except SpoolError as exc:
        print(f"callback-sink: {exc}", file=sys.stderr)
        return 1


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    service.serve(service.run_worker, settings)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.secrets:
        settings = replace(settings, secrets=(ensure_dev_secret(),))
        print(f"callback-sink: no SINK_SECRETS set; using the development secret in "
              f"{DEV_SECRET_FILE.resolve()}: {settings.secrets[0]}", flush=True)  # fmt: skip
    print(f"callback-sink: callbacks URL http://{settings.host}:{settings.port}{settings.path}",
          flush=True)  # fmt: skip
    return _spooling(lambda: service.serve(service.run_all, settings))


def _secret(args: argparse.Namespace, settings: Settings) -> str:
    if args.secret:
        return str(args.secret)
    if settings.secrets:
        return settings.secrets[0]
    dev = read_dev_secret()
    if dev:
        return dev
    raise ConfigError("no secret: pass --secret or set SINK_SECRETS / SINK_SECRETS_FILE")


def _sign(args: argparse.Namespace, settings: Settings) -> int:
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    body = orjson.loads(raw)
    signed = resign(body, _secret(args, settings), now=not args.keep_timestamp)
    sys.stdout.write(orjson.dumps(signed).decode() + "\n")
    return 0


def _send(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(send_examples(args.url, _secret(args, settings), unique=not args.keep_ids))


async def send_examples(url: str, secret: str, *, unique: bool = True) -> int:
    """POST every spec example, re-signed and stamped with the current time (so a sink's
    maximum callback age never refuses it); one line per answer; 0 if all got 200."""
    run = uuid.uuid4().hex[:8]
    failed = 0
    examples = load_examples()
    async with aiohttp.ClientSession() as session:
        for index, example in enumerate(examples):
            call_id = f"{example.body['callId']}-{run}-{index}" if unique else None
            body = resign(example.body, secret, call_id=call_id)
            async with session.post(
                url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ) as response:
                text = (await response.text())[:200]
            ok = response.status == 200
            failed += not ok
            print(f"{response.status} {example.source} {body['callId']} {'' if ok else text}")
    print(f"sent {len(examples)}, accepted {len(examples) - failed}, refused {failed}")
    return 0 if failed == 0 else 1


def _init(args: argparse.Namespace, settings: Settings) -> int:
    try:
        target = scaffold.create(args.name, Path.cwd())
    except scaffold.ScaffoldError as exc:
        print(f"callback-sink init: {exc}", file=sys.stderr)
        return 1
    print(f"created {target}/: pip install -e './{args.name}[test]' && cd {args.name} && pytest")
    return 0
