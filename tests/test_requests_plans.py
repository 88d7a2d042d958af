"""requests_app.plans and its commands: plans_create, plans_run_due, scheduler — slots due, not
due, missed, skipped, failed to start, late, and two schedulers at once."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import close_old_connections, connection

from requests_app.models import MigrationRequest, Plan, PlanEvent, PlanEventKind, State

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def bucket(tenant):
    from buckets.models import Bucket

    return Bucket.objects.create(tenant=tenant, name="plan-bucket", region="us-east-1",
                                 endpoint_url="http://127.0.0.1:9", purpose="destination", auth_mode="keys",
                                 access_key_id="AK", secret_access_key="SK", status="verified")


HEADER = ("request_type,title,source_server,source_port,source_security,source_user,source_password,bucket,"
          "s3_prefix,file_name,schedule,notify\n")


def row(user="alice", schedule="daily 02:00", notify="ops@acme.test", file_name=None):
    return (f"IMAP-S3-ZIP,{user} nightly,imap.acme.test,993,ssl,{user},pw-{user},plan-bucket,mail,"
            f"{file_name or user},{schedule},{notify}\n")


def create_plans(tenant, text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    path = f"/tmp/plans-{threading.get_ident()}.csv"
    with open(path, "w") as f:
        f.write(text)
    try:
        call_command("plans_create", path, tenant=tenant.slug, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def make_plan(tenant, bucket, *, user="alice", schedule="daily 02:00", next_run_at=None, notify=("ops@acme.test",)):
    from requests_app.plans import plan_create
    from requests_app.types import get_type

    data = {"title": f"{user} nightly", "source_server": "imap.acme.test", "source_port": 993,
            "source_security": "ssl", "source_user": user, "source_password": f"pw-{user}", "folders": [],
            "exclude_folders": [], "since": None, "before": None, "bucket": bucket, "s3_prefix": "mail",
            "file_name": user}
    plan = plan_create(tenant=tenant, actor="test", rtype=get_type("IMAP-S3-ZIP"), data=data,
                       schedule_text=schedule, notify=list(notify))
    if next_run_at is not None:
        Plan.objects.filter(pk=plan.pk).update(next_run_at=next_run_at)
        plan.refresh_from_db()
    return plan


def run_due(at: str) -> list[str]:
    out = io.StringIO()
    call_command("plans_run_due", at=at, stdout=out)
    return out.getvalue().splitlines()


# ---- plans_create -------------------------------------------------------------------------------
def test_plans_create_prints_each_plan_with_its_schedule_and_next_run(tenant, bucket, rq_queue):
    code, out, err = create_plans(tenant, HEADER + row("alice") + row("bob", "monthly 31 04:30", "a@x.test; b@y.test"))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    alice, bob = (Plan.objects.get(uuid=line.split()[0]) for line in lines)
    assert lines[0].split()[1:3] == ["daily", "02:00"]
    assert datetime.fromisoformat(lines[0].split()[-1]) == alice.next_run_at
    assert alice.next_run_at > datetime.now(UTC) and (alice.next_run_at.hour, alice.next_run_at.minute) == (2, 0)
    assert bob.schedule == "monthly 31 04:30" and bob.notify == ["a@x.test", "b@y.test"]
    assert alice.source_password == "pw-alice" and "source_password" not in alice.template
    assert alice.template["source_user"] == "alice" and alice.bucket == bucket
    assert MigrationRequest.objects.count() == 0  # a plan submits nothing until its slot


def test_plans_create_with_a_bad_row_creates_nothing_and_names_every_error(tenant, bucket):
    text = HEADER + row("alice") + row("bob", "hourly 02:00") + row("carol", notify="not-an-address") + \
        row("dave", file_name="alice")
    code, out, err = create_plans(tenant, text)
    assert code == 2 and out == ""
    assert "Line 3: schedule: 'hourly 02:00' is not a schedule" in err
    assert "Line 4: notify: 'not-an-address' is not an email address." in err
    assert "Line 5" in err and "same bucket, prefix and file name as line 2" in err
    assert "Nothing was created" in err
    assert Plan.objects.count() == 0


def test_plans_create_needs_the_schedule_column(tenant, bucket):
    code, out, err = create_plans(tenant, HEADER.replace(",schedule", "") + row("alice").replace(",daily 02:00", ""))
    assert code == 2 and "the column schedule is required" in err
    assert Plan.objects.count() == 0


def test_a_plan_into_another_plans_destination_is_refused(tenant, bucket):
    make_plan(tenant, bucket, user="alice")
    code, out, err = create_plans(tenant, HEADER + row("bob", file_name="alice"))
    assert code == 2 and "already backs up into plan-bucket/mail/alice" in err


# ---- plans_run_due -------------------------------------------------------------------------------
def test_a_plan_not_due_submits_nothing(tenant, bucket, rq_queue):
    make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0))
    assert run_due("2026-12-02T01:59:59Z") == []
    assert MigrationRequest.objects.count() == 0


def test_a_due_plan_submits_one_incremental_request_and_moves_its_next_run(tenant, bucket, rq_queue):
    plan = make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0))
    lines = with_callbacks(lambda: run_due("2026-12-02T02:00:30Z"))
    assert len(lines) == 1
    req = MigrationRequest.objects.get(uuid=lines[0].split()[0])
    assert lines[0].split()[1:] == ["IMAP-S3-ZIP", "queued"]
    assert (req.plan, req.incremental, req.notify) == (plan, True, ["ops@acme.test"])
    assert (req.source_user, req.source_password, req.bucket, req.s3_prefix, req.file_name) == \
        ("alice", "pw-alice", bucket, "mail", "alice")
    plan.refresh_from_db()
    assert plan.next_run_at == utc(2026, 12, 3, 2, 0)
    event = PlanEvent.objects.get(plan=plan)
    assert (event.kind, event.slot_at, event.request) == (PlanEventKind.SUBMITTED, utc(2026, 12, 2, 2, 0), req)
    assert rq_queue.count == 1
    # the same instant again, and a minute later: the slot ran already
    assert run_due("2026-12-02T02:00:30Z") == []
    assert run_due("2026-12-02T02:01:30Z") == []
    assert MigrationRequest.objects.count() == 1


def test_a_plan_that_missed_several_slots_runs_once(tenant, bucket, rq_queue):
    plan = make_plan(tenant, bucket, next_run_at=utc(2026, 11, 28, 2, 0))
    lines = run_due("2026-12-02T09:00:00Z")
    assert len(lines) == 1
    plan.refresh_from_db()
    assert plan.next_run_at == utc(2026, 12, 3, 2, 0)
    collapsed = PlanEvent.objects.get(plan=plan, kind=PlanEventKind.COLLAPSED)
    assert collapsed.slot_at == utc(2026, 12, 2, 2, 0)
    assert "5 slots from 2026-11-28 02:00 UTC were missed" in collapsed.detail
    submitted = PlanEvent.objects.get(plan=plan, kind=PlanEventKind.SUBMITTED)
    assert submitted.slot_at == utc(2026, 12, 2, 2, 0)
    assert run_due("2026-12-02T09:01:00Z") == []


def test_a_slot_whose_previous_run_is_still_going_is_skipped_and_recorded(tenant, bucket, rq_queue):
    plan = make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0))
    first = MigrationRequest.objects.get(uuid=run_due("2026-12-02T02:00:00Z")[0].split()[0])
    MigrationRequest.objects.filter(pk=first.pk).update(state=State.RUNNING)
    assert run_due("2026-12-03T02:00:00Z") == []
    skipped = PlanEvent.objects.get(plan=plan, kind=PlanEventKind.SKIPPED)
    assert (skipped.slot_at, skipped.request_id) == (utc(2026, 12, 3, 2, 0), first.pk)
    assert "still running" in skipped.detail
    plan.refresh_from_db()
    assert plan.next_run_at == utc(2026, 12, 4, 2, 0)
    assert MigrationRequest.objects.count() == 1


def test_a_paused_plan_does_not_run_and_resumes_at_its_next_slot(tenant, bucket, rq_queue):
    from requests_app.plans import plan_set_paused

    plan = make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0))
    plan_set_paused(plan=plan, actor="test", paused=True)
    assert run_due("2026-12-02T03:00:00Z") == []
    plan = plan_set_paused(plan=plan, actor="test", paused=False)
    assert plan.next_run_at > datetime.now(UTC) - timedelta(minutes=1)
    assert plan.next_run_at - datetime.now(UTC) <= timedelta(days=1)


def test_a_run_that_cannot_start_is_recorded_and_mailed(tenant, bucket, rq_queue, smtp, settings):
    settings.LEGACYFLO_PUBLIC_URL = "https://backup.acme.test"
    plan = make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0), notify=("ops@acme.test",))
    bucket.status = "failed"
    bucket.save()
    with_callbacks(lambda: run_due("2026-12-02T02:00:00Z"))
    event = PlanEvent.objects.get(plan=plan)
    assert event.kind == PlanEventKind.FAILED_TO_START
    assert "plan-bucket is not verified" in event.detail
    assert MigrationRequest.objects.count() == 0
    [mail] = smtp.messages
    assert mail["To"] == "ops@acme.test"
    assert "its run could not start" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    assert "plan-bucket is not verified" in text and "2026-12-02 02:00 UTC" in text
    assert f"https://backup.acme.test/t/acme/plans/{plan.uuid}/" in text


def test_a_run_not_started_within_an_hour_of_its_slot_mails_once(tenant, bucket, rq_queue, smtp):
    plan = make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0), notify=("ops@acme.test",))
    run_due("2026-12-02T02:00:00Z")
    assert smtp.messages == []
    with_callbacks(lambda: run_due("2026-12-02T02:59:00Z"))
    assert smtp.messages == []
    with_callbacks(lambda: run_due("2026-12-02T03:01:00Z"))
    with_callbacks(lambda: run_due("2026-12-02T03:02:00Z"))
    [mail] = smtp.messages
    assert "did not start within an hour" in mail["Subject"]
    assert "still queued" in mail.get_body(("plain",)).get_content()
    assert PlanEvent.objects.filter(plan=plan, kind=PlanEventKind.LATE).count() == 1


def test_a_run_that_started_in_time_is_not_late(tenant, bucket, rq_queue, smtp):
    make_plan(tenant, bucket, next_run_at=utc(2026, 12, 2, 2, 0))
    req = MigrationRequest.objects.get(uuid=run_due("2026-12-02T02:00:00Z")[0].split()[0])
    MigrationRequest.objects.filter(pk=req.pk).update(state=State.COMPLETED, started_at=utc(2026, 12, 2, 2, 1))
    with_callbacks(lambda: run_due("2026-12-02T04:00:00Z"))
    assert smtp.messages == []


def test_plans_run_due_refuses_a_bad_instant():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not an ISO-8601 instant"):
        call_command("plans_run_due", at="tomorrow")


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_runs_due_plans(tenant, bucket, rq_queue):
    plan = make_plan(tenant, bucket, next_run_at=utc(2020, 1, 1, 2, 0))
    out = io.StringIO()
    call_command("scheduler", once=True, stdout=out)
    assert MigrationRequest.objects.filter(plan=plan).count() == 1
    assert "IMAP-S3-ZIP queued" in out.getvalue()


def with_callbacks(fn):
    """Run ``fn`` and then the on-commit callbacks its transactions registered (the test's own
    transaction never commits)."""
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        return fn()


# ---- two schedulers at once ---------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_schedulers_at_once_submit_each_slot_exactly_once(tenant, bucket, rq_queue):
    """Several threads, each with its own database connection, run plans_run_due for the same
    instant at the same moment (PostgreSQL: row locks with SKIP LOCKED; SQLite: one writer)."""
    from requests_app.plans import plans_run_due

    plans = [make_plan(tenant, bucket, user=f"user{n}", next_run_at=utc(2026, 12, 2, 2, 0)) for n in range(12)]
    at = utc(2026, 12, 2, 2, 0, 30)
    start = threading.Barrier(4)
    results, errors = [], []

    def scheduler():
        try:
            start.wait()
            results.append([r.pk for r in plans_run_due(at)])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    submitted = [pk for pks in results for pk in pks]
    assert len(submitted) == len(set(submitted)) == 12
    for plan in plans:
        assert MigrationRequest.objects.filter(plan=plan).count() == 1
        assert PlanEvent.objects.filter(plan=plan, kind=PlanEventKind.SUBMITTED).count() == 1
    assert plans_run_due(at + timedelta(minutes=1)) == []


@pytest.mark.django_db(transaction=True)
def test_schedulers_in_separate_processes_submit_each_slot_exactly_once(tenant, bucket, rq_queue, redis_server,
                                                                        tmp_path):
    """Three ``plans_run_due`` processes for the same instant, on the test database, truly in
    parallel: every slot is submitted once, and the three outputs together list each run once."""
    import os
    import subprocess
    import sys

    from tests.portal_fixtures import ROOT

    plans = [make_plan(tenant, bucket, user=f"user{n}", next_run_at=utc(2026, 12, 2, 2, 0)) for n in range(40)]
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{settings_dict['NAME']}"
    else:
        url = (f"postgres://{settings_dict['USER'] or 'postgres'}@{settings_dict['HOST'] or '127.0.0.1'}:"
               f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}")
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_server.url, "LEGACYFLO_VAR_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "manage.py", "plans_run_due", "--at", "2026-12-02T02:00:30Z"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    lines = [line for out, _ in outputs for line in out.splitlines()]
    assert len(lines) == len({line.split()[0] for line in lines}) == 40
    for plan in plans:
        assert MigrationRequest.objects.filter(plan=plan).count() == 1
        assert PlanEvent.objects.filter(plan=plan).count() == 1


# ---- the pages' access ---------------------------------------------------------------------------
def plan_urls(tenant, plan) -> dict[str, str]:
    base = f"/t/{tenant.slug}/plans/{plan.uuid}/"
    return {"detail": base, "edit": f"{base}edit/", "pause": f"{base}pause/", "resume": f"{base}resume/",
            "delete": f"{base}delete/"}


def test_another_tenant_gets_404_on_every_page_of_a_plan(client_for, owner, outsider, tenant, other_tenant, bucket):
    plan = make_plan(tenant, bucket)
    client = client_for(outsider)
    for name, url in plan_urls(tenant, plan).items():
        assert client.get(url).status_code == 404, name
        assert client.post(url).status_code == 404, name
        # nor through the outsider's own tenant: the plan is looked up in it, and is not there
        own = url.replace(f"/t/{tenant.slug}/", f"/t/{other_tenant.slug}/")
        # (each with the method its view takes: the others get 405 before any lookup)
        if name in ("detail", "edit"):
            assert client.get(own).status_code == 404, name
        if name != "detail":
            assert client.post(own).status_code == 404, name
    assert client.get(f"/t/{other_tenant.slug}/plans/").content.count(str(plan.uuid).encode()) == 0
    plan.refresh_from_db()
    assert not plan.paused and Plan.objects.filter(pk=plan.pk).exists()


def test_a_viewer_sees_plans_but_cannot_change_them(client_for, viewer, tenant, bucket):
    plan = make_plan(tenant, bucket)
    client = client_for(viewer)
    urls = plan_urls(tenant, plan)
    assert client.get(urls["detail"]).status_code == 200
    assert str(plan.uuid) in client.get(f"/t/{tenant.slug}/plans/").content.decode()
    for name in ("pause", "resume", "delete", "edit"):
        assert client.post(urls[name]).status_code == 403, name
    assert client.get(urls["edit"]).status_code == 403
    assert client.post(f"/t/{tenant.slug}/plans/notifications/", {"notify": "x@y.test"}).status_code == 403
    plan.refresh_from_db()
    assert not plan.paused and Plan.objects.filter(pk=plan.pk).exists()


def test_schedule_this_from_another_tenants_request_is_404(client_for, operator, outsider, tenant, other_tenant,
                                                           bucket):
    req = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", source_user="alice",
                                          bucket=bucket, file_name="alice", state=State.COMPLETED)
    client = client_for(outsider)
    assert client.get(f"/t/{other_tenant.slug}/plans/from/{req.uuid}/").status_code == 404
    assert client.get(f"/t/{other_tenant.slug}/plans/new/IMAP-S3-ZIP/?from={req.uuid}").status_code == 404
