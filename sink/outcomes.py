"""Outcomes: the one word for what became of a handler's run of one delivery.

The same names are the ``outcome`` field of the worker's ``callback.handled`` lines, the
``outcome`` label of ``callback_sink_worker_handled_total``, the testing kit's
``report.outcomes(...)`` and the docs (``docs/reference/log-levels.md``). Each outcome has
the log level its line is written at (:data:`LEVELS`): the level says what it asks of the
operator (info: nothing, warning: look, error: act).
"""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    """What became of one handler in one delivery of a callback."""

    #: It ran and succeeded: its done mark is set.
    OK = "ok"
    #: It had already succeeded for this callback: skipped.
    DUPLICATE = "duplicate"
    #: It failed: the callback comes back after a delay as the next attempt.
    RETRY = "retry"
    #: It failed for good (out of attempts, a permanent error, a crash loop): dead-lettered.
    DEAD_LETTER = "dead_letter"
    #: Not run: another worker holds its claim, or the dedup store is unreachable; the
    #: callback comes back later at the same attempt.
    DEFERRED = "deferred"
    #: Not run: the callId was first seen as another kind of event (a replayed capture).
    FORGED = "forged"


#: The level of the line each outcome is logged at.
LEVELS: dict[Outcome, str] = {
    Outcome.OK: "info",
    Outcome.DUPLICATE: "info",
    Outcome.RETRY: "warning",
    Outcome.DEAD_LETTER: "error",
    # Routine while another worker runs the handler or a takeover waits for a lease; the
    # dedup store being away is its own error line (``dedup.unavailable``).
    Outcome.DEFERRED: "debug",
    Outcome.FORGED: "warning",
}
