"""Log levels: the one table of what each line about a callback is logged at, and why.

The level says what a line asks of the operator: ``info`` nothing, ``warning`` look,
``error`` act. ``docs/reference/log-levels.md`` is generated from :data:`LINES` (run
``python -m callback_sink.sink.levels > docs/reference/log-levels.md``) and the tests fail
when the page, the code or a logged ``callback.*`` line disagrees with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from callback_sink.sink import headers
from callback_sink.sink.logs import TRACEBACK_CHARS, TRACEBACK_FRAMES, TRACEBACK_HEADER_CHARS
from callback_sink.sink.outcomes import LEVELS, Outcome

#: The levels the sink logs at, most verbose first.
NAMES = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Line:
    """One kind of log line: its ``event``, the ``outcome`` field it carries (if any), its
    level and when it is written."""

    event: str
    level: str
    when: str
    outcome: Outcome | None = None


def _handled(outcome: Outcome, when: str) -> Line:
    return Line("callback.handled", LEVELS[outcome], when, outcome)


_FORGED = "the callId was first seen as another kind of event: refused, nothing ran"
_LIMIT = "a callback kept taking its workers down (`SINK_MAX_DELIVERIES`): dead-lettered"
_CRASH = (
    "a callback took its worker down each time it ran alone (`SINK_CRASH_LOOP_DEATHS`): "
    "dead-lettered"
)
_BUG = "a bug of the worker's own (with its traceback): the message is handed back"
_SETTLE = "an ack or a retry copy failed (with its traceback): the message is handed back"
_SPOOL = "the ingress refused a callback its spool could not take"
_EDGE = (
    "a re-post of a callback this ingress process made durable lately "
    "(`SINK_EDGE_DEDUP_SIZE`): answered 200, not stored again; sampled like refusals"
)

LINES: tuple[Line, ...] = (
    _handled(Outcome.OK, "a handler ran and succeeded"),
    _handled(Outcome.DUPLICATE, "a handler had already succeeded for this callback"),
    _handled(Outcome.RETRY, "a handler failed and will be retried (with its traceback)"),
    _handled(
        Outcome.DEAD_LETTER,
        "a handler failed for good (with its traceback): out of attempts, or a permanent error",
    ),
    Line(
        "callback.deferred",
        LEVELS[Outcome.DEFERRED],
        "a handler not run now (another worker holds its claim, or Redis is away): the "
        "callback comes back; its `callback.handled` line comes when it runs",
        Outcome.DEFERRED,
    ),
    Line("callback.forged", LEVELS[Outcome.FORGED], _FORGED, Outcome.FORGED),
    Line("callback.crash_loop", LEVELS[Outcome.DEAD_LETTER], _CRASH, Outcome.DEAD_LETTER),
    Line("callback.delivery_limit", LEVELS[Outcome.DEAD_LETTER], _LIMIT, Outcome.DEAD_LETTER),
    Line(
        "callback.undecodable",
        "error",
        "a message on the work queue is not a callback: dead-lettered",
    ),
    Line("callback.dispatch_failed", "error", _BUG),
    Line("callback.settle_failed", "warning", _SETTLE),
    Line("callback.accepted", "info", "the ingress answered 200"),
    Line("callback.duplicate_at_edge", "info", _EDGE),
    Line("callback.rejected", "warning", "the ingress refused a request"),
    Line("callback.rejected", "error", _SPOOL),
    Line("callback.rejected.suppressed", "warning", "refusal lines held back by sampling"),
    Line("worker.started", "info", "start-up: the worker consumes"),
    Line("worker.draining", "info", "shutdown: waiting for the running handlers"),
    Line("worker.stopped", "info", "shutdown: the worker stopped"),
    Line("ingress.listening", "info", "start-up: the ingress takes callbacks"),
    Line("ingress.stopping", "info", "shutdown: the ingress stops taking callbacks"),
    Line("ingress.stopped", "info", "shutdown: the ingress stopped"),
)

#: A configuration error (a bad ``SINK_*`` value, a handler module that does not load) is
#: not a log line: logging is not configured yet. It is one line on stderr and a non-zero
#: exit, at the level it would have: ``error``.
CONFIG_ERROR_LEVEL = "error"


def levels_of(event: str, outcome: str | None = None) -> set[str]:
    """The levels ``event`` (with that ``outcome`` field) may be logged at; empty if the
    table does not list it."""
    return {
        line.level
        for line in LINES
        if line.event == event and (line.outcome is None or line.outcome == outcome)
    }


_PAGE = """\
# Log levels

<!-- Generated from callback_sink/sink/levels.py:
     python -m callback_sink.sink.levels > docs/reference/log-levels.md -->

The level of a line says what it asks of you: **info** nothing, **warning** look, **error**
act. `SINK_LOG_LEVEL=warning` keeps the retries and everything worse; `SINK_LOG_LEVEL=error`
keeps the dead letters and the failures of the sink itself. The outcome names are the same in
the `outcome` field of the lines, the `outcome` label of `callback_sink_worker_handled_total`
and the testing kit's `report.outcomes()`: {outcomes}.

| event | outcome | level | when |
|---|---|---|---|
{rows}

A configuration error (a bad `SINK_*` value, a handler module that does not load) is one line
on stderr and a non-zero exit, at level **{config}**: logging is not set up yet.

## Tracebacks

Every failure line (`callback.handled` with `retry` or `dead_letter`,
`callback.dispatch_failed`, `callback.settle_failed`) carries `error_type`, `error` and the
formatted traceback: the `exception` field in JSON, printed under the line in the console
format. It keeps the last {frames} frames of each exception of the chain, and at most its last
{chars:,} characters. Frames' local variables are never rendered, so a callback's body or a
secret held in a variable cannot leak through it.

A dead letter keeps the same traceback in its `{header}` header, cut to its last
{header_chars:,} characters; `callback-sink dlq show` prints it.
"""


def markdown(lines: Iterable[Line] = LINES) -> str:
    """The reference page, ``docs/reference/log-levels.md``."""
    rows = "\n".join(
        f"| `{line.event}` | {f'`{line.outcome}`' if line.outcome else ''} | "
        f"**{line.level}** | {line.when} |"
        for line in lines
    )
    return _PAGE.format(
        outcomes=", ".join(f"`{o}`" for o in Outcome), rows=rows, config=CONFIG_ERROR_LEVEL,
        frames=TRACEBACK_FRAMES, chars=TRACEBACK_CHARS, header=headers.TRACEBACK,
        header_chars=TRACEBACK_HEADER_CHARS,
    )  # fmt: skip


if __name__ == "__main__":
    print(markdown(), end="")
