"""GraphSource against the Microsoft fake over TLS, with tokens from msal (connectors.oauth).

Sleeps are recorded instead of slept, so Retry-After is checked by value, not by the clock.
"""

from __future__ import annotations

import datetime as dt
import random
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors import oauth
from connectors.model import AuthenticationFailed, Message, MessageFailure, SourceError
from connectors.sources import tokens
from connectors.sources.graph import GraphSource, GraphThrottled
from connectors.sources.ratelimit import LocalQuota
from tests.fakes.clock import FakeClock
from tests.fakes.graph_api import FOLDER_TREE
from tests.fakes.microsoft import MicrosoftFake
from tests.fakes.quota import SlidingWindowQuota

# msal recommends form_post; the portal deliberately uses query (see microsoft_start_auth).
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended:UserWarning")

ADELE, MEGAN = "adele@legacyflo.onmicrosoft.com", "megan@legacyflo.onmicrosoft.com"


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca"), mailboxes={ADELE: 120, MEGAN: 12}).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _reset(ms):
    ms.graph.page_cap, ms.graph.latency = None, 0.0
    ms.graph.faults.queue.clear()
    ms.graph.peak_concurrency.clear()
    ms.graph.peak_attempted.clear()
    ms.graph.concurrency_rejections = 0
    ms.graph.value_requests.clear()


def app_client(ms) -> tokens.MicrosoftClient:
    return tokens.MicrosoftClient(ms.client_id, ms.client_secret, tenant=ms.tenant_id,
                                  authority_host=ms.authority_host, ca_bundle=ms.ca_path)


def app_source(ms, sleeps: list[float] | None = None, **options) -> GraphSource:
    provider = tokens.MicrosoftTokenProvider(app_client(ms))
    sleep = sleeps.append if sleeps is not None else (lambda seconds: None)
    return GraphSource(provider, mailbox=ADELE, graph_url=ms.graph_url, ca_bundle=ms.ca_path, sleep=sleep,
                       rng=random.Random(3), **options)


def backup(source: GraphSource, **window) -> dict[str, list]:
    return {folder.path: list(source.fetch_messages(folder, source.list_message_ids(folder, **window)))
            for folder in source.list_folders()}


def expected_paths() -> list[str]:
    return [path.replace("Berichte 1/2", "Berichte 1\u22152") for path, _, _ in FOLDER_TREE]


def assert_exact(ms, upn: str, archive: dict[str, list], window=None) -> None:
    stored = ms.mailboxes[upn].messages_by_path()
    for path, results in archive.items():
        expected = [m for m in stored[path.replace("\u2215", "/")]
                    if window is None or window[0] <= m.date < window[1]]
        expected.sort(key=lambda m: m.date)
        assert [r.raw for r in results] == [m.raw for m in expected], path
        for result, message in zip(results, expected, strict=True):
            assert isinstance(result, Message) and result.folder == path
            assert result.internal_date == message.date
            assert ("\\Seen" in result.flags) == message.seen
            assert ("\\Flagged" in result.flags) == message.flagged


def test_folder_tree_has_nested_and_hidden_folders_parents_first(ms):
    ms.graph.page_cap = 4  # server-driven paging of folder lists too
    folders = app_source(ms).list_folders()
    paths = [f.path for f in folders]
    assert sorted(paths) == sorted(expected_paths())
    assert {"Verborgen", "Verborgen/Geheim", "Inbox/Projekte/日本語/Tief"} <= set(paths)
    for index, path in enumerate(paths):
        if "/" in path:
            assert path.rsplit("/", 1)[0] in paths[:index]


def test_backup_pages_through_every_folder_and_keeps_value_bytes(ms):
    source = app_source(ms, page_size=7)
    archive = backup(source)
    assert_exact(ms, ADELE, archive)
    assert sum(len(v) for v in archive.values()) == 120
    assert max(len(m.raw) for v in archive.values() for m in v) > 3_000_000
    assert set(ms.graph.value_requests.values()) == {1}  # each MIME fetched once
    assert ms.graph.requests["mailFolders/{id}/messages"] > 20  # several pages per big folder


def test_date_window_uses_received_date_filter(ms):
    since, before = dt.date(2023, 1, 5), dt.date(2023, 1, 20)
    window = (dt.datetime(2023, 1, 5, tzinfo=dt.UTC), dt.datetime(2023, 1, 20, tzinfo=dt.UTC))
    archive = backup(app_source(ms, page_size=5), since=since, before=before)
    assert_exact(ms, ADELE, archive, window)
    assert 0 < sum(len(v) for v in archive.values()) < 120


