"""A scripted DNS resolver and an address policy for the network-policy tests.

``ScriptedResolver`` replaces ``socket.getaddrinfo`` in the test process, which is what the
portal, imaplib and urllib3 all call to resolve a name: a scripted name answers its next list
of addresses at each lookup (the last list repeats), so a test can play a DNS rebinding
attack (a public answer first, 127.0.0.1 next). Every other name and every IP literal goes to
the real resolver.

Tests cannot reach a real public address, so ``treat_as_public`` lets chosen loopback
addresses (127.0.0.2, 127.0.0.3 — Linux answers on all of 127/8) count as public for the
policy, while 127.0.0.1 stays internal. Servers then listen on those addresses to stand for
the "public" hosts.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter

import pytest


class ScriptedResolver:
    def __init__(self, real=socket.getaddrinfo) -> None:
        self._real = real
        self._scripts: dict[str, list[list[str]]] = {}
        self.lookups: Counter[str] = Counter()

    def script(self, name: str, *answers: list[str]) -> None:
        """From now on, lookup N of ``name`` answers ``answers[N]`` (the last one from then on)."""
        self._scripts[name.lower()] = [list(a) for a in answers]
        self.lookups[name.lower()] = 0

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - getaddrinfo's names
        name = host.decode() if isinstance(host, bytes) else host
        script = self._scripts.get((name or "").lower())
        if script is None:
            return self._real(host, port, family, type, proto, flags)
        index = self.lookups[name.lower()]
        self.lookups[name.lower()] += 1
        answer = script[min(index, len(script) - 1)]
        results = []
        for address in answer:
            ip = ipaddress.ip_address(address)
            if family not in (0, socket.AF_UNSPEC) and family != (socket.AF_INET if ip.version == 4 else socket.AF_INET6):
                continue
            port_number = int(port or 0)
            if ip.version == 4:
                results.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port_number)))
            else:
                results.append((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port_number, 0, 0)))
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return results


@pytest.fixture
def resolver(monkeypatch) -> ScriptedResolver:
    fake = ScriptedResolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def treat_as_public(monkeypatch, *addresses: str) -> None:
    """Make the network policy count ``addresses`` as public (the real rules for all others)."""
    from connectors import netpolicy

    chosen = {ipaddress.ip_address(a) for a in addresses}
    real = netpolicy.is_public_address

    def policy(ip) -> bool:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0]) if isinstance(ip, str) else ip
        return parsed in chosen or real(parsed)

    monkeypatch.setattr(netpolicy, "is_public_address", policy)
