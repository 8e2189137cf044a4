"""The outgoing address policy: which hosts a user-supplied URL may reach.

Webhook targets are chosen by users, so without a policy any user could make
the workers call loopback services, cloud metadata endpoints or the site's
private network (and read what they answered from the delivery log). An
address is refused when it is not globally routable (loopback, link-local,
private, unique-local, shared, reserved, documentation), multicast or
unspecified, in any notation (``127.1``, ``2130706433``, ``0x7f000001``,
``::ffff:127.0.0.1``), unless a network in ``ALLOWED_TARGET_NETWORKS``
covers it. The check runs when a subscription is saved (IP literals, known
internal names, and whatever the name resolves to then) and again on the
address each connection actually reaches (``delivery``), so a name that
resolves elsewhere later (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pacifica.dispatcher.errors import ConfigurationError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str], list[str]]

# Names that mean an internal address whatever DNS says (cloud metadata services, loopback).
INTERNAL_NAMES: dict[str, tuple[str, ...]] = {
    "localhost": ("127.0.0.1", "::1"),
    "metadata": ("169.254.169.254",),
    "metadata.google.internal": ("169.254.169.254",),
    "instance-data": ("169.254.169.254",),
    "instance-data.ec2.internal": ("169.254.169.254",),
}


class AddressNotAllowedError(OSError):
    """A connection would reach an address the outgoing policy refuses."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """``ALLOWED_TARGET_NETWORKS``: comma- or space-separated CIDRs (``127.0.0.0/8, ::1/128``).

    Raises:
        ValueError: an entry is not a network.
    """
    entries = [part for part in text.replace(",", " ").split() if part]
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as exc:
        raise ValueError(f"expected comma-separated CIDR networks, got {text!r}: {exc}") from exc


def ip_literal(host: str) -> Address | None:
    """The address a URL host denotes when it is an IP literal in any notation, else None."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not bare or not all(c in "0123456789abcdefxABCDEFX." for c in bare):
        return None
    try:  # the forms inet_aton (and so every resolver) accepts: 127.1, 2130706433, 0x7f000001
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _unwrapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return embedded
    return address


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to now; [] when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in found]


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses internal addresses unless one of ``allowed`` covers them."""

    allowed: tuple[Network, ...] = ()
    resolve: Resolve = resolve_host

    def permits(self, address: Address | str) -> bool:
        """True when a connection to ``address`` is allowed."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address.split("%", 1)[0])
        if any(address in network for network in self.allowed):
            return True
        inner = _unwrapped(address)
        if any(inner in network for network in self.allowed):
            return True
        return inner.is_global and not inner.is_multicast and not address.is_multicast

    def refused_addresses(self, host: str) -> list[str]:
        """The addresses of ``host`` (a URL host) that are refused; [] when all are allowed."""
        literal = ip_literal(host)
        if literal is not None:
            candidates: Sequence[str] = [str(literal)]
        else:
            name = host.rstrip(".").lower()
            if name in INTERNAL_NAMES:
                candidates = INTERNAL_NAMES[name]
            elif name.endswith(".localhost"):
                candidates = INTERNAL_NAMES["localhost"]
            else:
                candidates = self.resolve(name)
        return [a for a in candidates if not self.permits(a)]


def policy_from(networks: Iterable[str] | str | None) -> AddressPolicy:
    """An ``AddressPolicy`` from the setting's text (or a list of CIDRs).

    Raises:
        ConfigurationError: an entry is not a network.
    """
    if not networks:
        return AddressPolicy()
    text = networks if isinstance(networks, str) else ",".join(networks)
    try:
        return AddressPolicy(parse_networks(text))
    except ValueError as exc:
        raise ConfigurationError(f"ALLOWED_TARGET_NETWORKS: {exc}") from exc
