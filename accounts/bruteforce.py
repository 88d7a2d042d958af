"""Brute-force protection for login, password re-checks and password reset: which counters, which limits.

Login failures count per (address typed, client address) and, with a looser limit, per client
address alone; reaching either locks that subject out for one window (LEGACYFLO_LOGIN_*). While
locked, the password is not even checked, so a correct guess is worthless. The counters are kept
for any address typed, registered or not, and the answer is the same either way: nothing tells
whether an account exists. A successful login clears its own (account, address) counter only —
the per-address counter keeps running, or one valid account would let an attacker reset it.

A signed-in person retyping their password (the old password on the password change page) is a
login attempt too, or a stolen session would guess without limit: it shares the login counters
and lockouts, and its failures also count per account whatever the client address, so a session
used from many addresses gets no more guesses. That per-account lock only stops such re-checks,
never the login itself (anyone could trigger it for someone else's login).

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


def _recheck_limit() -> Limit:
    return Limit("recheck-account", settings.LEGACYFLO_LOGIN_MAX_FAILURES, settings.LEGACYFLO_LOGIN_WINDOW_SECONDS)


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


def _counters(email: str, request: HttpRequest, *, signed_in: bool = False) -> list[tuple[Limit, str, str]]:
    """(limit, subject, scope) of every counter an attempt for ``email`` from this client feeds."""
    pair_limit, ip_limit = _login_limits()
    network = client_network(request)
    counters = [(pair_limit, f"{_email(email)}|{network}", "account+ip"), (ip_limit, network, "ip")]
    if signed_in:
        counters.append((_recheck_limit(), _email(email), "account"))
    return counters


def _locked_for(counters: list[tuple[Limit, str, str]]) -> int:
    return max(throttle.locked_for(limit, subject) for limit, subject, _ in counters)


def _count_failure(counters: list[tuple[Limit, str, str]], *, email: str, request: HttpRequest,
                   actor=None, detail: dict | None = None) -> int:
    """Count one failed password on every counter; log and audit the lockouts it starts."""
    locked = 0
    for limit, subject, scope in counters:
        seconds = throttle.hit(limit, subject)
        if seconds:
            locked = max(locked, seconds)
            log.warning("login lockout (%s) for %s from %s: %d failures, %d s", scope, _email(email),
                        client_network(request), limit.attempts, seconds)
            audit_account(email=email, action="auth.lockout", request=request, actor=actor,
                          detail={"scope": scope, "failures": limit.attempts,
                                  "minutes": math.ceil(seconds / 60), **(detail or {})})
    return locked


def login_locked_for(*, email: str, request: HttpRequest) -> int:
    """Seconds before this email may try to log in from this client again (0: it may now)."""
    return _locked_for(_counters(email, request))


def login_blocked(*, email: str, request: HttpRequest) -> None:
    """An attempt refused because of a lockout (its password was not checked)."""
    audit_account(email=email, action="auth.login_blocked", request=request)


def login_failed(*, email: str, request: HttpRequest) -> int:
    """Count a failed login; return the lockout's length in seconds if it started one, else 0."""
    return _count_failure(_counters(email, request), email=email, request=request)


def login_succeeded(*, email: str, request: HttpRequest) -> None:
    pair_limit, _ = _login_limits()
    throttle.clear(pair_limit, f"{_email(email)}|{client_network(request)}")


def recheck_locked_for(*, user, request: HttpRequest) -> int:
    """Seconds before this signed-in user may retype their password here (0: they may now)."""
    return _locked_for(_counters(user.email, request, signed_in=True))


def recheck_blocked(*, user, request: HttpRequest, purpose: str) -> None:
    """A password re-check refused because of a lockout (the password was not checked)."""
    audit_account(email=user.email, actor=user, action="auth.recheck_blocked", request=request,
                  detail={"purpose": purpose})


def recheck_failed(*, user, request: HttpRequest, purpose: str) -> int:
    """Count a wrong password retyped by a signed-in user; return the lockout it started, else 0.

    Audited like a failed login (``auth.recheck_failed``): the password check sends no signal.
    """
    audit_account(email=user.email, actor=user, action="auth.recheck_failed", request=request,
                  detail={"purpose": purpose})
    return _count_failure(_counters(user.email, request, signed_in=True), email=user.email,
                          request=request, actor=user, detail={"purpose": purpose})


def recheck_succeeded(*, user, request: HttpRequest) -> None:
    """The right password clears what a successful login clears, plus the per-account re-check count."""
    login_succeeded(email=user.email, request=request)
    throttle.clear(_recheck_limit(), _email(user.email))


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
