"""``callback-sink``: run the ingress, the worker, or both; sign and send test callbacks."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson

from callback_sink import config_cmd, dlq_cli, scaffold, service, trace_cmd
from callback_sink.easemob_cli import register as register_easemob_commands
from callback_sink.errors_cli import Failure, reported
from callback_sink.helpformat import DEBUG_HELP, document
from callback_sink.sink import logs
from callback_sink.sink.devsecret import DEV_SECRET_FILE, ensure_dev_secret, read_dev_secret
from callback_sink.sink.errors import ConfigError, SpoolError
from callback_sink.sink.examples import load_examples, resign
from callback_sink.sink.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. An expected failure is one line on stderr and exit code 1 (2 for a
    bad setting), never a traceback unless ``--debug`` asks for it (see errors_cli)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2

    def run() -> int:
        settings = Settings.from_env()
        logs.configure(settings.log_format, settings.log_level)
        result: int = args.command(args, settings)
        return result

    return reported(run, debug=args.debug)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callback-sink",
        description="Durable receiver for Easemob / Agora Chat callbacks. "
        "Configured by SINK_* environment variables (see docs/reference/settings.md); "
        "`callback-sink config` shows their effective values.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
    dlq_cli.register(sub)
    trace_cmd.register(sub)
    config_cmd.register(sub)
    register_easemob_commands(sub)
    document(parser)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("callback-sink")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "(not installed)"


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
    # Notices for the person at the terminal go to stderr: stdout stays pure log lines.
    if not settings.secrets and not settings.apps:
        settings = replace(settings, secrets=(ensure_dev_secret(),))
        print(f"callback-sink: no SINK_SECRETS set; using the development secret in "
              f"{DEV_SECRET_FILE.resolve()}: {settings.secrets[0]}", file=sys.stderr)  # fmt: skip
    print(f"callback-sink: callbacks URL http://{settings.host}:{settings.port}{settings.path}",
          file=sys.stderr)  # fmt: skip
    code = _spooling(lambda: service.serve(service.run_all, settings))
    return code or service.check_stranded(settings.spool_dir)  # callbacks left in the spool: 3


def _secret(args: argparse.Namespace, settings: Settings) -> tuple[str, str]:
    """The secret to sign with, and where it came from (for messages: never the value)."""
    if args.secret:
        return str(args.secret), "the secret given with --secret"
    if settings.secrets:
        return settings.secrets[0], "the first secret of SINK_SECRETS / SINK_SECRETS_FILE"
    dev = read_dev_secret()
    if dev:
        return dev, f"the development secret in {DEV_SECRET_FILE} (SINK_SECRETS unset)"
    raise ConfigError("no secret: pass --secret or set SINK_SECRETS / SINK_SECRETS_FILE")


def _sign(args: argparse.Namespace, settings: Settings) -> int:
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise Failure(f"{args.file}: a callback is a JSON object, not {type(body).__name__}")
    for name in ("callId", "timestamp") if args.keep_timestamp else ("callId",):
        if name not in body:
            raise Failure(f"{args.file}: the callback has no {name!r} field")
    secret, origin = _secret(args, settings)
    if not args.secret:  # a secret the user did not name: say which (never its value)
        print(f"callback-sink sign: signed with {origin}", file=sys.stderr)
    signed = resign(body, secret, now=not args.keep_timestamp)
    sys.stdout.write(orjson.dumps(signed).decode() + "\n")
    return 0


def _send(args: argparse.Namespace, settings: Settings) -> int:
    secret, origin = _secret(args, settings)
    if not args.secret:  # a secret the user did not name: say which (never its value)
        print(f"callback-sink send: signed with {origin}", file=sys.stderr, flush=True)
    return asyncio.run(send_examples(args.url, secret, unique=not args.keep_ids, origin=origin))


async def send_examples(
    url: str, secret: str, *, unique: bool = True, origin: str = "the secret given"
) -> int:
    """POST every spec example, re-signed and stamped with the current time (so a sink's
    maximum callback age never refuses it); one line per answer; 0 if all got 200. When the
    sink answered 401, one more line (on stderr) says why and which secret was used
    (``origin``, never the secret itself)."""
    run = uuid.uuid4().hex[:8]
    failed = 0
    unauthorized: Counter[str] = Counter()
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
            if response.status == 401:
                unauthorized[_refusal_reason(text)] += 1
            print(f"{response.status} {example.source} {body['callId']} {'' if ok else text}")
    print(f"sent {len(examples)}, accepted {len(examples) - failed}, refused {failed}")
    if unauthorized:
        reason, _ = unauthorized.most_common(1)[0]
        print(f"callback-sink send: {unauthorized.total()} refused with 401 ({reason}): they "
              f"were signed with {origin}; set SINK_SECRETS (or pass --secret) to the sink's "
              "secret", file=sys.stderr)  # fmt: skip
    return 0 if failed == 0 else 1


def _refusal_reason(text: str) -> str:
    """The ingress's reason for a refusal (``{"error": ...}``), else the answer's text."""
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.strip() or "no reason given"
    error = answer.get("error") if isinstance(answer, dict) else None
    return str(error) if error else text.strip()


def _init(args: argparse.Namespace, settings: Settings) -> int:
    try:
        target = scaffold.create(args.name, Path.cwd())
    except scaffold.ScaffoldError as exc:
        print(f"callback-sink init: {exc}", file=sys.stderr)
        return 1
    print(f"created {target}/: pip install -e './{args.name}[test]' && cd {args.name} && pytest")
    return 0