def test_include_and_exclude_use_the_shared_path_semantics(ms):
    source = app_source(ms, include=["INBOX", "verborgen"], exclude=["Inbox/Projekte/日本語"])
    assert [f.path for f in source.list_folders()] == [
        "Inbox", "Inbox/Projekte", "Inbox/Reçus", "Verborgen", "Verborgen/Geheim"]
    before = ms.graph.requests["mailFolders/{id}/childFolders"]
    app_source(ms, exclude=["Inbox"]).list_folders()
    assert ms.graph.requests["mailFolders/{id}/childFolders"] - before == 1  # Verborgen only


def test_injected_429_and_503_honour_retry_after(ms):
    ms.graph.faults.throttle(3, retry_after=7, match="/$value")
    ms.graph.faults.throttle(1, retry_after=2, status=503, match="/messages?")
    sleeps: list[float] = []
    source = app_source(ms, sleeps)
    inbox = next(f for f in source.list_folders() if f.path == "Inbox/Reçus")
    results = list(source.fetch_messages(inbox, source.list_message_ids(inbox)))
    assert_exact(ms, ADELE, {"Inbox/Reçus": results})
    assert sorted(sleeps) == [2, 7, 7, 7]
    assert ms.graph.faults.injected == 4 and source.stats["throttled"] == 4


def test_never_more_than_four_requests_in_flight(ms):
    ms.graph.latency = 0.03  # every request lasts long enough for the threads to overlap
    source = app_source(ms, max_concurrency=8)  # asks for more than Graph allows: capped at 4
    inbox = next(f for f in source.list_folders() if f.path == "Inbox")
    results = list(source.fetch_messages(inbox, source.list_message_ids(inbox)))
    assert all(isinstance(r, Message) for r in results) and len(results) > 20
    assert ms.graph.peak_attempted[ADELE] <= 4
    assert ms.graph.concurrency_rejections == 0
    assert ms.graph.peak_concurrency[ADELE] >= 2  # the pool did run requests side by side


def test_endless_throttling_stops_the_job_instead_of_losing_messages(ms):
    ms.graph.faults.throttle(1000, retry_after=60, match="/$value")
    source = app_source(ms, max_throttle_wait=600)
    folder = next(f for f in source.list_folders() if f.path == "Verborgen/Geheim")
    with pytest.raises(GraphThrottled):
        list(source.fetch_messages(folder, source.list_message_ids(folder)))


def test_message_deleted_after_listing_is_reported_as_skipped(ms):
    source = app_source(ms)
    folder = next(f for f in source.list_folders() if f.path == "Archive")
    ids = source.list_message_ids(folder)
    mailbox = ms.mailboxes[ADELE]
    removed = mailbox.messages.pop(ids[1])
    try:
        results = list(source.fetch_messages(folder, ids))
    finally:
        mailbox.messages[ids[1]] = removed
    assert [r.source_id for r in results] == ids
    assert isinstance(results[1], MessageFailure) and results[1].status == "skipped"


def test_delegated_me_with_token_refresh_on_401(ms):
    client = tokens.MicrosoftClient(ms.client_id, ms.client_secret, tenant="organizations",
                                    authority_host=ms.authority_host, ca_bundle=ms.ca_path)
    flow = oauth.microsoft_start_auth(client, redirect_uri="http://localhost:8000/oauth/microsoft/callback")
    callback = ms.consent(flow["auth_uri"], user=MEGAN)
    issued = oauth.microsoft_finish_auth(
        client, flow, {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()})
    rotated: list[str] = []
    provider = tokens.MicrosoftTokenProvider(client, scopes=tokens.GRAPH_MAIL_SCOPES,
                                            refresh_token=issued.refresh_token,
                                            on_refresh_token=rotated.append)
    source = GraphSource(provider, graph_url=ms.graph_url, ca_bundle=ms.ca_path, sleep=lambda s: None)
    folders = source.list_folders()
    ms.identity.expire_access_tokens()  # the next Graph call gets a 401
    archive = {f.path: list(source.fetch_messages(f, source.list_message_ids(f))) for f in folders}
    assert_exact(ms, MEGAN, archive)
    assert source.stats["token_refreshes"] == 1
    assert len(rotated) == 2 and issued.refresh_token not in rotated  # Microsoft rotates them

    other = GraphSource(provider, mailbox=ADELE, graph_url=ms.graph_url, ca_bundle=ms.ca_path)
    with pytest.raises(AuthenticationFailed, match="denied access"):
        other.list_folders()


