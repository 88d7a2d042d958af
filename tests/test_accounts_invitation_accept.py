"""Accepting an invitation with a new account is all or nothing, whatever happens meanwhile (real views, DB)."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core import mail
from django.db import connections
from django.test import Client
from django.utils import timezone

from accounts.models import Invitation, Membership, User

EMAIL = "new.person@acme.test"
NEW_PASSWORD = "brand-new-password-9"
FORM = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}


class WindowHasher(MD5PasswordHasher):
    """A cheap hasher that first runs the next queued hook, once.

    The view hashes the new password after reading the invitation and before locking it, so a
    hook lands exactly in the window where another request, an expiry or a revocation can strike.
    """

    hooks: list = []

    def encode(self, password, salt):
        if self.hooks:
            self.hooks.pop(0)()
        return super().encode(password, salt)


@pytest.fixture
def while_hashing(settings):
    """``while_hashing(fn)`` runs ``fn`` inside the next password hashing."""
    settings.PASSWORD_HASHERS = [f"{__name__}.WindowHasher"]
    yield WindowHasher.hooks.append
    WindowHasher.hooks.clear()


@pytest.fixture
def token_path(client, admin, tenant):
    client.force_login(admin)
    client.post(f"/t/{tenant.slug}/members/invite/", {"email": EMAIL, "role": "operator"})
    client.logout()
    return re.search(r"/invite/\S+/", mail.outbox[-1].body).group(0)


def accounts_and_memberships() -> tuple[int, int]:
    return User.objects.filter(email=EMAIL).count(), Membership.objects.filter(user__email=EMAIL).count()


def page(response) -> str:
    return response.content.decode()


@pytest.mark.django_db
def test_second_submit_after_the_first_is_refused(client, token_path, tenant):
    assert client.post(token_path, FORM)["Location"] == f"/t/{tenant.slug}/"
    again = client.post(token_path, FORM)  # the same browser, now signed in
    elsewhere = Client().post(token_path, FORM)
    assert again.status_code == elsewhere.status_code == 404
    assert "already used" in page(elsewhere)
    assert accounts_and_memberships() == (1, 1)


@pytest.mark.django_db
def test_submit_that_read_the_invitation_before_another_accepted_it(client, token_path, tenant, while_hashing):
    """The second submit read the invitation while it was pending; the first completes in between."""
    first = []
    while_hashing(lambda: first.append(Client().post(token_path, FORM)))
    second = client.post(token_path, FORM, follow=True)
    assert first[0].status_code == 302 and first[0]["Location"] == f"/t/{tenant.slug}/"
    assert second.redirect_chain == [("/accounts/login/", 302)]
    assert "This invitation has already been used." in page(second)
    assert accounts_and_memberships() == (1, 1)
    assert Membership.objects.get(user__email=EMAIL).role == "operator"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_submits_make_one_account(token_path, tenant, while_hashing):
    """Both requests have read the pending invitation before either writes: the row lock decides."""
    both_read = threading.Barrier(2, timeout=30)
    while_hashing(both_read.wait)
    while_hashing(both_read.wait)
    results = []

    def submit():
        try:
            results.append(Client().post(token_path, FORM))
        except Exception as exc:  # a 500 surfaces here through the test client
            results.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r["Location"] for r in results) == ["/accounts/login/", f"/t/{tenant.slug}/"]
    assert accounts_and_memberships() == (1, 1)


@pytest.mark.django_db
@pytest.mark.parametrize("meanwhile", ["expired", "revoked"])
def test_invitation_gone_meanwhile_leaves_no_account(client, token_path, while_hashing, meanwhile):
    invitations = Invitation.objects.filter(email=EMAIL)
    if meanwhile == "expired":
        while_hashing(lambda: invitations.update(expires_at=timezone.now() - timedelta(seconds=1)))
    else:
        while_hashing(lambda: invitations.delete())
    response = client.post(token_path, FORM, follow=True)
    assert response.redirect_chain == [("/accounts/login/", 302)]
    assert "This invitation has expired or was withdrawn." in page(response)
    assert accounts_and_memberships() == (0, 0)
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_account_created_meanwhile_gets_a_message_and_no_orphan(client, token_path, while_hashing):
    other_password = "someone-elses-password-3"
    while_hashing(lambda: User.objects.create_user(EMAIL, other_password))
    response = client.post(token_path, FORM, follow=True)
    assert response.redirect_chain == [(f"/accounts/login/?next={token_path}", 302)]
    assert f"An account for {EMAIL} already exists. Log in to accept the invitation." in page(response)
    assert accounts_and_memberships() == (1, 0)
    assert User.objects.get(email=EMAIL).check_password(other_password)
    assert Invitation.objects.get(email=EMAIL).is_pending  # still there to accept once logged in
