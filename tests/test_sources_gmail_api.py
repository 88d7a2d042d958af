"""GmailApiSource against the Gmail fake, through google-api-python-client and google-auth.

Time is a FakeClock shared by the fake's quota and the source's sleep, so backoffs and quota
windows pass instantly; only the two-workers test runs on the wall clock (it needs real
concurrency) and it asserts outcomes, not durations.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid

import pytest

from connectors.model import Message, MessageFailure, TransientError
from connectors.sources import tokens
from connectors.sources.gmail_api import GmailApiSource, gmail_query
from connectors.sources.ratelimit import RedisQuota, gmail_quota_key
from tests.fakes.clock import FakeClock
from tests.fakes.google import GoogleFake
from tests.fakes.redis_server import redis_url_for_tests

ALICE = "alice@legacyflo.test"


def make_fake(count: int = 300, **options) -> GoogleFake:
    options.setdefault("clock", FakeClock())
    return GoogleFake(mailboxes={ALICE: count}, **options).start()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_url_for_tests(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def fake(request):
    server = make_fake(**getattr(request, "param", {}))
    yield server
    server.stop()


def make_source(fake: GoogleFake, **options) -> GmailApiSource:
    credentials = tokens.google_service_account_credentials(
        fake.service_account_info, subject=ALICE, scopes=[tokens.GMAIL_READONLY_SCOPE],
        token_uri=fake.token_uri)
    options.setdefault("sleep", fake.clock.sleep)
    return GmailApiSource(credentials, api_url=fake.gmail_api_url, rng=random.Random(7), **options)


def backup(source: GmailApiSource, **window) -> tuple[list[str], list]:
    [folder] = source.list_folders()
    ids = source.list_message_ids(folder, **window)
    return ids, list(source.fetch_messages(folder, ids))


def assert_exact_copies(fake: GoogleFake, ids: list[str], results: list) -> None:
    mailbox = fake.mailboxes[ALICE]
    assert [r.source_id for r in results] == ids
    assert len(set(ids)) == len(ids)
    for message in results:
        assert isinstance(message, Message), message
        stored = mailbox.messages[message.source_id]
        assert message.raw == stored.raw
        assert message.folder == "All Mail"
        assert list(message.labels) == mailbox.label_names(stored)
        assert ("\\Seen" in message.flags) == ("UNREAD" not in stored.labels)
        assert message.internal_date == stored.date


@pytest.mark.parametrize("status", [429, 403])
def test_backup_with_throttled_batch_parts_keeps_every_message_exactly_once(fake, status):
    fake.gmail.faults.throttle_batch_parts(0.3, status=status, seed=status)
    source = make_source(fake, include_spam_trash=True)

    ids, results = backup(source)

    assert set(ids) == set(fake.mailboxes[ALICE].messages)
    assert_exact_copies(fake, ids, results)
    assert max(len(m.raw) for m in results) > 3_000_000  # the multi-MB message came through whole
    assert fake.gmail.throttled > 0 and source.stats["throttled"] == fake.gmail.throttled
    assert fake.gmail.max_batch_parts <= 50
    assert {"Projekte/日本語", "Reçus/Été 2024"} <= {label for m in results for label in m.labels}


def test_spam_and_trash_are_left_out_unless_asked_and_dates_filter(fake):
    mailbox = fake.mailboxes[ALICE]
    since, before = dt.date(2023, 1, 20), dt.date(2023, 2, 10)
    ids, results = backup(make_source(fake), since=since, before=before)

    start = dt.datetime.combine(since, dt.time(), dt.UTC)
    end = dt.datetime.combine(before, dt.time(), dt.UTC)
    expected = {key for key, m in mailbox.messages.items()
                if not m.labels & {"SPAM", "TRASH"} and start <= m.date < end}
    assert set(ids) == expected and expected
    assert ids == sorted(ids, key=lambda key: mailbox.messages[key].date)  # oldest first
    assert_exact_copies(fake, ids, results)
    assert gmail_query(since, before) == f"after:{int(start.timestamp())} before:{int(end.timestamp())}"


@pytest.mark.parametrize("fake", [{"count": 120, "big_message_bytes": 0}], indirect=True)
def test_rate_limit_errors_on_calls_and_whole_batches_back_off_and_recover(fake):
    faults = fake.gmail.faults
    faults.fail_call(1, 429)  # getProfile
    faults.fail_call(2, 403)  # getProfile again: userRateLimitExceeded
    faults.fail_call(3, 503)
    faults.fail_call(5, 429)  # messages.list (call 4 is labels.list... after the profile succeeds)
    faults.fail_batches(429)
    faults.fail_batches(503)
    source = make_source(fake, include_spam_trash=True)

    ids, results = backup(source)

    assert len(ids) == 120
    assert_exact_copies(fake, ids, results)
    first_three = fake.clock.slept[:3]
    assert first_three == sorted(first_three) and first_three[0] >= 0.5  # exponential, with jitter
    assert source.stats["retried"] >= 6


@pytest.mark.parametrize("fake", [{"count": 150, "big_message_bytes": 0, "quota_units": 400}],
                         indirect=True)
def test_server_quota_exhaustion_is_waited_out_without_losing_messages(fake):
    ids, results = backup(make_source(fake, include_spam_trash=True))
    assert fake.quota.rejected[ALICE] > 0
    assert_exact_copies(fake, ids, results)


@pytest.mark.parametrize("fake", [{"count": 150, "big_message_bytes": 0, "quota_units": 400}],
                         indirect=True)
def test_client_quota_on_the_same_clock_avoids_throttling(fake, redis_url):
    quota = RedisQuota(redis_url, gmail_quota_key(f"{uuid.uuid4().hex}-{ALICE}"), limit=400,
                       window=60, burst=100, clock=fake.clock, sleep=fake.clock.sleep)
    ids, results = backup(make_source(fake, include_spam_trash=True, quota=quota, batch_size=20,
                                      parallel_batches=1))
    assert fake.quota.rejected[ALICE] == 0
    assert fake.quota.peak[ALICE] <= 400
    assert_exact_copies(fake, ids, results)


@pytest.mark.parametrize("fake", [{"count": 20, "big_message_bytes": 0}], indirect=True)
def test_endless_throttling_raises_transient_error_instead_of_dropping(fake):
    fake.gmail.faults.throttle_batch_parts(1.0)
    source = make_source(fake, max_throttle_wait=300)
    [folder] = source.list_folders()
    ids = source.list_message_ids(folder)
    yielded = []
    with pytest.raises(TransientError, match="throttling"):
        for item in source.fetch_messages(folder, ids):
            yielded.append(item)
    assert yielded == []


@pytest.mark.parametrize("fake", [{"count": 40, "big_message_bytes": 0}], indirect=True)
def test_message_deleted_after_listing_is_reported_not_skipped(fake):
    source = make_source(fake, include_spam_trash=True)
    [folder] = source.list_folders()
    ids = source.list_message_ids(folder)
    del fake.mailboxes[ALICE].messages[ids[5]]
    results = list(source.fetch_messages(folder, ids))
    assert [r.source_id for r in results] == ids
    assert isinstance(results[5], MessageFailure) and "deleted" in results[5].error
    assert sum(isinstance(r, Message) for r in results) == len(ids) - 1


@pytest.mark.parametrize("fake", [{"count": 60, "big_message_bytes": 0}], indirect=True)
def test_expired_access_token_is_refreshed_mid_backup(fake):
    source = make_source(fake, include_spam_trash=True)
    [folder] = source.list_folders()
    ids = source.list_message_ids(folder)
    fake.auth.expire_access_tokens()
    assert_exact_copies(fake, ids, list(source.fetch_messages(folder, ids)))
    assert fake.auth.token_requests.count("urn:ietf:params:oauth:grant-type:jwt-bearer") >= 2


def test_two_workers_sharing_the_redis_quota_stay_under_the_per_user_quota(redis_url):
    """Two sources of the same mailbox in parallel, wall clock: the fake never has to throttle."""
    limit, window = 1000, 1.0
    fake = make_fake(300, big_message_bytes=0, clock=None, quota_units=limit, quota_window=window)
    try:
        key = gmail_quota_key(f"{uuid.uuid4().hex}-{ALICE}")
        ids = None
        results: dict[int, list] = {}

        def worker(index: int, part: list[str]) -> None:
            quota = RedisQuota(redis_url, key, limit=limit, window=window, burst=100, safety=0.8)
            source = make_source(fake, include_spam_trash=True, quota=quota, batch_size=20,
                                 sleep=time.sleep)
            [folder] = source.list_folders()
            results[index] = list(source.fetch_messages(folder, part))

        lister = make_source(fake, include_spam_trash=True)
        ids = lister.list_message_ids(lister.list_folders()[0])
        halves = [ids[0::2], ids[1::2]]
        threads = [threading.Thread(target=worker, args=(i, half)) for i, half in enumerate(halves)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert fake.quota.rejected[ALICE] == 0, "the shared quota let the workers exceed Gmail's"
        assert fake.gmail.calls["messages.get"] * 5 > limit  # the quota really had to pace them
        for half, got in zip(halves, (results[0], results[1]), strict=True):
            assert_exact_copies(fake, half, got)
    finally:
        fake.stop()


@pytest.mark.parametrize("fake", [{"count": 80}], indirect=True)
def test_through_the_export_engine_into_s3(fake, rclone, s3_bucket):
    """The engine archives what the source serves: one folder, every message once, labels.csv."""
    import csv
    import hashlib
    import io
    import json
    import zipfile

    from connectors.pipeline.ledger import MemoryLedger
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import ExportSpec, Tuning

    fake.gmail.faults.throttle_batch_parts(0.2, seed=3)
    client = rclone.client()
    result = run_backup(make_source(fake, include_spam_trash=True), client,
                        ExportSpec(bucket=s3_bucket, file_name="gmail", prefix="t"), MemoryLedger(),
                        Tuning(part_bytes=5 * 1024 * 1024))
    assert result.state == "completed", result.error
    assert result.totals.exported == 80 and result.totals.failed == result.totals.skipped == 0
    archive = zipfile.ZipFile(io.BytesIO(client.get_object(Bucket=s3_bucket, Key="t/gmail.zip")["Body"].read()))
    emls = [n for n in archive.namelist() if n.endswith(".eml")]
    assert {n.split("/")[0] for n in emls} == {"All Mail"}
    assert sorted(hashlib.sha256(archive.read(n)).hexdigest() for n in emls) == sorted(
        m.sha256 for m in fake.mailboxes[ALICE].messages.values())
    rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    mailbox = fake.mailboxes[ALICE]
    assert {r["source_id"]: json.loads(r["labels"]) for r in rows} == {
        key: mailbox.label_names(m) for key, m in mailbox.messages.items() if m.labels}
    index = list(csv.DictReader(io.StringIO(archive.read("index.csv").decode())))
    assert {r["source_id"]: _gmail_meta(r) for r in index} == {
        key: _expected_gmail_meta(mailbox, m) for key, m in mailbox.messages.items()}
    assert archive.namelist()[-1] == "index.csv"
    report = csv.DictReader(io.StringIO(client.get_object(Bucket=s3_bucket, Key="t/gmail.report.csv")["Body"]
                                        .read().decode("utf-8-sig")))
    assert {r["source_id"]: _gmail_meta(r) for r in report} == {
        key: _expected_gmail_meta(mailbox, m) for key, m in mailbox.messages.items()}


def _gmail_meta(row: dict) -> tuple:
    return (row["labels"], set(row["flags"].split()), dt.datetime.fromisoformat(row["internal_date"]))


def _expected_gmail_meta(mailbox, message) -> tuple:
    """The contract: labels by name, UNREAD absent → \\Seen, STARRED → \\Flagged, internalDate."""
    flags = set() if "UNREAD" in message.labels else {"\\Seen"}
    flags |= {"\\Flagged"} if "STARRED" in message.labels else set()
    flags |= {"\\Draft"} if "DRAFT" in message.labels else set()
    return (";".join(mailbox.label_names(message)), flags, message.date.replace(microsecond=0))


@pytest.mark.parametrize("fake", [{"count": 40}], indirect=True)
def test_gmail_api_pst_keeps_labels_as_categories_and_in_the_report(fake, rclone, s3_bucket, tmp_path):
    """GMAILAPI-S3-PST: every message's labels are its Outlook categories (Keywords), its read
    and starred state its read flag and follow-up flag, and report.csv lists them."""
    import csv
    import io

    from connectors.pipeline.ledger import MemoryLedger
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import ExportSpec, Tuning
    from tests.pst_corpus import read_pst_with_pst_extractor, read_pst_with_pypff

    client = rclone.client()
    result = run_backup(make_source(fake, include_spam_trash=True), client,
                        ExportSpec(bucket=s3_bucket, file_name="gmail", prefix="t", format="pst"), MemoryLedger(),
                        Tuning(part_bytes=5 * 1024 * 1024))
    assert result.state == "completed", result.error
    mailbox = fake.mailboxes[ALICE]
    report = csv.DictReader(io.StringIO(client.get_object(Bucket=s3_bucket, Key="t/gmail.report.csv")["Body"]
                                        .read().decode("utf-8-sig")))
    assert {r["source_id"]: _gmail_meta(r) for r in report} == {
        key: _expected_gmail_meta(mailbox, m) for key, m in mailbox.messages.items()}
    pst = tmp_path / "gmail.pst"
    pst.write_bytes(client.get_object(Bucket=s3_bucket, Key="t/gmail.pst")["Body"].read())
    found = {m.metadata["source_id"]: m for folder in read_pst_with_pst_extractor(pst).values() for m in folder}
    assert set(found) == set(mailbox.messages)
    for key, message in mailbox.messages.items():
        read = found[key]
        assert (read.metadata["keywords"] or []) == mailbox.label_names(message)
        assert read.read == ("UNREAD" not in message.labels)
        assert (read.metadata["flag_status"] == 2) == ("STARRED" in message.labels)
        assert read.delivered == message.date.replace(microsecond=0) or read.delivered == message.date
        assert read.metadata["sha256"] == message.sha256
    assert sum(len(m) for m in read_pst_with_pypff(pst).values()) == len(mailbox.messages)
