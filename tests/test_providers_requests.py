"""The GMAILOAUTH, GMAILAPI, M365API and O365 (OAuth) request types: registry, form and CSV rules,
Test connection, and backups end to end through the real RQ queue into rclone's S3, with the real
client libraries (google-api-python-client, google-auth, msal, imapclient) against the Google and
Microsoft fakes and a real Dovecot checking XOAUTH2 tokens with its oauth2 passdb."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from providers import services
from providers.models import MailboxAuthorization
from requests_app.csvimport import parse_csv
from requests_app.models import MigrationRequest
from requests_app.types import REQUEST_TYPES, get_type
from tests.fakes.google import GoogleFake
from tests.fakes.httpserver import ServerThread
from tests.fakes.microsoft import MicrosoftFake
from tests.mailgen import generate_mailbox, write_maildir
from tests.portal_fixtures import (
    archive_digests,
    no_pending_uploads,
    pst_folder_counts,
    run_worker_burst,
    source_digests,
    submit,
)
from tests.providers_dovecot import OAuthDovecot, OutlookIntrospection, in_process_verifier
from tests.providers_fixtures import (
    ADELE,
    ALICE,
    BOB,
    MEGAN,
    MSAL_WARNING,
    google_connection,
    google_consent,
    microsoft_connection,
    microsoft_consent,
    page_text,
    point_at_fakes,  # noqa: F401  (fixture, used by name)
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings(MSAL_WARNING)]


@pytest.fixture(scope="module")
def google():
    fake = GoogleFake().start()  # alice: 240 messages incl. a 3 MB one, labels, spam and trash; bob: 40
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca")).start()  # adele: 200 incl. 3 MB; megan: 30
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fakes(request, google, ms):
    apply = request.getfixturevalue("point_at_fakes")
    apply(google, ms)
    ms.graph.peak_concurrency.clear()
    ms.graph.peak_attempted.clear()
    ms.graph.concurrency_rejections = 0
    return apply


def form(bucket, user: str, connection: str, **extra) -> dict:
    stem = user.split("@")[0]
    return {"source_user": user, "connection": connection, "bucket": str(bucket.uuid), "s3_prefix": "oauth",
            "file_name": f"{stem}-{extra.pop('suffix', 'backup')}", **extra}


def read_zip(client, bucket: str, key: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))


def completed(req) -> MigrationRequest:
    req.refresh_from_db()
    assert req.state == "completed", req.error
    return req


# --- registry, form, CSV ---------------------------------------------------------------------------
def test_columns_of_the_new_types():
    common_tail = ["folders", "exclude_folders", "since", "before", "bucket", "s3_prefix", "file_name"]
    # every backup type ends with the optional ``incremental`` column (DESIGN.md, incremental series)
    assert REQUEST_TYPES["GMAILOAUTH-S3-ZIP"].columns == ["request_type", "title", "source_user", "connection",
                                                          *common_tail, "incremental"]
    assert REQUEST_TYPES["GMAILAPI-S3-ZIP"].columns == ["request_type", "title", "source_user", "connection", *common_tail,
                                                        "include_spam_trash", "incremental"]
    assert REQUEST_TYPES["M365API-S3-ZIP"].columns == ["request_type", "title", "source_user", "connection",
                                                       *common_tail, "incremental"]
    assert REQUEST_TYPES["O365-S3-ZIP"].columns == [
        "request_type", "title", "source_server", "source_port", "source_security", "source_user", "source_password",
        "connection", *common_tail, "auth_method", "incremental"]
    for code in ("GMAILOAUTH-S3-PST", "GMAILAPI-S3-PST", "M365API-S3-PST"):  # the PST variants exist
        assert get_type(code).format == "pst"


def csv_bytes(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=sorted({k for r in rows for k in r}))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_csv_rows_resolve_connections_and_choose_the_credential(tenant, admin, google, ms, client_for):
    from buckets.models import Bucket

    Bucket.objects.create(tenant=tenant, name="mail-bucket", region="us-east-1", status="verified")
    google_connection(tenant, admin, google, name="workspace")
    m365 = microsoft_connection(tenant, admin, ms, name="m365")
    microsoft_consent(client_for(admin), tenant, m365, ms, ADELE)
    rows = [
        {"request_type": "GMAILAPI-S3-ZIP", "source_user": ALICE, "connection": "workspace", "bucket": "mail-bucket",
         "file_name": "alice", "include_spam_trash": "yes"},
        {"request_type": "GMAILOAUTH-S3-ZIP", "source_user": BOB, "connection": "Workspace", "bucket": "mail-bucket",
         "file_name": "bob"},
        {"request_type": "M365API-S3-ZIP", "source_user": ADELE, "connection": "m365", "bucket": "mail-bucket",
         "file_name": "adele"},
        {"request_type": "M365API-S3-ZIP", "source_user": MEGAN, "connection": "m365", "bucket": "mail-bucket",
         "file_name": "megan"},
        {"request_type": "O365-S3-ZIP", "source_user": MEGAN, "connection": "m365", "auth_method": "oauth",
         "bucket": "mail-bucket", "file_name": "megan-imap"},
        {"request_type": "O365-S3-ZIP", "source_user": MEGAN, "source_password": "pw", "bucket": "mail-bucket",
         "file_name": "megan-password"},
    ]
    result = parse_csv(csv_bytes(rows), tenant=tenant)
    assert result.ok, result.errors
    options = [r.data.get("options", {}) for r in result.rows]
    assert [o.get("credential") for o in options] == ["service_account", "service_account", "delegated", "app_only",
                                                      "app_only", None]
    assert options[0]["include_spam_trash"] is True and options[2]["connection"] == str(m365.uuid)
    assert result.rows[1].data["source_server"] == "imap.gmail.com"  # the provider's host, from the settings
    assert result.rows[4].data["source_server"] == "outlook.office365.com" and result.rows[4].data["source_password"] == ""
    assert result.rows[5].data.get("options") is None and result.rows[5].data["source_password"] == "pw"

    bad = parse_csv(csv_bytes([
        rows[0],
        {**rows[1], "connection": "nope", "file_name": "b2"},
        {**rows[0], "include_spam_trash": "maybe", "file_name": "a2"},
        {**rows[4], "source_server": "imap.attacker.example", "file_name": "m2"},
        {**rows[5], "connection": "m365", "file_name": "m3"},
        {**rows[2], "connection": "workspace", "file_name": "a3"},
    ]), tenant=tenant)
    assert not bad.ok and bad.rows[0].line == 2  # the good row is parsed but nothing is submitted
    assert bad.errors == [
        "Line 3: connection: No Google connection named nope is registered for this tenant.",
        "Line 4: include_spam_trash: Use yes or no.",
        "Line 5: source_server: With OAuth the server is always Exchange Online (outlook.office365.com): "
        "tokens go nowhere else.",
        "Line 6: connection: Leave the connection empty with password authentication (or choose auth_method oauth).",
        "Line 7: connection: No Microsoft connection named workspace is registered for this tenant.",
    ]


def test_mailbox_without_consent_or_fallback_is_refused(tenant, admin, google, ms, dest_bucket):
    from requests_app.forms import RequestForm

    google_connection(tenant, admin, google, name="consent-only", service_account=False)
    microsoft_connection(tenant, admin, ms, name="delegated-only", directory="")
    gmail = RequestForm(form(dest_bucket, ALICE, "consent-only"), rtype=get_type("GMAILAPI-S3-ZIP"), tenant=tenant)
    assert not gmail.is_valid() and "has not consented through consent-only" in gmail.errors["source_user"][0]
    graph = RequestForm(form(dest_bucket, ADELE, "delegated-only"), rtype=get_type("M365API-S3-ZIP"), tenant=tenant)
    assert not graph.is_valid() and "app-only" in graph.errors["source_user"][0]
    imap = RequestForm(form(dest_bucket, BOB, "consent-only"), rtype=get_type("GMAILOAUTH-S3-ZIP"), tenant=tenant)
    assert not imap.is_valid() and "no service account" in imap.errors["connection"][0]


def test_test_connection_button_lists_the_folders(operator, admin, tenant, google, ms, dest_bucket, client_for):
    google_connection(tenant, admin, google)
    m365 = microsoft_connection(tenant, admin, ms)
    client = client_for(operator)
    gmail = page_text(client.post(f"/t/{tenant.slug}/requests/new/GMAILAPI-S3-ZIP/test/", form(dest_bucket, BOB, "workspace")))
    assert 'data-test="ok"' in gmail and "All Mail" in gmail
    graph = page_text(client.post(f"/t/{tenant.slug}/requests/new/M365API-S3-ZIP/test/", form(dest_bucket, MEGAN, str(m365.uuid))))
    assert 'data-test="ok"' in graph and "Inbox" in graph
    missing = page_text(client.post(f"/t/{tenant.slug}/requests/new/M365API-S3-ZIP/test/", form(dest_bucket, MEGAN, "")))
    assert 'data-test="fail"' in missing and "Choose a connection" in missing
    page = page_text(client.get(f"/t/{tenant.slug}/requests/new/GMAILAPI-S3-ZIP/"))
    assert 'id="id_connection"' in page and 'id="id_include_spam_trash"' in page and "id_source_server" not in page


# --- backups end to end ------------------------------------------------------------------------------
def test_gmail_api_with_user_consent_backs_up_all_240_messages_byte_for_byte(operator, admin, tenant, google, client_for,
                                                                          dest_bucket, rclone, rq_queue):
    connection = google_connection(tenant, admin, google, service_account=False)
    google_consent(client_for(admin), tenant, connection, google, ALICE)
    req = submit(tenant, operator, "GMAILAPI-S3-ZIP", form(dest_bucket, ALICE, "workspace", include_spam_trash="yes"))
    assert req.options == {"connection": str(connection.uuid), "credential": "user", "include_spam_trash": True}
    run_worker_burst(rq_queue)
    req = completed(req)
    mailbox = google.mailboxes[ALICE]
    assert req.messages_done == len(mailbox.messages) == 240
    s3 = rclone.client()
    archive = archive_digests(s3, dest_bucket.name, "oauth/alice-backup.zip")
    assert sorted(archive["All Mail"]) == sorted(m.sha256 for m in mailbox.messages.values())
    labels = list(csv.DictReader(io.StringIO(read_zip(s3, dest_bucket.name, "oauth/alice-backup.zip")
                                             .read("labels.csv").decode())))
    assert {r["source_id"]: json.loads(r["labels"]) for r in labels} == {
        key: mailbox.label_names(m) for key, m in mailbox.messages.items() if m.labels}
    assert no_pending_uploads(s3, dest_bucket.name)


def test_gmail_api_through_the_service_account_leaves_spam_and_trash_out(operator, admin, tenant, google, dest_bucket,
                                                                        rclone, rq_queue):
    google_connection(tenant, admin, google)
    req = submit(tenant, operator, "GMAILAPI-S3-ZIP", form(dest_bucket, BOB, "workspace"))
    assert req.options["credential"] == "service_account" and req.options["include_spam_trash"] is False
    run_worker_burst(rq_queue)
    completed(req)
    expected = [m.sha256 for m in google.mailboxes[BOB].messages.values() if not m.labels & {"SPAM", "TRASH"}]
    archive = archive_digests(rclone.client(), dest_bucket.name, "oauth/bob-backup.zip")
    assert sorted(archive["All Mail"]) == sorted(expected)


def test_revoked_consent_fails_the_request_clearly(operator, admin, tenant, google, client_for, dest_bucket, rclone,
                                                  rq_queue):
    connection = google_connection(tenant, admin, google, service_account=False)
    google_consent(client_for(admin), tenant, connection, google, BOB)
    req = submit(tenant, operator, "GMAILAPI-S3-ZIP", form(dest_bucket, BOB, "workspace", suffix="revoked"))
    services.authorization_revoke(authorization=MailboxAuthorization.objects.get(email=BOB), actor=admin)
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "failed" and "no longer has a valid consent through workspace" in req.error
    assert rclone.client().list_objects_v2(Bucket=dest_bucket.name).get("KeyCount", 0) == 0


def graph_expected(ms, upn: str) -> dict[str, list[str]]:
    return {path: sorted(m.sha256 for m in msgs) for path, msgs in ms.mailboxes[upn].messages_by_path().items() if msgs}


def graph_archive(s3, bucket: str, key: str) -> dict[str, list[str]]:
    return {folder.replace("\u2215", "/"): sorted(d) for folder, d in archive_digests(s3, bucket, key).items()}


def test_m365_api_delegated_every_value_byte_for_byte_with_at_most_four_requests(operator, admin, tenant, ms, client_for,
                                                                                dest_bucket, rclone, rq_queue):
    connection = microsoft_connection(tenant, admin, ms, directory="")
    microsoft_consent(client_for(admin), tenant, connection, ms, ADELE)
    consented_token = MailboxAuthorization.objects.get(email=ADELE).refresh_token
    req = submit(tenant, operator, "M365API-S3-ZIP", form(dest_bucket, ADELE, "m365"))
    assert req.options["credential"] == "delegated"
    run_worker_burst(rq_queue)
    req = completed(req)
    assert graph_archive(rclone.client(), dest_bucket.name, "oauth/adele-backup.zip") == graph_expected(ms, ADELE)
    assert req.messages_done == len(ms.mailboxes[ADELE].messages) == 200
    assert ms.graph.peak_attempted[ADELE] <= 4 and ms.graph.concurrency_rejections == 0
    assert ms.graph.peak_concurrency[ADELE] >= 2  # the four slots were used
    # Microsoft rotated the refresh token during the run; the new one is stored (encrypted).
    rotated = MailboxAuthorization.objects.get(email=ADELE).refresh_token
    assert rotated and rotated != consented_token and ms.identity.tokens[rotated].kind == "refresh"


def test_m365_api_app_only(operator, admin, tenant, ms, dest_bucket, rclone, rq_queue):
    microsoft_connection(tenant, admin, ms)
    req = submit(tenant, operator, "M365API-S3-ZIP", form(dest_bucket, MEGAN, "m365"))
    assert req.options["credential"] == "app_only"
    run_worker_burst(rq_queue)
    completed(req)
    assert graph_archive(rclone.client(), dest_bucket.name, "oauth/megan-backup.zip") == graph_expected(ms, MEGAN)
    assert "client_credentials" in ms.identity.token_requests
    assert ms.graph.peak_attempted[MEGAN] <= 4


# --- XOAUTH2 over IMAP against Dovecot ----------------------------------------------------------------
@pytest.fixture(scope="module")
def gmail_dovecot(google):
    """Dovecot's oauth2 passdb asks the Google fake's introspection endpoint about each token."""
    with OAuthDovecot([ALICE], google.base_url) as server:
        server.mailbox = generate_mailbox("test", seed=11)
        write_maildir(server, ALICE, server.mailbox)
        yield server


@pytest.fixture(scope="module")
def outlook_dovecot(ms):
    """Exchange Online's decision at AUTHENTICATE, checked against the Microsoft fake in-process."""
    introspection = OutlookIntrospection(in_process_verifier(ms))
    http = ServerThread(introspection).start()
    with OAuthDovecot([ADELE, MEGAN], http.url) as server:
        server.mailboxes = {ADELE: generate_mailbox("test", seed=21),
                            MEGAN: generate_mailbox("flat", seed=22, count=25, size=3000)}
        for user, mailbox in server.mailboxes.items():
            write_maildir(server, user, mailbox)
        server.introspection = introspection
        yield server
    http.stop()


