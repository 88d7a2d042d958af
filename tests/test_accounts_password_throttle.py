"""Guessing the old password on the password change page is throttled like a login (real Redis, views, audit)."""

from __future__ import annotations

import pytest

from accounts.models import AuditEvent, User
from tests.conftest import PASSWORD
from tests.test_accounts_bruteforce import LOCKED_TEXT, actions, end_windows_now, log_in

CHANGE = "/accounts/password/change/"
NEW = "another-good-password-7"
WRONG_TEXT = "Your old password was entered incorrectly."


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    """A cheap hasher: these tests check many passwords, and the throttle does not care how they are hashed."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def change(client, old, ip="198.51.100.7"):
    return client.post(CHANGE, {"old_password": old, "new_password1": NEW, "new_password2": NEW}, REMOTE_ADDR=ip)


def password_is(user, password) -> bool:
    return User.objects.get(pk=user.pk).check_password(password)


@pytest.mark.django_db
def test_wrong_old_passwords_lock_out_password_change(client, limits, owner, tenant):
    client.force_login(owner)
    for _ in range(2):
        response = change(client, "wrong")
        assert response.status_code == 200 and WRONG_TEXT in response.content.decode()
    third = change(client, "wrong")
    assert third.status_code == 429 and f"{LOCKED_TEXT} 15 minutes." in third.content.decode()

    blocked = change(client, PASSWORD)
    assert blocked.status_code == 429 and LOCKED_TEXT in blocked.content.decode()
    assert password_is(owner, PASSWORD)
    assert actions(tenant) == (["auth.login"] + ["auth.recheck_failed"] * 3 + ["auth.lockout"] * 2
                               + ["auth.recheck_blocked"])
    lockouts = AuditEvent.objects.filter(tenant=tenant, action="auth.lockout").order_by("id")
    assert [e.detail["scope"] for e in lockouts] == ["account+ip", "account"]
    assert all(e.actor == owner and e.ip_address == "198.51.100.7" and e.target == owner.email
               and e.detail["purpose"] == "password_change" for e in lockouts)


@pytest.mark.django_db
def test_password_change_unlocks_after_the_window(client, limits, owner, throttle_db):
    client.force_login(owner)
    for _ in range(3):
        change(client, "wrong")
    assert change(client, PASSWORD).status_code == 429
    locks = throttle_db.keys("*throttle:*:lock:*")
    assert len(locks) == 2 and all(890 < throttle_db.ttl(lock) <= 900 for lock in locks)
    end_windows_now(throttle_db)
    assert change(client, PASSWORD).status_code == 302 and password_is(owner, NEW)


@pytest.mark.django_db
def test_another_user_is_unaffected(client, limits, owner, admin):
    client.force_login(owner)
    for _ in range(3):
        change(client, "wrong")
    client.force_login(admin)  # same client address, another account
    assert change(client, PASSWORD).status_code == 302 and password_is(admin, NEW)


@pytest.mark.django_db
def test_right_old_password_before_the_limit_works_and_resets_the_count(client, limits, owner):
    client.force_login(owner)
    for _ in range(2):
        change(client, "wrong")
    assert change(client, PASSWORD).status_code == 302 and password_is(owner, NEW)
    for _ in range(2):  # the two earlier failures were forgotten, as after a successful login
        assert change(client, "wrong").status_code == 200
    assert change(client, NEW).status_code == 302


@pytest.mark.django_db
def test_login_and_password_change_share_their_counters(client, limits, owner):
    """A stolen session gains no guesses by alternating between the login and password change pages."""
    log_in(client, owner.email, "wrong")
    log_in(client, owner.email, "wrong")
    client.force_login(owner)
    assert change(client, "wrong").status_code == 429
    client.logout()
    assert log_in(client, owner.email, PASSWORD).status_code == 429


@pytest.mark.django_db
def test_a_session_used_from_many_addresses_is_counted_per_account(client, limits, owner):
    client.force_login(owner)
    for n in range(3):
        response = change(client, "wrong", ip=f"203.0.113.{n + 1}")
    assert response.status_code == 429
    assert change(client, PASSWORD, ip="203.0.113.99").status_code == 429
    # That per-account lock only stops re-checks: anyone could set it off against someone's login.
    client.logout()
    assert log_in(client, owner.email, PASSWORD, ip="203.0.113.99").status_code == 302
