"""The emulator's per-app REST quota: Easemob counts an app's requests per second and answers
429 above its limit (100 a second by default), whichever process sent them.

:class:`Quota` counts every REST request (the token endpoint included) per wall-clock second;
over ``SINK_EMULATOR_RATE_LIMIT`` in one second, Easemob's 429 body. ``emulator.quota`` keeps
the counts, so a test can say "never more than the quota in any second, no 429".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from aiohttp import web

from callback_sink.easemob import api
from callback_sink.sink.errors import EasemobError

Handler = Callable[[web.Request], "web.StreamResponse"]


class Quota:
    """Requests per wall-clock second; over ``rate`` (0: no quota), a 429."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.clock = clock
        #: Requests seen per second (``int(clock())``), refused or not.
        self.per_second: Counter[int] = Counter()
        #: Requests refused with 429 for being over the quota.
        self.throttled = 0

    def count(self) -> None:
        """Count one request; raise Easemob's 429 when it is over this second's quota."""
        second = int(self.clock())
        self.per_second[second] += 1
        if self.rate and self.per_second[second] > self.rate:
            self.throttled += 1
            raise EasemobError(429, api.TOO_MANY_REQUESTS, "EasemobTooManyRequestsException",
                               "This request has reached the api limit of the app key")  # fmt: skip
        for old in [s for s in self.per_second if s < second - 3600]:
            del self.per_second[old]

    @property
    def busiest(self) -> int:
        """The most requests seen in one second."""
        return max(self.per_second.values(), default=0)
