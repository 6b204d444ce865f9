"""Edge duplicates: the callbacks this ingress process made durable lately, so that a re-post
of one is answered 200 without being stored (queued or spooled) a second time.

The signature covers only ``callId``, the secret and ``timestamp``: whoever captured one
signed callback can re-post it, padded with a megabyte of unsigned fields, as often as the
replay window (``SINK_MAX_AGE_S``) lets them. The workers' dedup makes the copies harmless to
handlers, but each one still costs a queue message or, during an outage, a spool record: 64
padded re-posts filled a 64 MiB spool in 0.3 s. Remembering the dedup keys of the last
``SINK_EDGE_DEDUP_SIZE`` callbacks made durable turns such a replay into one dict lookup and
a sampled ``callback.duplicate_at_edge`` line.

Bounded by count (the oldest key is forgotten first) and, in effect, by the replay window: a
re-post older than ``SINK_MAX_AGE_S`` is refused by the age check before it gets here. Only
callbacks made durable are remembered, so a genuine retry of a callback that got a 503 is
stored. Per process: a re-post that lands on a sibling process is stored once more there, and
the workers deduplicate it, as before.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from callback_sink.ingress.refusals import clip
from callback_sink.ingress.sampling import Sampler
from callback_sink.sink import logs
from callback_sink.sink.events import Event

log = logs.get("ingress")

#: The sampling key and the ``log.suppressed`` source of the duplicate lines.
EVENT = "callback.duplicate_at_edge"
#: A callId has at most 255 bytes, but an offline callback's key carries its unsigned ``to``:
#: a longer key is remembered by its digest, so one entry never costs more than this.
KEY_LENGTH = 300


def _key(event: Event) -> str:
    key = event.dedup_key
    return key if len(key) <= KEY_LENGTH else hashlib.blake2b(key.encode()).hexdigest()


class RecentCallbacks:
    """The dedup keys of the last ``size`` callbacks made durable (0: remember none)."""

    def __init__(self, size: int, log_rate: int) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()
        self.sampler = Sampler(log_rate)
        #: Re-posts answered without storing, since start.
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._keys)

    def repeated(self, event: Event) -> bool:
        """True (counted, logged, sampled) when ``event`` was made durable here lately."""
        if _key(event) not in self._keys:
            return False
        self.duplicates += 1
        if self.sampler.admit(EVENT):
            log.info("callback.duplicate_at_edge", call_id=clip(event.call_id),
                     event_name=clip(event.name), status=200)  # fmt: skip
        return True

    def remember(self, event: Event) -> None:
        """``event`` is durable now (published or spooled)."""
        if not self.size:
            return
        self._keys[_key(event)] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def report_suppressed(self) -> None:
        """One ``log.suppressed`` line for the duplicate lines held back in a window now over."""
        for _, count in self.sampler.drain().items():
            log.warning("log.suppressed", source=EVENT, suppressed=count)
