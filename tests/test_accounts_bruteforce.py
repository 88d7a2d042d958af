"""Brute-force protection on login and password reset, through the real views, cache (Redis) and audit log."""

from __future__ import annotations

import re
import time

import pytest
from django.core import mail
from django.test import RequestFactory

from accounts.bruteforce import client_network
from accounts.clientip import client_ip
from accounts.models import AuditEvent
from tests.conftest import PASSWORD

LOGIN = "/accounts/login/"
RESET = "/accounts/password/reset/"
LOCKED_TEXT = "Too many failed attempts. Try again in"


def end_windows_now(db) -> None:
    """Let every counter's and lock's window end now: expire the keys as Redis would later."""
    for key in db.keys("*throttle*"):
        db.pexpire(key, 1)
    time.sleep(0.05)


def log_in(client, email, password, ip="198.51.100.7", **extra):
    return client.post(LOGIN, {"username": email, "password": password}, REMOTE_ADDR=ip, **extra)


def actions(tenant) -> list[str]:
    return list(AuditEvent.objects.filter(tenant=tenant).order_by("id").values_list("action", flat=True))


def page_text(response, email: str) -> str:
    """The page without what legitimately differs: the address typed and the CSRF token."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode().replace(email, "EMAIL"))


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_lockout_after_n_failures_refuses_the_right_password(client, limits, owner, tenant):
    for _ in range(2):
        response = log_in(client, owner.email, "wrong")
        assert response.status_code == 200 and "didn't match" in response.content.decode()
    third = log_in(client, owner.email, "wrong")
    assert third.status_code == 429
    assert f"{LOCKED_TEXT} 15 minutes." in third.content.decode()

    blocked = log_in(client, owner.email, PASSWORD)
    assert blocked.status_code == 429 and LOCKED_TEXT in blocked.content.decode()
    assert not logged_in(client)
    assert actions(tenant) == ["auth.login_failed"] * 3 + ["auth.lockout", "auth.login_blocked"]
    lockout = AuditEvent.objects.get(tenant=tenant, action="auth.lockout")
    assert lockout.target == owner.email and lockout.ip_address == "198.51.100.7"
    assert lockout.detail == {"scope": "account+ip", "failures": 3, "minutes": 15}


@pytest.mark.django_db
def test_lockout_is_per_client_address(client, limits, owner):
    for _ in range(3):
        log_in(client, owner.email, "wrong", ip="198.51.100.7")
    assert log_in(client, owner.email, PASSWORD, ip="198.51.100.7").status_code == 429
    assert log_in(client, owner.email, PASSWORD, ip="203.0.113.50").status_code == 302
    assert logged_in(client)


@pytest.mark.django_db
def test_unknown_account_gets_the_same_answers_and_leaves_no_audit(client, limits, owner):
    known = [log_in(client, owner.email, "wrong") for _ in range(3)]
    unknown = [log_in(client, "nobody@acme.test", "wrong", ip="198.51.100.8") for _ in range(3)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [200, 200, 429]
    for a, b in zip(known, unknown, strict=True):
        assert page_text(a, owner.email) == page_text(b, "nobody@acme.test")
    assert not AuditEvent.objects.filter(target="nobody@acme.test").exists()


@pytest.mark.django_db
def test_unlock_after_the_window(client, limits, owner, throttle_db):
    for _ in range(3):
        log_in(client, owner.email, "wrong")
    assert log_in(client, owner.email, PASSWORD).status_code == 429
    (lock,) = throttle_db.keys("*throttle:login-account-ip:lock:*")
    assert 890 < throttle_db.ttl(lock) <= 900  # the lock lasts one window...
    end_windows_now(throttle_db)  # ...which we let pass at once
    assert log_in(client, owner.email, PASSWORD).status_code == 302 and logged_in(client)


@pytest.mark.django_db
def test_lockout_message_tells_the_remaining_minutes(client, limits, owner):
    limits.LEGACYFLO_LOGIN_WINDOW_SECONDS = 61
    for _ in range(2):
        log_in(client, owner.email, "wrong")
    assert f"{LOCKED_TEXT} 2 minutes." in log_in(client, owner.email, "wrong").content.decode()
    limits.LEGACYFLO_LOGIN_MAX_FAILURES = 1
    limits.LEGACYFLO_LOGIN_WINDOW_SECONDS = 60
    assert f"{LOCKED_TEXT} 1 minute." in log_in(client, "other@acme.test", "wrong").content.decode()


@pytest.mark.django_db
def test_successful_login_resets_the_counter(client, limits, owner):
    for _ in range(2):
        log_in(client, owner.email, "wrong")
    assert log_in(client, owner.email, PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(2):
        assert log_in(client, owner.email, "wrong").status_code == 200
    assert log_in(client, owner.email, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_per_address_limit_across_accounts(client, limits, owner, admin, tenant):
    for n in range(5):  # one or two failures per address typed: no account+ip lock, the address adds up
        response = log_in(client, f"guess{n % 3}@acme.test", "wrong")
    assert response.status_code == 429 and LOCKED_TEXT in response.content.decode()
    # Every account is refused from that address, with its right password...
    assert log_in(client, admin.email, PASSWORD).status_code == 429
    assert not logged_in(client)
    assert "auth.login_blocked" in actions(tenant)
    # ...and welcome from another.
    assert log_in(client, admin.email, PASSWORD, ip="203.0.113.50").status_code == 302


@pytest.mark.django_db
def test_ip_lockout_is_audited_in_the_account_that_triggered_it(client, limits, owner, tenant):
    limits.LEGACYFLO_LOGIN_IP_MAX_FAILURES = 3
    limits.LEGACYFLO_LOGIN_MAX_FAILURES = 10
    log_in(client, "someone@acme.test", "wrong")
    log_in(client, "someone-else@acme.test", "wrong")
    assert log_in(client, owner.email, "wrong").status_code == 429
    lockout = AuditEvent.objects.get(tenant=tenant, action="auth.lockout")
    assert lockout.detail["scope"] == "ip" and lockout.detail["failures"] == 3


@pytest.mark.django_db
def test_ipv6_clients_are_counted_per_64_network(client, limits, owner):
    for n in range(5):
        log_in(client, f"guess{n}@acme.test", "wrong", ip=f"2001:db8:1:2::{n + 1}")
    assert log_in(client, owner.email, PASSWORD, ip="2001:db8:1:2:ffff::1").status_code == 429
    assert log_in(client, owner.email, PASSWORD, ip="2001:db8:1:3::1").status_code == 302


@pytest.mark.django_db
def test_counters_live_in_redis_with_the_window_and_hashed_keys(client, limits, owner, throttle_db):
    log_in(client, owner.email, "wrong")
    keys = [key.decode() for key in throttle_db.keys("*throttle*")]
    assert len(keys) == 2 and all(":count:" in key for key in keys)
    assert not any(owner.email in key or "198.51.100.7" in key for key in keys)
    assert all(0 < throttle_db.ttl(key) <= 900 for key in keys)


@pytest.mark.django_db
def test_forwarded_for_is_ignored_by_default(client, limits, owner):
    for n in range(3):
        log_in(client, owner.email, "wrong", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    spoofed = log_in(client, owner.email, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert spoofed.status_code == 429


@pytest.mark.django_db
def test_client_address_from_the_configured_proxy_header(client, limits, owner, tenant):
    limits.LEGACYFLO_CLIENT_IP_HEADER = "X-Forwarded-For"
    limits.LEGACYFLO_TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    for _ in range(3):  # the client prepends junk; our one proxy appends the real address
        log_in(client, owner.email, "wrong", ip=proxy, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert log_in(client, owner.email, PASSWORD, ip=proxy,
                  HTTP_X_FORWARDED_FOR="7.7.7.7, 203.0.113.9").status_code == 429
    assert AuditEvent.objects.filter(tenant=tenant, action="auth.lockout", ip_address="203.0.113.9").exists()
    # Another client behind the same proxy is not locked out.
    assert log_in(client, owner.email, PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="203.0.113.10").status_code == 302


def test_client_ip_resolution(settings):
    factory = RequestFactory()

    def ip(remote="10.0.0.2", **headers):
        return client_ip(factory.get("/", REMOTE_ADDR=remote, **headers))

    settings.LEGACYFLO_CLIENT_IP_HEADER = ""
    assert ip(HTTP_X_FORWARDED_FOR="203.0.113.9") == "10.0.0.2"
    assert ip(remote="::ffff:198.51.100.1") == "198.51.100.1"
    settings.LEGACYFLO_CLIENT_IP_HEADER = "X-Forwarded-For"
    settings.LEGACYFLO_TRUSTED_PROXY_COUNT = 2
    assert ip(HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9, 192.0.2.1") == "203.0.113.9"
    assert ip(HTTP_X_FORWARDED_FOR="192.0.2.1") == "10.0.0.2"  # fewer entries than proxies
    assert ip(HTTP_X_FORWARDED_FOR="not-an-ip, 192.0.2.1") == "10.0.0.2"
    assert ip() == "10.0.0.2"
    settings.LEGACYFLO_CLIENT_IP_HEADER = "X-Real-IP"
    settings.LEGACYFLO_TRUSTED_PROXY_COUNT = 1
    assert ip(HTTP_X_REAL_IP="2001:db8::7") == "2001:db8::7"
    assert client_network(factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_REAL_IP="2001:db8::7")) == "2001:db8::/64"


@pytest.fixture
def reset_limits(settings):
    settings.LEGACYFLO_PASSWORD_RESET_MAX_PER_EMAIL = 2
    settings.LEGACYFLO_PASSWORD_RESET_MAX_PER_IP = 3
    settings.LEGACYFLO_PASSWORD_RESET_WINDOW_SECONDS = 3600
    return settings


def ask_reset(client, email, ip="198.51.100.7"):
    response = client.post(RESET, {"email": email}, REMOTE_ADDR=ip, follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/password/reset/sent/"
    assert "If an account uses that address" in response.content.decode()
    return response


@pytest.mark.django_db
def test_password_reset_is_throttled_per_email(client, reset_limits, owner, tenant):
    for _ in range(3):
        ask_reset(client, owner.email)
    assert len(mail.outbox) == 2
    assert actions(tenant) == ["auth.password_reset_throttled"]
    ask_reset(client, owner.email, ip="203.0.113.50")  # the address itself is throttled, from anywhere
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_password_reset_is_throttled_per_client(client, reset_limits, owner, admin, operator, viewer):
    ask_reset(client, "nobody@acme.test")  # counts, sends nothing, answers the same
    for user in (owner, admin):
        ask_reset(client, user.email)
    ask_reset(client, operator.email)
    assert [m.to for m in mail.outbox] == [[owner.email], [admin.email]]
    ask_reset(client, viewer.email, ip="203.0.113.50")
    assert len(mail.outbox) == 3


@pytest.mark.django_db
def test_password_reset_unlocks_after_its_window(client, reset_limits, owner, throttle_db):
    for _ in range(3):
        ask_reset(client, owner.email)
    assert len(mail.outbox) == 2
    (lock,) = throttle_db.keys("*throttle:reset-email:lock:*")
    assert 3590 < throttle_db.ttl(lock) <= 3600
    end_windows_now(throttle_db)
    ask_reset(client, owner.email)
    assert len(mail.outbox) == 3
