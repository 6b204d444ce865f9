"""Who is calling: the client address behind trusted proxies, and the network allow-list.

``X-Forwarded-For`` is believed only when the direct peer is one of ``SINK_TRUSTED_PROXIES``:
the list is then read from the right (each proxy appends the address it saw), skipping
trusted proxies, and the first address that is not one is the client. Anything to its left
was written by the client itself and proves nothing. An address that does not parse is the
client (and is in no allowed network), so a forged header cannot slip past the allow-list.
Every ``X-Forwarded-For`` line counts (:func:`forwarded_for`): a proxy that appends a line of
its own instead of extending the client's must not leave the client's line to be believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from callback_sink.sink.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address, or None for anything else (a Unix socket, garbage, an empty entry)."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Headers(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...


def forwarded_for(headers: Headers) -> str:
    """Every ``X-Forwarded-For`` line of a request, in order, joined as one list (RFC 7230
    allows a list header to be split over lines; HAProxy adds its own line)."""
    return ", ".join(headers.getall("X-Forwarded-For", []))


def _within(address: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in networks)


@dataclass(frozen=True, slots=True)
class Client:
    """The client as far as we can tell: its address (None if unknown) and its text form."""

    address: IPAddress | None
    text: str


@dataclass(frozen=True)
class Network:
    """The allow-list and the trusted proxies of one ingress."""

    allowed: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @property
    def checks(self) -> bool:
        """False when every client is allowed: the hot path then skips all of this."""
        return bool(self.allowed)

    def client(self, peer: str | None, forwarded_for: str | None) -> Client:
        """The client behind ``peer`` given its ``X-Forwarded-For`` header (if any)."""
        address = parse_address(peer)
        text = peer or "unknown"
        if forwarded_for and _within(address, self.trusted_proxies):
            for hop in reversed(forwarded_for.split(",")):
                address, text = parse_address(hop), hop.strip()[:64]
                if not _within(address, self.trusted_proxies):
                    break
        return Client(address, text)

    def allows(self, client: Client) -> bool:
        return not self.allowed or _within(client.address, self.allowed)
