"""The SSRF guard: which URLs outbound requests (webhooks) may reach, and at which address.

A URL passes when its scheme is ``http`` or ``https`` and **every** address its host resolves to
is a public unicast address, or lies in ``CALLBOARD_WEBHOOK_ALLOWED_NETWORKS``. Refused: private
(10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local (169.254/16, the cloud metadata
address included; fe80::/10), multicast, reserved, unspecified, shared (100.64/10) and every other
non-global range, for IPv4 and IPv6; IPv6 forms that carry an IPv4 address (mapped
``::ffff:127.0.0.1``, 6to4, Teredo, NAT64 ``64:ff9b::/96``) are judged as that IPv4 address.

The caller connects to the address that was checked (:attr:`Destination.address`), not to the
name again, so a DNS answer that changes between the check and the connection (DNS rebinding)
cannot move the request to a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.errors import DestinationRefusedError, TemporaryDeliveryError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DEFAULT_PORTS = {"http": 80, "https": 443}

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class Destination:
    """A URL that passed the guard: its scheme, host name, port and the checked address."""

    scheme: str
    host: str
    port: int
    address: IPAddress

    def pinned_url(self, url: str) -> str:
        """``url`` with its host replaced by the checked address (the ``Host`` header and TLS
        server name must still carry :attr:`host`)."""
        parts = urlsplit(url)
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo + '@' if userinfo else ''}{shown}:{self.port}"
        return parts._replace(netloc=netloc).geturl()


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The allowed networks from their setting (``127.0.0.1/32``, ``10.0.0.0/8``, ``::1``)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def refusal(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why ``address`` may not be reached (``"loopback"``, ``"private"`` ...), or ``None``."""
    if isinstance(address, ipaddress.IPv6Address):
        address = _embedded_ipv4(address) or address
    if any(address in network for network in allowed if network.version == address.version):
        return None
    for reason in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{reason}"):
            return reason
    if not address.is_global:
        return "not_global"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # IPv6 forms that reach an IPv4 address are judged as that address: mapped (::ffff:a.b.c.d),
    # 6to4 (2002::/16), Teredo's client (2001::/32) and NAT64 (64:ff9b::/96).
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_url(url: str, allowed: Iterable[IPNetwork] = ()) -> Destination:
    """Resolve ``url``'s host and return the :class:`Destination` to connect to.

    Raises :class:`DestinationRefusedError` (never retried) for another scheme, a URL without a
    host, or a host with any refused address; :class:`TemporaryDeliveryError` when the name does
    not resolve now (DNS may recover).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise DestinationRefusedError(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise DestinationRefusedError(f"scheme {scheme or '(none)'!r} refused: only http and https")
    host = parts.hostname
    if not host:
        raise DestinationRefusedError("URL has no host")
    port = port or _DEFAULT_PORTS[scheme]
    addresses = _resolve(host, port)
    allowed = tuple(allowed)
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            raise DestinationRefusedError(
                f"host {host!r} resolves to {address} ({reason}); "
                "allow it with CALLBOARD_WEBHOOK_ALLOWED_NETWORKS"
            )
    return Destination(scheme, host, port, addresses[0])


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise TemporaryDeliveryError(f"cannot resolve {host!r}: {error}") from None
    # Scope ids ("fe80::1%eth0") are not part of the address the guard judges.
    found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not found:
        raise TemporaryDeliveryError(f"cannot resolve {host!r}: no address")
    return list(dict.fromkeys(found))
