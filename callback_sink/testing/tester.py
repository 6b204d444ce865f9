"""Run callbacks through the worker's own decisions, without a broker.

A test double that routes or acknowledges by code of its own lets tests pass that production
fails (FastStream's ``TestRabbitBroker`` issues #1110 and #2728 are the lesson). So
:class:`SinkTester` owns no decision: it loads handlers with the real
:func:`~handlers.registry.load`, runs each delivery through the real
:func:`~worker.pipeline.dispatch` (claims and done marks in a real
:class:`~worker.dedup.MemoryStore`, the handler's own time-out), asks the real
:func:`~worker.decide.decide` what becomes of it, and logs it with the worker's own
:func:`~worker.settle.log_outcome`. Where the worker would publish a retry copy to a delay
queue, the tester delivers that copy at once, carrying what the settler puts on it: the next
attempt and the handlers settled for it (:func:`~worker.settle.retry_settled`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from structlog.contextvars import bound_contextvars

from callback_sink.handlers.registry import _NAME_MARK, Handler, Registry, load
from callback_sink.sink.events import Event
from callback_sink.sink.outcomes import Outcome
from callback_sink.sink.settings import Settings
from callback_sink.worker import inbox
from callback_sink.worker.consumer import policy_of, run_policy_of
from callback_sink.worker.decide import DeadLetterPlan, Delivery, Settlement, decide
from callback_sink.worker.dedup import MemoryStore
from callback_sink.worker.pipeline import DeliveryResult, dispatch
from callback_sink.worker.settle import log_outcome, retry_settled

#: What names a handler in a report: its ``module.function`` name, a :class:`Handler`, or the
#: decorated function itself.
HandlerRef = str | Handler | Callable[..., Any]
#: What a tester loads handlers from: dotted module paths, modules, or :class:`Handler`\\ s.
HandlerSource = str | ModuleType | Handler


@dataclass(frozen=True)
class Step:
    """One handler in one delivery."""

    handler: str
    #: What became of it: ``ok``, ``duplicate``, ``retry``, ``dead_letter`` or ``deferred``,
    #: the names of the worker's ``callback.handled`` lines and metrics.
    outcome: Outcome
    #: The attempt this delivery was (1 for the first).
    attempt: int
    #: ``retry`` / ``deferred``: seconds until the copy comes back (the delay queue's tier).
    delay: float | None = None
    #: ``dead_letter``: ``permanent``, ``attempts-exhausted`` or ``delivery-limit``.
    reason: str | None = None
    #: What the handler raised (``retry`` and ``dead_letter``).
    error: BaseException | None = None


@dataclass
class CallbackReport:
    """Everything that happened to one callback, delivery after delivery, until it was done."""

    event: Event
    steps: list[Step] = field(default_factory=list)
    decisions: list[Settlement] = field(default_factory=list)

    @property
    def deliveries(self) -> int:
        return len(self.decisions)

    @property
    def dead_letters(self) -> list[DeadLetterPlan]:
        return [d.dead_letter for d in self.decisions if d.dead_letter is not None]

    @property
    def forged_as(self) -> str | None:
        """The kind this callId was first seen as, when this callback claimed another."""
        return self.decisions[-1].forged_as if self.decisions else None

    def outcomes(self, handler: HandlerRef | None = None) -> list[Outcome]:
        """The outcomes of ``handler`` (of every handler if ``None``), in order."""
        return [s.outcome for s in _of(self.steps, handler)]

    def _record(self, ran: DeliveryResult, delivery: Delivery, decision: Settlement) -> None:
        self.decisions.append(decision)
        dead, plan = decision.dead_letter, decision.republish
        for r in ran.results:
            outcome = decision.outcome_of(r)  # the worker's own naming of it
            step = Step(r.handler.name, outcome, delivery.attempt)
            if outcome is Outcome.DEAD_LETTER and dead is not None:
                step = replace(step, reason=dead.reason, error=r.error)
            elif outcome in (Outcome.RETRY, Outcome.DEFERRED) and plan is not None:
                step = replace(step, delay=plan.delay, error=r.error)
            self.steps.append(step)


@dataclass
class Report:
    """What :meth:`SinkTester.run` saw: one :class:`CallbackReport` per callback sent."""

    callbacks: list[CallbackReport]

    def outcomes(self, handler: HandlerRef | None = None) -> list[Outcome]:
        """``handler``'s outcomes (every handler's if ``None``) over all callbacks, in order:
        ``["ok"]``, ``["retry", "ok"]``, ``["ok", "duplicate"]``, ``["retry", "dead_letter"]`` …
        (the ``outcome`` of the worker's ``callback.handled`` lines)."""
        return [s.outcome for s in self.steps(handler)]

    def verdicts(self, handler: HandlerRef | None = None) -> list[Outcome]:
        """Deprecated: :meth:`outcomes` (the names are the worker's now: ``ok`` for what was
        ``handled``, ``dead_letter`` for ``dead``)."""
        warnings.warn(
            "Report.verdicts() is deprecated: use Report.outcomes(), which names outcomes as "
            "the worker's logs and metrics do ('ok', 'duplicate', 'retry', 'dead_letter')",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.outcomes(handler)

    def steps(self, handler: HandlerRef | None = None) -> list[Step]:
        return _of([s for c in self.callbacks for s in c.steps], handler)

    @property
    def dead_letters(self) -> list[DeadLetterPlan]:
        return [d for c in self.callbacks for d in c.dead_letters]


class SinkTester:
    """Handlers, the worker's settings and a memory dedup store, ready to take callbacks.

    ``SinkTester("myapp.callbacks")`` loads that module as the worker would
    (``SINK_HANDLERS``); with no module given it loads the installed packages' entry points,
    like a worker without ``SINK_HANDLERS``. ``settings`` (or keyword overrides such as
    ``max_attempts=3``, ``handler_timeout=1``) are the worker-wide defaults that
    ``@on(...)`` options override. Transactional handlers (``@on(..., transactional=True)``)
    run in real transactions on ``inbox_url=`` (a PostgreSQL URL, as ``SINK_INBOX_URL``),
    their rows in its ``inbox_table``. The start-up hooks run before the first callback (or on
    :meth:`startup`); ``async with`` also runs the shutdown hooks at the end.
    """

    def __init__(
        self,
        *handlers: HandlerSource,
        registry: Registry | None = None,
        use_entry_points: bool | None = None,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        if registry is None:
            registry = registry_of(handlers, use_entry_points)
            if not registry.handlers:
                raise ValueError(
                    "SinkTester: no handlers found: pass handler module paths, or install "
                    "your package so that its callback_sink.handlers entry point is found"
                )
        self._started = False
        self.registry = registry
        self.settings = replace(settings or Settings(), **overrides)
        self.store = MemoryStore()
        # The worker's own policies, so that the kit decides exactly as production does.
        self._policy = policy_of(self.settings)
        self._run_policy = run_policy_of(self.settings, registry, self.store)

    async def __aenter__(self) -> SinkTester:
        await self.startup()
        return self

    async def startup(self) -> None:
        """Await the ``@on_startup`` hooks once. A failure raises ``StartupError`` after the
        shutdown hooks ran (as in the worker), and the next call tries again."""
        if not self._started:
            try:
                if self._run_policy.inbox is not None:  # SINK_INBOX_URL's table, as a worker
                    await inbox.start(self._run_policy.inbox)
                await self.registry.startup()
            except BaseException:
                await self.registry.shutdown()
                raise
            self._started = True

    async def shutdown(self) -> None:
        """Await the ``@on_shutdown`` hooks, if the start-up hooks ran."""
        await self._run_policy.leases.close()
        await inbox.close(self._run_policy.inbox)
        if self._started:
            self._started = False
            await self.registry.shutdown()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def run(self, events: Event | Iterable[Event]) -> Report:
        """Deliver each event in turn, following its retries until it is done or dead-lettered
        (without waiting out the delays). The same event twice is a duplicate the second time:
        the dedup store lives as long as the tester."""
        await self.startup()
        batch = [events] if isinstance(events, Event) else list(events)
        return Report([await self._follow(event) for event in batch])

    async def _follow(self, event: Event) -> CallbackReport:
        """The worker's ``handle`` for this delivery, then for every retry copy it republishes."""
        report = CallbackReport(event)
        handlers = self.registry.for_event(event.name)
        delivery, settled = Delivery(), frozenset[str]()
        with bound_contextvars(call_id=event.call_id, event_name=event.name):
            while True:
                ran = await dispatch(event, handlers, self.store, self._run_policy, settled=settled)
                decision = decide(ran, delivery, self._policy)
                log_outcome(ran, delivery, decision, log_ok=self.settings.log_accepted)
                report._record(ran, delivery, decision)
                plan = decision.republish
                if plan is None or plan.kind is Outcome.DEFERRED:
                    # A deferral waits for a claim held elsewhere: in a tester nothing
                    # else holds one, so following it would only spin.
                    return report
                # The copy carries the next attempt and its settled handlers; the broker
                # delivering it is one more delivery.
                delivery = Delivery(plan.attempt, delivery.deliveries + 1)
                settled = retry_settled(ran, decision)


def registry_of(
    handlers: Sequence[HandlerSource] = (), use_entry_points: bool | None = None
) -> Registry:
    """A registry as the worker loads it: modules by path (and entry points; by default only
    when no handler is given), plus any ready-made :class:`Handler`\\ s. ``registry_of()``
    is what a worker without ``SINK_HANDLERS`` runs: every installed package's entry point
    (``[h.name for h in registry_of().handlers]``)."""
    ready = [h for h in handlers if isinstance(h, Handler)]
    paths = [
        h if isinstance(h, str) else h.__name__ for h in handlers if not isinstance(h, Handler)
    ]
    entry_points = not handlers if use_entry_points is None else use_entry_points
    loaded = load(paths, use_entry_points=entry_points)
    return Registry([*loaded.handlers, *ready], loaded.shutdown_hooks, loaded.startup_hooks)


def handler_name(handler: HandlerRef) -> str:
    if isinstance(handler, str):
        return handler
    if isinstance(handler, Handler):
        return handler.name
    named = getattr(handler, _NAME_MARK, None)  # @on(name=...): the handler's identity
    return named if isinstance(named, str) else f"{handler.__module__}.{handler.__qualname__}"


def _of(steps: list[Step], handler: HandlerRef | None) -> list[Step]:
    if handler is None:
        return steps
    name = handler_name(handler)
    return [s for s in steps if s.handler == name]
