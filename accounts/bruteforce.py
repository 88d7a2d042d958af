"""Brute-force protection for the login and password-reset pages: which counters, which limits.

Login failures count per (address typed, client address) and, with a looser limit, per client
address alone; reaching either locks that subject out for one window (LEGACYFLO_LOGIN_*). While
locked, the password is not even checked, so a correct guess is worthless. The counters are kept
for any address typed, registered or not, and the answer is the same either way: nothing tells
whether an account exists. A successful login clears its own (account, address) counter only —
the per-address counter keeps running, or one valid account would let an attacker reset it.

Password reset mails are limited per address asked for and per client address
(LEGACYFLO_PASSWORD_RESET_*); a refused request still gets the same generic answer.

Failures, lockouts and blocked attempts about an existing account go to its tenants' audit logs;
lockouts are also logged (``legacyflo.security``) for tools such as fail2ban.
"""

from __future__ import annotations

import ipaddress
import logging
import math

from django.conf import settings
from django.http import HttpRequest

from accounts import throttle
from accounts.audit import audit_account
from accounts.clientip import client_ip
from accounts.throttle import Limit

log = logging.getLogger("legacyflo.security")

# An IPv6 client usually holds a whole /64: throttling single addresses would let it rotate freely.
IPV6_PREFIX = 64


def _login_limits() -> tuple[Limit, Limit]:
    window = settings.LEGACYFLO_LOGIN_WINDOW_SECONDS
    return (Limit("login-account-ip", settings.LEGACYFLO_LOGIN_MAX_FAILURES, window),
            Limit("login-ip", settings.LEGACYFLO_LOGIN_IP_MAX_FAILURES, window))


def _reset_limits() -> tuple[Limit, Limit]:
    window = settings.LEGACYFLO_PASSWORD_RESET_WINDOW_SECONDS
    return (Limit("reset-email", settings.LEGACYFLO_PASSWORD_RESET_MAX_PER_EMAIL, window),
            Limit("reset-ip", settings.LEGACYFLO_PASSWORD_RESET_MAX_PER_IP, window))


def client_network(request: HttpRequest | None) -> str:
    """The client address the throttles count: IPv4 as is, IPv6 as its /64 network."""
    ip = client_ip(request)
    if ip is None:
        return "unknown"
    if ipaddress.ip_address(ip).version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return ip


def _email(email: str) -> str:
    return email.strip().lower()


def lockout_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def login_locked_for(*, email: str, request: HttpRequest) -> int:
    """Seconds before this email may try to log in from this client again (0: it may now)."""
    pair_limit, ip_limit = _login_limits()
    network = client_network(request)
    return max(throttle.locked_for(pair_limit, f"{_email(email)}|{network}"),
               throttle.locked_for(ip_limit, network))


def login_blocked(*, email: str, request: HttpRequest) -> None:
    """An attempt refused because of a lockout (its password was not checked)."""
    audit_account(email=email, action="auth.login_blocked", request=request)


def login_failed(*, email: str, request: HttpRequest) -> int:
    """Count a failed login; return the lockout's length in seconds if it started one, else 0."""
    pair_limit, ip_limit = _login_limits()
    network = client_network(request)
    locked = 0
    for limit, subject, scope in ((pair_limit, f"{_email(email)}|{network}", "account+ip"),
                                  (ip_limit, network, "ip")):
        seconds = throttle.hit(limit, subject)
        if seconds:
            locked = max(locked, seconds)
            log.warning("login lockout (%s) for %s from %s: %d failures, %d s", scope, _email(email),
                        network, limit.attempts, seconds)
            audit_account(email=email, action="auth.lockout", request=request,
                          detail={"scope": scope, "failures": limit.attempts, "minutes": math.ceil(seconds / 60)})
    return locked


def login_succeeded(*, email: str, request: HttpRequest) -> None:
    pair_limit, _ = _login_limits()
    throttle.clear(pair_limit, f"{_email(email)}|{client_network(request)}")


def password_reset_allowed(*, email: str, request: HttpRequest | None) -> bool:
    """Whether to send a reset mail for this request; counts it when it is sent."""
    email_limit, ip_limit = _reset_limits()
    network = client_network(request)
    if throttle.locked_for(email_limit, _email(email)) or throttle.locked_for(ip_limit, network):
        log.warning("password reset throttled for %s from %s", _email(email), network)
        audit_account(email=email, action="auth.password_reset_throttled", request=request)
        return False
    throttle.hit(email_limit, _email(email))
    throttle.hit(ip_limit, network)
    return True
