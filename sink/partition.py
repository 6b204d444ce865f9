"""Per-key ordering (``SINK_ORDERING=group``): which partition a callback belongs to.

In ordered mode every callback of one group or chat room (or, for messages, of one
conversation) goes to the same of ``SINK_PARTITIONS`` partition queues, each consumed by a
single active consumer one callback at a time, so the handlers of that group see its
callbacks in the order the ingress accepted them. The key and the hash are fixed here, so
every ingress process agrees without talking to the others.
"""

from __future__ import annotations

import zlib

from callback_sink.sink.events import Event

#: Header carrying the partition; the partition exchange routes on it. Not ``x-…``: a
#: headers exchange ignores headers whose names start with ``x-`` when it matches.
PARTITION_HEADER = "sink-partition"
ORDERINGS = ("none", "group")


def partition_key(event: Event) -> str:
    """What must stay in order: the group or chat room; for a message without one, the
    conversation (its two ends, in either direction); for anything else, the callId."""
    if event.group_id:
        return f"group:{event.group_id}"
    if event.from_ and event.to:
        low, high = sorted((event.from_, event.to))
        return f"chat:{low}:{high}"
    return f"call:{event.call_id}"


def partition_of(event: Event, partitions: int) -> int:
    """A stable partition number in ``range(partitions)`` (CRC-32: the same in every
    process and every Python, unlike ``hash()``)."""
    return zlib.crc32(partition_key(event).encode()) % partitions
