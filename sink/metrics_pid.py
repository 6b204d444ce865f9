"""prometheus_client's multiprocess values without a ``getpid`` system call per observation.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) every ``inc()`` and ``observe()`` first
asks the process id, to notice a ``fork()`` and reopen its files; glibc no longer caches
the id, so each is a system call, several per callback on the ingress's hot path. The value
class built here asks a cached id instead, which ``os.register_at_fork`` refreshes in every
forked child: a fork is still noticed, and nothing else changes. It is installed when this
module is imported, which :mod:`callback_sink.sink.metrics` does before any metric exists.
"""

from __future__ import annotations

import os

from prometheus_client import values

_pid = os.getpid()


def process_id() -> int:
    """This process's id, as of its start or its last fork."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
if values.ValueClass is not values.MutexValue:  # multiprocess mode, chosen at import
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)  # type: ignore[no-untyped-call]
