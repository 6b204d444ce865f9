"""The handler developer kit: build callbacks, run them through the real worker decisions.

::

    from callback_sink.testing import SinkTester, make_event

    async def test_a_new_group_is_recorded() -> None:
        async with SinkTester("myapp.callbacks") as tester:
            report = await tester.run(make_event("muc:create", group_id="42"))
        assert report.outcomes("myapp.callbacks.on_create") == ["ok"]

- :func:`make_event` / :func:`make_body`: a valid callback of any event name, from the
  spec's examples, with a fresh callId, the current time and your overrides (``make_body``
  signs it, for HTTP tests).
- :class:`SinkTester`: the real registry, dispatch, dedup (memory store) and retry /
  dead-letter decisions, no broker; retries are followed at once. Its :class:`Report` says
  per handler and callback which :class:`Outcome` it had, named as in the worker's logs and
  metrics: ``ok``, ``duplicate``, ``retry`` (delay, attempt), ``dead_letter`` (reason, error),
  ``deferred``.
- :class:`RunningSink`: a real ingress and worker on the local RabbitMQ for an end-to-end test.
- :func:`run_presend`: the answer the ingress would give a pre-send callback
  (:func:`make_presend_event`), through the real ``@presend`` chain, budget and default.
- :data:`Transaction`: what an ``@on(..., transactional=True)`` handler receives; a tester
  given ``inbox_url=`` (a real PostgreSQL) runs such handlers in real transactions.
- :func:`registry_of`: the handlers a worker would load (``registry_of()``: the installed
  entry points, as a worker without ``SINK_HANDLERS``).

With the sink installed, pytest has the fixtures ``sink_tester``, ``make_event`` and
``sink_e2e`` (see :mod:`callback_sink.pytest_plugin`), typed :data:`TesterFactory` and
:data:`SinkFactory`.
"""

from collections.abc import Awaitable, Callable

from callback_sink.handlers.transactional import Transaction
from callback_sink.sink.outcomes import Outcome
from callback_sink.testing.e2e import BrokerUnreachable, RunningSink
from callback_sink.testing.events import make_body, make_event, sign_event
from callback_sink.testing.presend import make_presend_body, make_presend_event, run_presend
from callback_sink.testing.tester import (
    CallbackReport,
    Report,
    SinkTester,
    Step,
    registry_of,
)

#: The type of the ``sink_tester`` fixture: ``sink_tester("myapp.callbacks", max_attempts=3)``.
TesterFactory = Callable[..., SinkTester]
#: The type of the ``sink_e2e`` fixture: ``await sink_e2e("myapp.callbacks")``.
SinkFactory = Callable[..., Awaitable[RunningSink]]

__all__ = [
    "BrokerUnreachable", "CallbackReport", "Outcome", "Report", "RunningSink", "SinkFactory",
    "SinkTester", "Step", "TesterFactory", "Transaction", "make_body", "make_event",
    "make_presend_body", "make_presend_event", "registry_of", "run_presend", "sign_event",
]  # fmt: skip
