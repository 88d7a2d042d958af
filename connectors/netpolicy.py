"""Refuse connections to loopback, private, link-local and other internal addresses.

A multi-tenant portal that connects to hosts its users type in (IMAP servers, S3 endpoints)
must not become a way to probe the operator's internal network (SSRF). Operators who do want
internal targets (and the tests) set ``LEGACYFLO_ALLOW_PRIVATE_NETWORKS``.

The check resolves the name and rejects it if *any* address is internal, so a name with one
public and one private address cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from connectors.base import ConnectionFailed


class PrivateAddressRefused(ConnectionFailed):
    pass


def _is_internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
    )


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectionFailed(f"The host name {host!r} cannot be resolved ({exc.strerror}).") from exc
    return sorted({info[4][0] for info in infos})


def ensure_public_host(host: str, port: int, *, allow_private: bool) -> None:
    """Raise PrivateAddressRefused unless every address of ``host`` is public (or private is allowed)."""
    if not host:
        raise ConnectionFailed("No host name was given.")
    if allow_private:
        return
    for address in resolve(host, port):
        if _is_internal(ipaddress.ip_address(address.split("%", 1)[0])):
            raise PrivateAddressRefused(
                f"{host} resolves to the internal address {address}; connections to loopback, "
                "private and link-local networks are disabled on this portal "
                "(the operator can allow them with LEGACYFLO_ALLOW_PRIVATE_NETWORKS=1)."
            )


def ensure_public_url(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionFailed(f"{url!r} is not an http(s) URL.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ensure_public_host(parts.hostname, port, allow_private=allow_private)
