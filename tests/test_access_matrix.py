"""Every tenant URL goes through the access checkpoint: outsiders get 404, viewers cannot write,
operators cannot manage members. The matrix is built from the URLconf itself, so a new view
that forgets the checkpoint fails here."""

from __future__ import annotations

import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import Membership

DUMMY = {"uuid": str(uuid.uuid4()), "str": "x", "slug": "x", "int": "1", "path": "x"}


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p


def tenant_routes():
    routes = []
    for route, pattern in _walk(get_resolver().url_patterns):
        if route.startswith("t/<slug:tenant_slug>/"):
            routes.append((route, pattern))
    return routes


def fill(route: str, slug: str) -> str:
    import re

    url = route.replace("<slug:tenant_slug>", slug)
    url = re.sub(r"<(\w+):\w+>", lambda m: DUMMY[m.group(1)], url)
    return "/" + url


def test_every_tenant_view_uses_the_checkpoint():
    routes = tenant_routes()
    assert len(routes) >= 10
    unguarded = [route for route, p in routes if not getattr(p.callback, "tenant_view", False)]
    assert unguarded == []


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_outsider_gets_404_everywhere(client_for, owner, outsider, tenant, method):
    client = client_for(outsider)
    for route, _ in tenant_routes():
        response = getattr(client, method)(fill(route, tenant.slug))
        assert response.status_code == 404, (method, route, response.status_code)


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(client, tenant):
    for route, _ in tenant_routes():
        response = client.get(fill(route, tenant.slug))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], route


@pytest.mark.django_db
def test_viewer_cannot_write_anywhere(client_for, viewer, tenant):
    client = client_for(viewer)
    for route, _ in tenant_routes():
        response = client.post(fill(route, tenant.slug), {"role": "owner", "email": "x@y.test"})
        assert response.status_code in (403, 405), (route, response.status_code)


@pytest.mark.django_db
def test_operator_cannot_manage_members(client_for, operator, viewer, tenant):
    client = client_for(operator)
    target = Membership.objects.get(user=viewer)
    slug = tenant.slug
    assert client.post(f"/t/{slug}/members/invite/", {"email": "new@acme.test", "role": "viewer"}).status_code == 403
    assert client.post(f"/t/{slug}/members/{target.uuid}/role/", {"role": "admin"}).status_code == 403
    assert client.post(f"/t/{slug}/members/{target.uuid}/remove/").status_code == 403
    assert client.get(f"/t/{slug}/audit/").status_code == 403
    target.refresh_from_db()
    assert target.role == "viewer"
    assert client.get(f"/t/{slug}/members/").status_code == 200


@pytest.mark.django_db
def test_objects_of_another_tenant_are_404(client_for, owner, outsider, other_tenant):
    """An id that exists, but in another tenant, is indistinguishable from one that doesn't."""
    from buckets.models import Bucket

    foreign = Bucket.objects.create(tenant=other_tenant, name="globex-mail", region="us-east-1")
    client = client_for(owner)
    assert client.get(f"/t/acme/buckets/{foreign.uuid}/").status_code == 404
    assert client.post(f"/t/acme/buckets/{foreign.uuid}/remove/").status_code == 404
    assert Bucket.objects.filter(pk=foreign.pk).exists()
    foreign_member = Membership.objects.get(user=outsider)
    assert client.post(f"/t/acme/members/{foreign_member.uuid}/remove/").status_code == 404
    assert Membership.objects.filter(pk=foreign_member.pk).exists()
