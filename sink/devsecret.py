"""The development secret ``callback-sink run`` generates when no secret is configured.

It lives in ``.sink-dev-secret`` in the current directory, so that ``send``, ``sign`` and
``emulate`` started from the same directory sign with it too. Never used in production:
``callback-sink ingress`` refuses to start without ``SINK_SECRETS``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEV_SECRET_FILE = Path(".sink-dev-secret")


def read_dev_secret() -> str | None:
    """The development secret, if ``callback-sink run`` created one here."""
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text(encoding="utf-8").strip() or None
    return None


def ensure_dev_secret() -> str:
    """The development secret, created on first use readable by its owner only from the
    start (never chmod-ed after the write), and never through an existing file or symlink
    (``O_EXCL | O_NOFOLLOW``): a planted link cannot redirect it."""
    existing = read_dev_secret()
    if existing:
        return existing
    secret = secrets.token_hex(16)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(DEV_SECRET_FILE, flags, 0o600), "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    return secret
