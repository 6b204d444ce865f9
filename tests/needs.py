"""What a test needs and does not find: a skip on a developer's machine, a failure under CI.

``make test`` provides every need (deploy/ensure-services.sh starts RabbitMQ, Redis and
PostgreSQL; deploy/ensure-tools.sh installs promtool and wrk), so under ``CI=true`` a missing
one is a broken set-up, never a reason to pass quietly. The one opt-in exception is the image
build (``SINK_IMAGE_TEST=1``, tests/test_image.py): minutes long, and its tools are only
required once it is asked for.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(message: str) -> NoReturn:
    """Skip the test (locally) or fail it (``CI=true``), saying what is missing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing need fails the run)")
    pytest.skip(message)
