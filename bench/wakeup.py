"""What waking a process costs on this machine: one process echoes a byte over a socket pair
to another that sends one at a fixed rate; the echoing one's CPU time per message, at a low
rate (it sleeps between messages, its caches go cold, the vCPU halts) and at a high one.

On a machine where a lone wake-up is dear (a nested virtual machine's is), every process a
callback passes through at a moderate rate (HTTP, the broker's threads, the worker, Redis)
pays it, so a callback costs the machine much more CPU at half the maximum rate than at the
maximum, where everything batches. The benchmark prints these two figures in its header to
say what kind of machine its latency figures come from. Usage: ``wakeup.py``; one JSON line.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time

import orjson

#: (messages/s, seconds): a rate at which the echoing process sleeps between messages, and
#: one at which it hardly does.
RATES = ((200.0, 2.0), (5000.0, 0.5))


def echo_cpu_us(rate: float, seconds: float) -> float:
    """The echoing process's CPU time (user + system) per message, microseconds, from its
    first message to its last (its fork and exit not included)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing process
        ours.close()
        theirs.send(theirs.recv(64))
        first = resource.getrusage(resource.RUSAGE_SELF)
        while (data := theirs.recv(64)) != b"end":
            if not data:  # the sender is gone
                os._exit(1)
            theirs.send(data)
        last = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (last.ru_utime - first.ru_utime) + (last.ru_stime - first.ru_stime)
        theirs.send(repr(cpu).encode())
        os._exit(0)
    theirs.close()
    count = int(rate * seconds)
    start = time.monotonic()
    for i in range(count + 1):  # the first one is not counted
        due = start + i / rate
        while (left := due - time.monotonic()) > 0:
            time.sleep(left)
        ours.send(b"x")
        ours.recv(64)
    ours.send(b"end")
    cpu = float(ours.recv(64))
    ours.close()
    os.waitpid(pid, 0)
    return 1e6 * cpu / count


def main() -> None:
    result = {f"{rate:.0f}/s": round(echo_cpu_us(rate, seconds), 1) for rate, seconds in RATES}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