def assert_same_mail(expected_mailbox, s3, bucket: str, key: str) -> None:
    expected = source_digests(expected_mailbox)
    actual = archive_digests(s3, bucket, key)
    for folder, digests in expected.items():
        assert sorted(actual.get(folder, [])) == sorted(digests), folder
    assert sum(map(len, actual.values())) == sum(map(len, expected.values()))


def test_gmail_oauth_imap_with_the_service_account_against_dovecot(operator, admin, tenant, google, gmail_dovecot, fakes,
                                                                  dest_bucket, rclone, rq_queue):
    fakes(google, None, GMAIL_IMAP_HOST="127.0.0.1", GMAIL_IMAP_PORT=gmail_dovecot.ssl_port,
          LEGACYFLO_IMAP_CA_FILE=gmail_dovecot.ca_file)
    google_connection(tenant, admin, google, client=False)
    before = google.auth.token_requests.count("urn:ietf:params:oauth:grant-type:jwt-bearer")
    req = submit(tenant, operator, "GMAILOAUTH-S3-ZIP", form(dest_bucket, ALICE, "workspace", suffix="imap"))
    assert (req.source_server, req.source_port) == ("127.0.0.1", gmail_dovecot.ssl_port)
    run_worker_burst(rq_queue)
    completed(req)
    assert_same_mail(gmail_dovecot.mailbox, rclone.client(), dest_bucket.name, "oauth/alice-imap.zip")
    assert google.auth.token_requests.count("urn:ietf:params:oauth:grant-type:jwt-bearer") > before


