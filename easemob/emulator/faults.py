"""Fault injection: answer some REST requests 429 or 503, as a throttled Easemob would.

Two sources, scripted first: ``fail_next(429, 2)`` makes the next two requests fail (what
tests use), and the configured rates make a random fraction fail (what people testing their
own handlers use).
"""

from __future__ import annotations

import random
from collections import deque

from callback_sink.easemob import api
from callback_sink.sink.errors import EasemobError

#: Easemob's bodies for the two throttling statuses.
_BODIES = {
    429: (api.TOO_MANY_REQUESTS, "EasemobTooManyRequestsException",
          "This request has reached the api limit of the app key"),
    503: (api.SERVICE_UNAVAILABLE, "EasemobServiceUnavailableException",
          "The service is busy, please retry later"),
}  # fmt: skip


class Faults:
    def __init__(self, throttle_rate: float, unavailable_rate: float, rng: random.Random) -> None:
        self.throttle_rate = throttle_rate
        self.unavailable_rate = unavailable_rate
        self._rng = rng
        self._scripted: deque[int] = deque()
        #: How many faults were injected, by status.
        self.injected: dict[int, int] = {429: 0, 503: 0}

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status`` (429 or 503)."""
        if status not in _BODIES:
            raise ValueError("only 429 and 503 can be injected")
        self._scripted.extend([status] * count)

    def pick(self) -> EasemobError | None:
        """The fault for the request at hand, if any."""
        if self._scripted:
            status = self._scripted.popleft()
        else:
            draw = self._rng.random()
            if draw < self.throttle_rate:
                status = 429
            elif draw < self.throttle_rate + self.unavailable_rate:
                status = 503
            else:
                return None
        self.injected[status] += 1
        return EasemobError(status, *_BODIES[status])
