"""The development secret ``callback-sink run`` generates when no secret is configured.

It lives in ``.sink-dev-secret`` in the current directory, so that ``send``, ``sign`` and
``emulate`` started from the same directory sign with it too. Never used in production:
``callback-sink ingress`` refuses to start without ``SINK_SECRETS``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

DEV_SECRET_FILE = Path(".sink-dev-secret")


def read_dev_secret() -> str | None:
    """The development secret, if ``callback-sink run`` created one here."""
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text(encoding="utf-8").strip() or None
    return None


def ensure_dev_secret() -> str:
    """The development secret, created (readable by its owner only) on first use."""
    existing = read_dev_secret()
    if existing:
        return existing
    secret = secrets.token_hex(16)
    DEV_SECRET_FILE.write_text(secret + "\n", encoding="utf-8")
    DEV_SECRET_FILE.chmod(0o600)
    return secret