def test_o365_over_xoauth2_delegated_and_app_only_against_dovecot(operator, admin, tenant, ms, outlook_dovecot, fakes,
                                                                 client_for, dest_bucket, rclone, rq_queue):
    fakes(None, ms, MICROSOFT_IMAP_HOST="127.0.0.1", MICROSOFT_IMAP_PORT=outlook_dovecot.ssl_port,
          LEGACYFLO_IMAP_CA_FILE=outlook_dovecot.ca_file)
    connection = microsoft_connection(tenant, admin, ms)
    microsoft_consent(client_for(admin), tenant, connection, ms, ADELE, purpose="imap")
    outlook_dovecot.introspection.granted = MEGAN
    delegated = submit(tenant, operator, "O365-S3-ZIP", form(dest_bucket, ADELE, "m365", auth_method="oauth", suffix="imap"))
    app_only = submit(tenant, operator, "O365-S3-ZIP", form(dest_bucket, MEGAN, "m365", auth_method="oauth", suffix="imap"))
    assert delegated.options["credential"] == "delegated" and app_only.options["credential"] == "app_only"
    assert delegated.source_password == "" and delegated.source_server == "127.0.0.1"
    run_worker_burst(rq_queue)
    completed(delegated), completed(app_only)
    s3 = rclone.client()
    assert_same_mail(outlook_dovecot.mailboxes[ADELE], s3, dest_bucket.name, "oauth/adele-imap.zip")
    assert_same_mail(outlook_dovecot.mailboxes[MEGAN], s3, dest_bucket.name, "oauth/megan-imap.zip")
    assert {"delegated", "app_only"} <= set(outlook_dovecot.introspection.seen)


