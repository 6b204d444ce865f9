"""decide: what becomes of a delivery, as a pure function of what its handlers did.

:func:`decide` looks at what the handlers did (:class:`~worker.pipeline.DeliveryResult`), at the
delivery's counters (:class:`Delivery`) and at the limits (:class:`Policy`), and answers with a
:class:`Settlement`: an optional dead letter, an optional republish (a retry, or a deferral that
costs no attempt), and always an ack of the delivery itself. :mod:`worker.settle` carries it
out; the testing kit (:mod:`callback_sink.testing`) and the unit tests call it without a broker.

Two budgets, kept apart:

- *attempts* (``SINK_MAX_ATTEMPTS``, or ``@on(retries=…)`` per handler) count handler
  failures; a handler out of attempts, or failing with ``PermanentError`` or one of its
  ``give_up_on`` types, is dead-lettered. Deferrals cost no attempt.
- *deliveries* (``SINK_MAX_DELIVERIES``) count every delivery that started handlers, by any
  worker, crashes included: the dedup store counts them when it grants claims, so the count
  survives the worker that died and every republish. A callback that keeps killing its
  worker is dead-lettered when the budget is spent. Deliveries that started nothing (a
  deferral, or a message prefetched by a worker that died before starting it) are not
  counted, so a poison callback does not drag its innocent neighbours to the limit; the
  message still carries its total delivery count (``x-sink-deliveries``), which paces the
  deferrals' backoff.
- *deaths* (``SINK_CRASH_LOOP_DEATHS``) count the deaths of a callback's lone runs
  (:mod:`worker.crashloop`): at the limit it is dead-lettered as ``crash-loop``, long before
  the delivery budget; that budget stays as the net for deaths nobody can pin on one callback.
"""

from __future__ import annotations

from dataclasses import dataclass

from callback_sink.sink.errors import PermanentError, Retry
from callback_sink.sink.outcomes import Outcome
from callback_sink.sink.topology import delay_step
from callback_sink.worker.pipeline import DeliveryResult, HandlerResult, Result

#: First delay of a deferral (another worker runs the handler, or the dedup store is down),
#: growing by DEFER_GROWTH with every delivery up to the cap: the first few bounces come
#: back within a claim lease (a dead worker's callbacks are taken over in seconds), and the
#: default ``SINK_MAX_DELIVERIES`` of bounces spans about six minutes, far longer than a
#: handler may run (a live worker renews its lease, so it keeps the callback meanwhile).
DEFER_DELAY = 1.0
DEFER_GROWTH = 1.5
DEFER_DELAY_CAP = 30.0
#: A deferral waiting for a live holder's liveness key to lapse (:mod:`.crashloop`) waits at
#: least this long: a key about to lapse is not asked about again at once.
DEFER_DELAY_MIN = 0.5


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    retry_delays: tuple[float, ...]


@dataclass(frozen=True)
class Delivery:
    #: Handler attempt this delivery is (1 for the first), carried as ``x-sink-attempt``.
    attempt: int = 1
    #: Deliveries of this message so far (carried across republishes), this one included.
    deliveries: int = 1


@dataclass(frozen=True)
class DeadLetterPlan:
    """The dead letter a settlement publishes (the dead copy itself is built by the
    settler; :class:`~worker.dlq.DeadLetter` is one read back from the queue)."""

    #: ``permanent``, ``attempts-exhausted``, ``delivery-limit`` or ``crash-loop``.
    reason: str
    #: The handlers this dead letter is for; a replay runs only these.
    handlers: tuple[str, ...]
    #: The failures that killed it (empty for ``delivery-limit`` and ``crash-loop``).
    failures: tuple[HandlerResult, ...] = ()


@dataclass(frozen=True)
class Republish:
    """The copy a settlement publishes to a delay queue, to come back later."""

    #: ``retry`` (a handler failed: next attempt) or ``deferred`` (not run yet: same attempt).
    kind: Outcome
    delay: float
    attempt: int
    #: The handlers that copy must still run (the rest are settled for it).
    handlers: tuple[str, ...]
    failures: tuple[HandlerResult, ...] = ()
    #: A deferred copy of a delivery that ran alone: it comes back alone (``x-sink-suspect``).
    suspect: bool = False


