"""Tenants, login, invitations, roles, the tenant switcher and the audit log."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent, Membership, Tenant, User
from tests.conftest import PASSWORD


@pytest.mark.django_db
def test_tenant_create_command(monkeypatch, capsys):
    monkeypatch.setenv("LEGACYFLO_OWNER_PASSWORD", "a-long-enough-password-1")
    call_command("tenant_create", "initech", "--name", "Initech", "--owner", "Boss@Initech.test")
    assert "Created tenant initech" in capsys.readouterr().out
    tenant = Tenant.objects.get(slug="initech")
    owner = Membership.objects.get(tenant=tenant)
    assert owner.role == "owner" and owner.user.email == "boss@initech.test"
    assert owner.user.check_password("a-long-enough-password-1")
    assert AuditEvent.objects.filter(tenant=tenant, action="tenant.create").exists()
    with pytest.raises(CommandError, match="already exists"):
        call_command("tenant_create", "initech", "--name", "Again", "--owner", "x@initech.test")


@pytest.mark.django_db
def test_login_with_email_is_audited(client, owner, tenant):
    bad = client.post("/accounts/login/", {"username": owner.email, "password": "wrong"})
    assert bad.status_code == 200 and "didn't match" in bad.content.decode()
    response = client.post("/accounts/login/", {"username": owner.email, "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/", follow=True).request["PATH_INFO"] == f"/t/{tenant.slug}/"
    actions = list(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert "auth.login_failed" in actions and "auth.login" in actions
    client.post("/accounts/logout/")
    assert AuditEvent.objects.filter(tenant=tenant, action="auth.logout").exists()


@pytest.mark.django_db
def test_invitation_creates_member_with_role(client, client_for, admin, tenant):
    client = client_for(admin)
    response = client.post(f"/t/{tenant.slug}/members/invite/", {"email": "New.Person@acme.test", "role": "operator"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/invite/\S+/", mail.outbox[0].body).group(0)
    token_path = link.split("testserver", 1)[1]
    client.post("/accounts/logout/")
    page = client.get(token_path)
    assert page.status_code == 200 and "Operator" in page.content.decode()
    response = client.post(token_path, {"password1": "brand-new-password-9", "password2": "brand-new-password-9"})
    assert response.status_code == 302 and response["Location"] == f"/t/{tenant.slug}/"
    member = Membership.objects.get(user__email="new.person@acme.test")
    assert member.role == "operator" and member.tenant == tenant
    assert client.get(token_path).status_code == 404  # used once
    assert AuditEvent.objects.filter(tenant=tenant, action="member.invite").exists()
    assert AuditEvent.objects.filter(tenant=tenant, action="member.join").exists()


@pytest.mark.django_db
def test_invitation_for_existing_account_needs_that_login(client, client_for, admin, tenant, outsider):
    client = client_for(admin)
    client.post(f"/t/{tenant.slug}/members/invite/", {"email": outsider.email, "role": "viewer"})
    token_path = re.search(r"/invite/\S+/", mail.outbox[0].body).group(0)
    # Someone else logged in cannot take the invitation.
    response = client.post(token_path)
    assert response.status_code == 302
    assert not Membership.objects.filter(tenant=tenant, user=outsider).exists()
    client.force_login(outsider)
    assert client.post(token_path).status_code == 302
    assert Membership.objects.get(tenant=tenant, user=outsider).role == "viewer"


@pytest.mark.django_db
def test_admin_cannot_create_or_touch_owners(client_for, admin, owner, tenant):
    client = client_for(admin)
    client.post(f"/t/{tenant.slug}/members/invite/", {"email": "x@acme.test", "role": "owner"})
    assert len(mail.outbox) == 0
    owner_membership = Membership.objects.get(user=owner)
    client.post(f"/t/{tenant.slug}/members/{owner_membership.uuid}/role/", {"role": "viewer"})
    client.post(f"/t/{tenant.slug}/members/{owner_membership.uuid}/remove/")
    owner_membership.refresh_from_db()
    assert owner_membership.role == "owner"


@pytest.mark.django_db
def test_last_owner_cannot_leave_or_be_demoted(client_for, owner, admin, tenant):
    client = client_for(owner)
    me = Membership.objects.get(user=owner)
    response = client.post(f"/t/{tenant.slug}/members/{me.uuid}/role/", {"role": "admin"}, follow=True)
    assert "at least one owner" in response.content.decode()
    me.refresh_from_db()
    assert me.role == "owner"
    # With a second owner it works, and is audited with both roles.
    other = Membership.objects.get(user=admin)
    client.post(f"/t/{tenant.slug}/members/{other.uuid}/role/", {"role": "owner"})
    client.post(f"/t/{tenant.slug}/members/{me.uuid}/role/", {"role": "admin"})
    me.refresh_from_db()
    assert me.role == "admin"
    event = AuditEvent.objects.filter(action="member.role", target=owner.email).first()
    assert event.detail == {"from": "owner", "to": "admin"}


@pytest.mark.django_db
def test_audit_log_page_for_admins(client_for, admin, viewer, tenant):
    client = client_for(admin)
    client.post(f"/t/{tenant.slug}/members/invite/", {"email": "audited@acme.test", "role": "viewer"})
    page = client.get(f"/t/{tenant.slug}/audit/").content.decode()
    assert "member.invite" in page and "audited@acme.test" in page
    assert client_for(viewer).get(f"/t/{tenant.slug}/audit/").status_code == 403


@pytest.mark.django_db
def test_tenant_switcher_lists_each_tenant(client_for, owner, tenant, other_tenant):
    Membership.objects.create(tenant=other_tenant, user=owner, role="viewer")
    client = client_for(owner)
    page = client.get(f"/t/{tenant.slug}/").content.decode()
    assert f'value="/t/{other_tenant.slug}/"' in page and f'value="/t/{tenant.slug}/"' in page
    assert client.get(f"/t/{other_tenant.slug}/").status_code == 200
    # The home page remembers the last tenant visited.
    assert client.get("/")["Location"] == f"/t/{other_tenant.slug}/"


@pytest.mark.django_db
def test_password_reset_by_email(client, owner):
    client.post("/accounts/password/reset/", {"email": owner.email})
    assert len(mail.outbox) == 1
    path = re.search(r"/accounts/password/reset/\S+/\S+/", mail.outbox[0].body).group(0)
    form_page = client.get(path, follow=True)
    set_url = form_page.redirect_chain[-1][0] if form_page.redirect_chain else path
    client.post(set_url, {"new_password1": "another-good-password-7", "new_password2": "another-good-password-7"})
    assert User.objects.get(pk=owner.pk).check_password("another-good-password-7")


def assert_password_change_audited(user, via: str, secrets: list[str]) -> None:
    """One ``auth.password_changed`` per tenant of ``user``, by ``user``, holding no password or hash."""
    events = list(AuditEvent.objects.filter(action="auth.password_changed"))
    assert len(events) == 1
    event = events[0]
    assert event.actor == user and event.actor_email == user.email and event.target == user.email
    assert event.detail == {"via": via}
    stored = repr([event.target, event.actor_email, event.detail])
    hashes = [User.objects.get(pk=user.pk).password, user.password]
    assert not [s for s in secrets + hashes if s in stored]


@pytest.mark.django_db
def test_password_change_is_audited(client, owner, tenant):
    client.force_login(owner)
    new = "another-good-password-7"
    response = client.post("/accounts/password/change/",
                           {"old_password": PASSWORD, "new_password1": new, "new_password2": new})
    assert response.status_code == 302 and User.objects.get(pk=owner.pk).check_password(new)
    assert_password_change_audited(owner, "password_change", [PASSWORD, new])


@pytest.mark.django_db
def test_password_reset_completion_is_audited(client, owner, tenant):
    client.post("/accounts/password/reset/", {"email": owner.email})
    path = re.search(r"/accounts/password/reset/\S+/\S+/", mail.outbox[0].body).group(0)
    set_url = client.get(path)["Location"]
    assert not AuditEvent.objects.filter(action="auth.password_changed").exists()
    new = "another-good-password-7"
    response = client.post(set_url, {"new_password1": new, "new_password2": new})
    assert response.status_code == 302 and User.objects.get(pk=owner.pk).check_password(new)
    assert_password_change_audited(owner, "password_reset", [PASSWORD, new, path.rsplit("/", 2)[1]])


def invite(client, tenant, email: str, role: str) -> str:
    """Send an invitation through the members page; the path of the emailed link."""
    response = client.post(f"/t/{tenant.slug}/members/invite/", {"email": email, "role": role})
    assert response.status_code == 302 and mail.outbox, "the invitation was not sent"
    return re.search(r"/invite/\S+/", mail.outbox[-1].body).group(0)


def _remove(sender):
    Membership.objects.filter(user=sender).delete()


def _demote(sender):
    Membership.objects.filter(user=sender).update(role="operator")


def _deactivate(sender):
    User.objects.filter(pk=sender.pk).update(is_active=False)


def _delete(sender):
    sender.delete()


@pytest.mark.django_db
@pytest.mark.parametrize("loses_rights", [_remove, _demote, _deactivate, _delete],
                         ids=["removed", "demoted", "deactivated", "deleted"])
def test_an_invitation_dies_when_its_sender_loses_the_right_to_invite(
        client, client_for, admin, owner, tenant, loses_rights):
    token_path = invite(client_for(admin), tenant, "new.person@acme.test", "operator")
    client.post("/accounts/logout/")
    assert client.get(token_path).status_code == 200  # opened while the sender was an admin
    loses_rights(admin)
    response = client.post(token_path, {"password1": "brand-new-password-9", "password2": "brand-new-password-9"})
    assert response.status_code == 404
    assert not User.objects.filter(email="new.person@acme.test").exists()
    members_page = client_for(owner).get(f"/t/{tenant.slug}/members/").content.decode()
    assert "new.person@acme.test" not in members_page  # not listed as pending any more


@pytest.mark.django_db
def test_accepting_checks_the_senders_rights_at_that_moment(client_for, admin, tenant, outsider):
    """The service itself refuses (not only the page that read the invitation earlier)."""
    from django.core.exceptions import ValidationError

    from accounts import services
    from accounts.models import Invitation

    invite(client_for(admin), tenant, outsider.email, "admin")
    invitation = Invitation.objects.get(email=outsider.email)
    Membership.objects.filter(user=admin).update(role="operator")
    with pytest.raises(ValidationError, match="the person who sent it can no longer grant that role"):
        services.invitation_accept(invitation=invitation, user=outsider)
    with pytest.raises(ValidationError, match="the person who sent it can no longer grant that role"):
        services.invitation_accept_new_account(invitation=invitation, password="brand-new-password-9")
    assert not Membership.objects.filter(tenant=tenant, user=outsider).exists()


@pytest.mark.django_db
def test_an_owner_invitation_dies_when_its_sender_is_no_longer_an_owner(client, client_for, owner, admin, tenant):
    token_path = invite(client_for(owner), tenant, "co.owner@acme.test", "owner")
    other = Membership.objects.get(user=admin)
    other.role = "owner"
    other.save()
    Membership.objects.filter(user=owner).update(role="admin")  # still an admin: not enough for owners
    client.post("/accounts/logout/")
    assert client.get(token_path).status_code == 404
    assert not User.objects.filter(email="co.owner@acme.test").exists()


@pytest.mark.django_db
def test_only_an_owner_can_withdraw_an_owner_invitation(client_for, owner, admin, tenant):
    from accounts.models import Invitation

    invite(client_for(owner), tenant, "co.owner@acme.test", "owner")
    invitation = Invitation.objects.get(email="co.owner@acme.test")
    client = client_for(admin)
    page = client.get(f"/t/{tenant.slug}/members/").content.decode()
    assert "co.owner@acme.test" in page and f"/invitations/{invitation.uuid}/revoke/" not in page
    response = client.post(f"/t/{tenant.slug}/invitations/{invitation.uuid}/revoke/", follow=True)
    assert "Only an owner can withdraw an invitation to become an owner." in response.content.decode()
    assert Invitation.objects.filter(pk=invitation.pk).exists()
    assert not AuditEvent.objects.filter(action="member.invite_revoke").exists()
    client = client_for(owner)
    assert f"/invitations/{invitation.uuid}/revoke/" in client.get(f"/t/{tenant.slug}/members/").content.decode()
    client.post(f"/t/{tenant.slug}/invitations/{invitation.uuid}/revoke/")
    assert not Invitation.objects.filter(pk=invitation.pk).exists()


@pytest.mark.django_db
def test_an_admin_may_still_withdraw_other_invitations(client_for, owner, admin, tenant):
    from accounts.models import Invitation

    invite(client_for(owner), tenant, "new.admin@acme.test", "admin")
    invitation = Invitation.objects.get(email="new.admin@acme.test")
    client_for(admin).post(f"/t/{tenant.slug}/invitations/{invitation.uuid}/revoke/")
    assert not Invitation.objects.filter(pk=invitation.pk).exists()