def test_app_only_token_cannot_use_me(ms):
    source = GraphSource(tokens.MicrosoftTokenProvider(app_client(ms)), graph_url=ms.graph_url,
                         ca_bundle=ms.ca_path)
    with pytest.raises(SourceError, match="HTTP 400 BadRequest"):
        source.list_folders()


def test_request_budget_per_mailbox_is_waited_out_or_paced(ms):
    """Graph's 10,000 requests / 10 min, scaled down to 40 on a fake clock."""
    clock = FakeClock()
    provider = tokens.MicrosoftTokenProvider(app_client(ms))

    def inbox_backup(**options):
        source = GraphSource(provider, mailbox=ADELE, graph_url=ms.graph_url, ca_bundle=ms.ca_path,
                             sleep=clock.sleep, rng=random.Random(1), **options)
        folder = next(f for f in source.list_folders() if f.path == "Inbox")
        return {"Inbox": list(source.fetch_messages(folder, source.list_message_ids(folder)))}

    try:
        ms.graph.request_quota = SlidingWindowQuota(40, 600, clock)
        assert_exact(ms, ADELE, inbox_backup())  # unpaced: 429 + Retry-After, then everything
        assert ms.graph.request_quota.rejected[f"{ms.client_id}|{ADELE}"] > 0

        ms.graph.request_quota = SlidingWindowQuota(40, 600, clock)
        paced = LocalQuota(limit=40, window=600, burst=2, clock=clock, sleep=clock.sleep)
        assert_exact(ms, ADELE, inbox_backup(quota=paced, max_concurrency=1))
        assert ms.graph.request_quota.rejected[f"{ms.client_id}|{ADELE}"] == 0
    finally:
        ms.graph.request_quota = SlidingWindowQuota(10_000, 600, ms.identity.clock)


def test_through_the_export_engine_into_s3(ms, rclone, s3_bucket):
    """The engine archives the Graph tree: folder paths as entries, every $value byte for byte."""
    import hashlib
    import io
    import zipfile

    from connectors.pipeline.ledger import MemoryLedger
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import ExportSpec, Tuning

    ms.graph.faults.throttle_randomly(0.05, retry_after=0, seed=2)
    client = rclone.client()
    try:
        result = run_backup(app_source(ms), client, ExportSpec(bucket=s3_bucket, file_name="graph", prefix="t",
                                                               exclude=["Archive"]),
                            MemoryLedger(), Tuning(part_bytes=5 * 1024 * 1024))
    finally:
        ms.graph.faults.throttle_randomly(0.0)
    stored = {path: msgs for path, msgs in ms.mailboxes[ADELE].messages_by_path().items() if path != "Archive"}
    assert result.state == "completed", result.error
    assert result.totals.exported == sum(len(v) for v in stored.values())
    archive = zipfile.ZipFile(io.BytesIO(client.get_object(Bucket=s3_bucket, Key="t/graph.zip")["Body"].read()))
    by_folder: dict[str, list[str]] = {}
    for name in archive.namelist():
        if name.endswith(".eml"):
            by_folder.setdefault(name.rsplit("/", 1)[0], []).append(hashlib.sha256(archive.read(name)).hexdigest())
    assert {folder.replace("\u2215", "/"): sorted(digests) for folder, digests in by_folder.items()} == {
        path: sorted(m.sha256 for m in msgs) for path, msgs in stored.items() if msgs}
    # the index: isRead → \\Seen, flag.flagStatus flagged → \\Flagged, receivedDateTime, no labels
    import csv

    index = list(csv.DictReader(io.StringIO(archive.read("index.csv").decode())))
    assert archive.namelist()[-1] == "index.csv"
    by_id = {message_id: m for message_id, m in ms.mailboxes[ADELE].messages.items()}
    assert len(index) == result.totals.exported
    for row in index:
        message = by_id[row["source_id"]]
        expected = {"\\Seen"} if message.seen else set()
        expected |= {"\\Flagged"} if message.flagged else set()
        assert set(row["flags"].split()) == expected, row
        when = message.date if message.date.tzinfo else message.date.replace(tzinfo=dt.UTC)
        assert dt.datetime.fromisoformat(row["internal_date"]) == when.replace(microsecond=0), row
        assert row["labels"] == "" and row["sha256"] == message.sha256
