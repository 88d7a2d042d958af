"""The client's IP address, as far as the deployment says it can be trusted.

By default that is the connection's peer (``REMOTE_ADDR``). Behind reverse proxies the operator
names the header they set (``LEGACYFLO_CLIENT_IP_HEADER``) and how many of them append to it
(``LEGACYFLO_TRUSTED_PROXY_COUNT``). Each proxy appends the address it received the request from,
so with N proxies the client is the N-th entry from the right; entries further left were written
by the client and are never believed. A header that is missing, too short or not an address
falls back to ``REMOTE_ADDR``: a client reaching the portal around the proxy cannot pick its address.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _valid_ip(value: str) -> str | None:
    """The address in canonical form (an IPv4-mapped IPv6 address as plain IPv4), or None."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _meta_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address as a normalised string, or None when there is no usable one."""
    if request is None:
        return None
    peer = _valid_ip(request.META.get("REMOTE_ADDR") or "")
    header = settings.LEGACYFLO_CLIENT_IP_HEADER
    if not header:
        return peer
    entries = [item for item in request.META.get(_meta_key(header), "").split(",") if item.strip()]
    count = settings.LEGACYFLO_TRUSTED_PROXY_COUNT
    if len(entries) < count:
        return peer
    return _valid_ip(entries[-count]) or peer
