"""Connect only to public addresses: the SSRF guard for every host a tenant types.

A multi-tenant portal that connects to hosts its users type in (IMAP servers, S3 endpoints)
must not become a way to reach the operator's internal network. Operators who do want
internal targets (and the tests) set ``LEGACYFLO_ALLOW_PRIVATE_NETWORKS``; then nothing here
resolves or refuses anything and connections go by name as the libraries make them.

Invariants, when private networks are not allowed:
- a connection resolves the name once, refuses it if *any* answer is not public (a name with
  one public and one private address cannot slip through), and connects to one of exactly
  those checked addresses (``open_connection``). Nothing resolves the name a second time
  between the check and the connect, so a DNS answer that changes (rebinding) cannot redirect
  the connection. TLS still verifies the certificate against the host name, and HTTP still
  sends the name as Host: only the TCP connect uses the checked address.
- every new connection (a reconnect, another pooled HTTP connection) is checked again.
- "public" is ``is_public_address``: globally reachable unicast by the IANA special-purpose
  registries (IPv6: inside 2000::/3 only); an IPv6 address that embeds an IPv4 one (IPv4-mapped,
  NAT64 64:ff9b::/96, 6to4) is judged by the IPv4 address it reaches too; Teredo, the
  IPv4-compatible form and the local-use NAT64 prefix are refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from connectors.model import ConnectionFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrivateAddressRefused(ConnectionFailed):
    pass


def _networks(*cidrs: str) -> tuple:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# IANA IPv4 special-purpose ranges that are not globally reachable, spelled out so the rules do
# not depend on the Python version's ``is_global`` (which has changed between releases).
_IPV4_NOT_GLOBAL = _networks(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")  # everything else (fec0::/10, fc00::/7, ...) is out
_IPV6_NOT_GLOBAL = _networks(
    "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID, ...
    "2001:db8::/32", "3fff::/20",  # documentation
)
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix; 64:ff9b:1::/48 is local use: refused
# IPv4-compatible addresses (::a.b.c.d, deprecated by RFC 4291; old stacks tunnel them to the
# IPv4 address) lie outside 2000::/3 and are refused whatever they embed, as Teredo is.


def _ipv4_is_public(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _IPV4_NOT_GLOBAL)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to ``ip`` reaches, for IPv4-mapped and NAT64 addresses."""
    if ip in _IPV4_MAPPED or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress | str) -> bool:
    """True when ``ip`` is globally reachable unicast, embedded IPv4 included (see module docstring)."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 scope id ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_is_public(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return _ipv4_is_public(embedded)
    if ip not in _IPV6_GLOBAL_UNICAST or not ip.is_global or any(ip in net for net in _IPV6_NOT_GLOBAL):
        return False
    if ip.sixtofour is not None:  # 2002:V4ADDR::/48 reaches V4ADDR through a 6to4 relay
        return _ipv4_is_public(ip.sixtofour)
    return ip.teredo is None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one lookup), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectionFailed(f"The host name {host!r} cannot be resolved ({exc.strerror}).") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def public_addresses(host: str, port: int) -> list[str]:
    """Resolve ``host`` once; return its addresses if every one is public, else refuse the host."""
    if not host:
        raise ConnectionFailed("No host name was given.")
    addresses = resolve(host, port)
    if not addresses:
        raise ConnectionFailed(f"The host name {host!r} has no address.")
    for address in addresses:
        if not is_public_address(address):
            address = address.split("%", 1)[0]
            what = (f"{host} is an internal address" if address == host.strip("[]")
                    else f"{host} resolves to the internal address {address}")
            raise PrivateAddressRefused(
                f"{what}; connections to loopback, private, link-local and other non-public "
                "networks are disabled on this portal (the operator can allow them with "
                "LEGACYFLO_ALLOW_PRIVATE_NETWORKS=1)."
            )
    return addresses


def ensure_public_host(host: str, port: int, *, allow_private: bool) -> None:
    """Raise PrivateAddressRefused unless every address of ``host`` is public (or private is allowed).

    An early check for clear messages only: what protects a connection is ``open_connection``.
    """
    if not host:
        raise ConnectionFailed("No host name was given.")
    if not allow_private:
        public_addresses(host, port)


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionFailed(f"{url!r} is not an http(s) URL.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConnectionFailed(f"{url!r} has an invalid port.") from exc
    return parts.hostname, port


def ensure_public_url(url: str, *, allow_private: bool) -> None:
    host, port = url_host_port(url)
    ensure_public_host(host, port, allow_private=allow_private)


Connect = Callable[..., socket.socket]


def open_connection(host: str, port: int, timeout, *, allow_private: bool,
                    connect: Connect = socket.create_connection, **options) -> socket.socket:
    """A TCP connection to ``host``: by name when private networks are allowed, otherwise to one
    of the checked addresses of a single resolution, tried in order.

    ``connect((address, port), timeout, **options)`` makes one attempt (``socket.create_connection``,
    or urllib3's for its socket options); a refused host raises PrivateAddressRefused before any
    connection is attempted.
    """
    if not host:
        raise ConnectionFailed("No host name was given.")
    if allow_private:
        return connect((host, port), timeout, **options)
    error: OSError | None = None
    for address in public_addresses(host, port):
        try:
            return connect((address, port), timeout, **options)
        except OSError as exc:
            error = exc
    raise error  # type: ignore[misc]  # public_addresses() never returns an empty list
