"""The Easemob callback signature: ``md5_hex(callId + secret + timestamp)``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def sign(call_id: str, secret: str, timestamp: int) -> str:
    """Return the ``security`` value Easemob computes for a callback."""
    return hashlib.md5(f"{call_id}{secret}{timestamp}".encode()).hexdigest()


def verify(call_id: str, timestamp: int, security: str, secrets: Sequence[str]) -> bool:
    """True when ``security`` matches any of ``secrets``; every secret is compared in
    constant time, so timing tells nothing about which one (or how much) matched."""
    given = security.strip().lower().encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, sign(call_id, secret, timestamp).encode())
    return matched
