"""``bench/log_volume.py`` on real processes (a few callbacks), so that the figure in the docs
keeps a working script behind it, and ``SINK_LOG_ACCEPTED=false`` is seen to leave, of a
callback that went well, only the handler's own line. No byte count is asserted beyond "less":
field values vary with the callIds and the clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def test_success_lines_off_leave_only_the_handlers_line_per_callback(amqp_url: str) -> None:
    """The fixture skips (or fails under CI=true) without RabbitMQ at 127.0.0.1:5672, the
    broker the script uses."""
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "log_volume.py"), "--count", "40", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    on, off = (json.loads(line) for line in run.stdout.splitlines())
    assert (on["log_accepted"], off["log_accepted"]) == (True, False)
    assert set(on["by_event"]) == {"callback.accepted", "event.received", "callback.handled"}
    assert set(off["by_event"]) == {"event.received"}
    assert 0 < off["bytes_per_callback"] < on["bytes_per_callback"]
