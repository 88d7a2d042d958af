"""Shared fixtures: people in every role, real S3 servers, a real Redis.

Roles: ``owner``, ``admin``, ``operator``, ``viewer`` belong to ``tenant``; ``outsider`` owns
``other_tenant`` and belongs to nothing else.
"""

from __future__ import annotations

import pytest
from hypothesis import settings as hypothesis_settings

from tests.servers.aws import MotoAws
from tests.servers.s3 import moto_s3, rclone_s3

# Fixture modules shared by many test files (defined once: session fixtures must not be duplicated).
pytest_plugins = ["tests.browser", "tests.portal_fixtures", "tests.fakes.dns", "tests.smtp"]

PASSWORD = "correct-horse-battery-staple-42"

# No timed assertions: Hypothesis' per-example deadline fails tests on a loaded machine.
hypothesis_settings.register_profile("legacyflo", deadline=None)
hypothesis_settings.load_profile("legacyflo")


@pytest.fixture(scope="session", autouse=True)
def redis_server(tmp_path_factory):
    """A private Redis for the whole run; the RQ queue points at it (in place, before first use).

    Django's cache (login throttles) uses its database 1, so emptying it never touches the queue.
    """
    from django.conf import settings
    from django.test import override_settings

    from legacyflo.localservices import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    settings.RQ_QUEUES["default"]["URL"] = server.url
    settings.REDIS_URL = server.url
    cache_url = server.url.rsplit("/", 1)[0] + "/1"
    with override_settings(CACHES={"default": {**settings.CACHES["default"], "LOCATION": cache_url}}):
        yield server
    server.stop()


@pytest.fixture(autouse=True)
def empty_cache(redis_server):
    """Each test starts with no login or password-reset attempts counted."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def rq_queue(redis_server):
    """The real RQ queue, emptied before the test."""
    import django_rq

    queue = django_rq.get_queue("default")
    queue.connection.flushdb()
    return queue


@pytest.fixture(scope="session")
def rclone(tmp_path_factory):
    server = rclone_s3(tmp_path_factory.mktemp("rclone-s3"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = moto_s3()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_aws(tmp_path_factory):
    """moto with IAM enforced, in its own process (tests/servers/aws.py)."""
    server = MotoAws(tmp_path_factory.mktemp("moto-aws"))
    yield server
    server.stop()


@pytest.fixture
def portal_on_aws(moto_aws, monkeypatch, settings):
    """This process is a portal whose own AWS identity is moto's ``legacyflo-portal`` user (allowed
    sts:AssumeRole only), with AWS's endpoints pointed at moto the way an operator would (botocore's
    AWS_ENDPOINT_URL_*). Returns the server, its request recording emptied."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_aws.portal.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_aws.portal.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_aws.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_aws.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings.LEGACYFLO_AWS_PRINCIPAL_ARN = moto_aws.portal.arn
    moto_aws.forget_requests()
    return moto_aws


@pytest.fixture
def s3_bucket(rclone, request):
    """A fresh, empty bucket on the rclone S3 server."""
    import re
    import uuid

    name = ("t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40] + "-" + uuid.uuid4().hex[:8]).strip("-")
    rclone.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def tenant(db):
    from accounts.models import Tenant

    return Tenant.objects.create(slug="acme", name="Acme Corp")


@pytest.fixture
def other_tenant(db):
    from accounts.models import Tenant

    return Tenant.objects.create(slug="globex", name="Globex")


def _member(tenant, email, role):
    from accounts.models import Membership, User

    user = User.objects.create_user(email, PASSWORD)
    Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def owner(tenant):
    return _member(tenant, "owner@acme.test", "owner")


@pytest.fixture
def admin(tenant):
    return _member(tenant, "admin@acme.test", "admin")


@pytest.fixture
def operator(tenant):
    return _member(tenant, "operator@acme.test", "operator")


@pytest.fixture
def viewer(tenant):
    return _member(tenant, "viewer@acme.test", "viewer")


@pytest.fixture
def outsider(other_tenant):
    return _member(other_tenant, "boss@globex.test", "owner")


@pytest.fixture
def client_for(client):
    """``client_for(user)`` returns the test client logged in as ``user``."""

    def login(user):
        client.force_login(user)
        return client

    return login


DB_FIXTURES = {"db", "transactional_db", "live_server"}


def pytest_addoption(parser):
    parser.addoption("--db-only", action="store_true",
                     help="run only the tests that use the database (the PostgreSQL pass of CI)")


def pytest_collection_modifyitems(config, items):
    """With --db-only, skip tests that never touch the database: their result cannot depend on it."""
    if not config.getoption("--db-only"):
        return
    keep, drop = [], []
    for item in items:
        uses_db = item.get_closest_marker("django_db") is not None or DB_FIXTURES & set(getattr(item, "fixturenames", ()))
        (keep if uses_db else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)