@dataclass(frozen=True)
class Settlement:
    """What becomes of one delivery: :func:`decide` answers it, the settler carries it out
    (and acks the delivery once its copies are confirmed)."""

    dead_letter: DeadLetterPlan | None = None
    republish: Republish | None = None
    #: Set when the callId was bound to another kind of event: refused, nothing ran.
    forged_as: str | None = None

    @property
    def done(self) -> bool:
        return self.dead_letter is None and self.republish is None

    def outcome_of(self, result: HandlerResult) -> Outcome:
        """What became of one handler of the delivery this settles: a failure is a ``retry``
        unless this settlement dead-letters it."""
        if result.result is Result.FAILED:
            dead = self.dead_letter
            given_up = dead is not None and result.handler.name in dead.handlers
            return Outcome.DEAD_LETTER if given_up else Outcome.RETRY
        return _OUTCOMES[result.result]


#: The outcome of a handler's run that did not fail.
_OUTCOMES = {
    Result.OK: Outcome.OK,
    Result.DUPLICATE: Outcome.DUPLICATE,
    # Ran, but another worker took the lapsed claim: settled elsewhere (dedup.lease_lost).
    Result.LEASE_LOST: Outcome.DUPLICATE,
    Result.BUSY: Outcome.DEFERRED,
    Result.UNAVAILABLE: Outcome.DEFERRED,
    Result.INBOX_UNAVAILABLE: Outcome.DEFERRED,
}
#: Not run (or rolled back) for want of a claim or a database: back later, same attempt.
WAITING = (Result.BUSY, Result.UNAVAILABLE, Result.INBOX_UNAVAILABLE)


def decide(ran: DeliveryResult, delivery: Delivery, policy: Policy) -> Settlement:
    """The fate of one delivery. Pure: no I/O, no clock."""
    if ran.forged_as is not None:
        return Settlement(forged_as=ran.forged_as)
    if ran.over_budget:
        return Settlement(dead_letter=DeadLetterPlan("delivery-limit", ran.pending))
    if ran.crash_deaths:
        return Settlement(dead_letter=DeadLetterPlan("crash-loop", ran.pending))
    given_up = [f for f in ran.failures if _gives_up(f, delivery.attempt, policy)]
    retrying = [f for f in ran.failures if f not in given_up]
    waiting = [r for r in ran.results if r.result in WAITING]
    dead = None
    if given_up:
        permanent = any(_permanent(f) for f in given_up)
        reason = "permanent" if permanent else "attempts-exhausted"
        dead = DeadLetterPlan(reason, _names(given_up), tuple(given_up))
    republish = None
    if retrying:
        delay = _retry_delay(delivery.attempt, retrying, policy.retry_delays)
        handlers = _names([*retrying, *waiting])
        republish = Republish(Outcome.RETRY, delay, delivery.attempt + 1, handlers, tuple(retrying))
    elif waiting:
        grown = min(DEFER_DELAY * DEFER_GROWTH ** (delivery.deliveries - 1), DEFER_DELAY_CAP)
        if ran.retry_after is not None:  # a holder that may be dead is known so by then
            grown = min(grown, max(ran.retry_after, DEFER_DELAY_MIN))
        delay = delay_step(grown)
        republish = Republish(
            Outcome.DEFERRED, delay, delivery.attempt, _names(waiting), suspect=ran.alone
        )
    return Settlement(dead_letter=dead, republish=republish)


def attempts_of(result: HandlerResult, policy: Policy) -> int:
    return result.handler.options.retries or policy.max_attempts


def _gives_up(failure: HandlerResult, attempt: int, policy: Policy) -> bool:
    return _permanent(failure) or attempt >= attempts_of(failure, policy)


def _permanent(failure: HandlerResult) -> bool:
    error = failure.error
    return isinstance(error, PermanentError) or (
        error is not None and isinstance(error, failure.handler.options.give_up_on)
    )


def _retry_delay(attempt: int, failures: list[HandlerResult], tiers: tuple[float, ...]) -> float:
    asked = [f.error.delay for f in failures if isinstance(f.error, Retry) and f.error.delay]
    if asked:
        return delay_step(max(asked), tiers)
    return tiers[min(attempt - 1, len(tiers) - 1)]


def _names(results: list[HandlerResult]) -> tuple[str, ...]:
    return tuple(r.handler.name for r in results)