def pst_counts(s3, bucket: str, key: str, tmp_path) -> dict[str, int]:
    pytest.importorskip("pypff")
    local = tmp_path / "archive.pst"
    s3.download_file(bucket, key, str(local))
    return pst_folder_counts(local)


@pytest.mark.parametrize("code,user", [("M365API-S3-PST", MEGAN), ("GMAILAPI-S3-PST", BOB)])
def test_api_sources_into_pst(code, user, operator, admin, tenant, google, ms, dest_bucket, rclone, rq_queue, tmp_path):
    if get_type(code) is None:
        pytest.skip("the PST export is not installed")
    google_connection(tenant, admin, google)
    microsoft_connection(tenant, admin, ms)
    connection = "m365" if code.startswith("M365") else "workspace"
    req = submit(tenant, operator, code, form(dest_bucket, user, connection, suffix="pst"))
    run_worker_burst(rq_queue)
    req = completed(req)
    stem = user.split("@")[0]
    counts = pst_counts(rclone.client(), dest_bucket.name, f"oauth/{stem}-pst.pst", tmp_path)
    if code.startswith("M365"):
        expected = {path: len(msgs) for path, msgs in ms.mailboxes[user].messages_by_path().items() if msgs}
    else:
        expected = {"All Mail": sum(1 for m in google.mailboxes[user].messages.values() if not m.labels & {"SPAM", "TRASH"})}
    for folder, n in expected.items():
        leaf = folder.rsplit("/", 1)[-1]
        assert n in [v for k, v in counts.items() if k.endswith(leaf)], (folder, n, counts)
    assert req.messages_done == sum(expected.values())
