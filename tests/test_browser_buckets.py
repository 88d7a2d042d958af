"""In a real browser: log in, register a bucket, see every verification result."""

from __future__ import annotations

import pytest

from tests.browser import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def register(page, tenant_slug, **fields):
    page.goto(f"/t/{tenant_slug}/buckets/register/")
    page.fill("#id_name", fields["name"])
    page.fill("#id_region", fields["region"])
    page.fill("#id_endpoint_url", fields["endpoint_url"])
    page.check("input[name=auth_mode][value=keys]")
    page.fill("#id_access_key_id", fields["access_key_id"])
    page.fill("#id_secret_access_key", fields["secret_access_key"])
    page.click("button:has-text('Register and verify')")
    page.wait_for_selector("#checks")


def test_admin_registers_and_verifies_a_bucket(page, owner, tenant, rclone, s3_bucket):
    login(page, owner.email, PASSWORD)
    assert page.locator("h1").first.inner_text() == tenant.name
    register(page, tenant.slug, name=s3_bucket, region="us-east-1", endpoint_url=rclone.url,
             access_key_id=rclone.access_key, secret_access_key=rclone.secret_key)
    assert "is registered and verified" in page.locator(".messages").inner_text()
    assert page.locator("#bucket-status").inner_text() == "Verified"
    rows = {row.get_attribute("data-check"): row.locator(".badge").inner_text()
            for row in page.locator("tr.check").all()}
    assert rows["name"] == rows["region"] == rows["location"] == rows["list"] == rows["write"] == "pass"
    assert set(rows) >= {"name", "region", "endpoint", "location", "list", "write", "public", "encryption"}
    assert rclone.secret_key not in page.content()
    page.click("a:has-text('Buckets')")
    assert page.locator(f"td a:has-text('{s3_bucket}')").count() == 1


def test_region_mismatch_is_explained(page, owner, tenant, moto):
    moto.client().create_bucket(Bucket="acme-frankfurt", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    login(page, owner.email, PASSWORD)
    register(page, tenant.slug, name="acme-frankfurt", region="us-west-2", endpoint_url=moto.url,
             access_key_id=moto.access_key, secret_access_key=moto.secret_key)
    assert "failed verification" in page.locator(".messages").inner_text()
    row = page.locator("tr[data-check=location]")
    assert row.locator(".badge").inner_text() == "fail"
    assert "is in eu-central-1, not in us-west-2" in row.inner_text()
    assert "Change the region to eu-central-1" in row.inner_text()
