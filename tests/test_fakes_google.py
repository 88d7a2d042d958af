"""The Google fake speaks Google's wire protocols: checked with raw HTTP, the real client
libraries and a real Dovecot (XOAUTH2 through ``passdb { driver = oauth2 }``)."""

from __future__ import annotations

import base64
import email.parser
import hashlib
import imaplib
import json
import re
import socket
import tempfile
from pathlib import Path

import pytest
import requests
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from connectors import oauth
from connectors.sources import tokens
from tests.fakes.clock import FakeClock
from tests.fakes.dovecot_oauth2 import oauth2_conf_ext, write_dovecot_oauth2
from tests.fakes.google import GMAIL_USER_QUOTA, GoogleFake, describe, start_google_fake

ALICE, BOB = "alice@legacyflo.test", "bob@legacyflo.test"


@pytest.fixture(scope="module")
def google():
    fake = start_google_fake(mailboxes={ALICE: 30, BOB: 3}, big_message_bytes=0, clock=FakeClock())
    yield fake
    fake.stop()


def sa_token(fake: GoogleFake, user: str = ALICE, scope: str = tokens.GMAIL_READONLY_SCOPE) -> str:
    credentials = tokens.google_service_account_credentials(fake.service_account_info, subject=user,
                                                            scopes=[scope], token_uri=fake.token_uri)
    return tokens.google_access_token(credentials)


def gmail(fake: GoogleFake, token: str):
    from google.oauth2.credentials import Credentials

    return build("gmail", "v1", credentials=Credentials(token), static_discovery=True, cache_discovery=False,
                 client_options={"api_endpoint": fake.gmail_api_url})


def test_started_fake_describes_itself(google):
    text = describe(google)
    assert google.base_url.startswith("http://127.0.0.1:") and google.gmail_api_url.endswith("/")
    assert ALICE in text and google.client_id in text and "introspection" in text
    assert google.settings()["GOOGLE_TOKEN_URI"] == google.base_url + "/token"
    assert GoogleFake(mailboxes={}).quota.limit == GMAIL_USER_QUOTA == 15_000


def test_consent_page_has_allow_and_deny_buttons_and_redirects(google):
    url = (f"{google.auth_uri}?response_type=code&client_id={google.client_id}"
           "&redirect_uri=http://127.0.0.1:9/cb&scope=https://mail.google.com/&state=xyz"
           f"&login_hint={BOB}")
    page = requests.get(url, timeout=10).text
    assert 'id="allow"' in page and 'id="deny"' in page and f'value="{BOB}" selected' in page
    assert google.consent(url, allow=False).endswith("?error=access_denied&state=xyz")
    allowed = google.consent(url, user=BOB)
    assert re.match(r"http://127\.0\.0\.1:9/cb\?code=4%2F0fake-.+&state=xyz", allowed)
    unknown = requests.get(url.replace(google.client_id, "nope"), timeout=10)
    assert unknown.status_code == 401 and "invalid_client" in unknown.text


def test_token_endpoint_checks_pkce_s256(google):
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = (f"{google.auth_uri}?response_type=code&client_id={google.client_id}&access_type=offline"
           f"&redirect_uri=http://127.0.0.1:9/cb&scope=https://mail.google.com/&state=s"
           f"&code_challenge={challenge}&code_challenge_method=S256")
    code = re.search(r"code=([^&]+)", google.consent(url)).group(1)
    form = {"grant_type": "authorization_code", "code": requests.utils.unquote(code),
            "redirect_uri": "http://127.0.0.1:9/cb", "client_id": google.client_id,
            "client_secret": google.client_secret}
    wrong = requests.post(google.token_uri, data=form | {"code_verifier": "w" * 50}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    right = requests.post(google.token_uri, data=form | {"code_verifier": verifier}, timeout=10).json()
    assert right["token_type"] == "Bearer" and right["refresh_token"] and right["expires_in"] > 3000
    bad_client = requests.post(google.token_uri, data=form | {"client_secret": "x"}, timeout=10)
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"


@pytest.mark.parametrize("how", ["post", "get", "auth"])
def test_introspection_answers_dovecot_in_every_mode(google, how):
    token = sa_token(google, scope=tokens.GMAIL_IMAP_SCOPE)
    endpoint = google.introspection_uri

    def ask(value: str) -> dict:
        if how == "post":
            return requests.post(endpoint, data={"token": value}, timeout=10).json()
        if how == "get":
            return requests.get(endpoint + "?token=" + requests.utils.quote(value), timeout=10).json()
        return requests.get(endpoint, headers={"Authorization": f"Bearer {value}"}, timeout=10).json()

    answer = ask(token)
    assert answer["active"] is True and answer["email"] == ALICE
    assert answer["scope"] == tokens.GMAIL_IMAP_SCOPE and answer["expires_in"] > 0
    assert all(not isinstance(v, dict | list) for v in answer.values())  # Dovecot reads flat fields
    assert ask("ya29.unknown") == {"active": False}


def test_tokeninfo_userinfo_and_revocation(google):
    token = sa_token(google, BOB)
    info = requests.get(google.tokeninfo_uri, params={"access_token": token}, timeout=10)
    assert info.status_code == 200 and info.json()["email"] == BOB
    assert requests.get(google.userinfo_uri, headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()["email"] == BOB
    assert requests.post(google.revoke_uri, data={"token": token}, timeout=10).status_code == 200
    gone = requests.get(google.tokeninfo_uri, params={"access_token": token}, timeout=10)
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_token"
    profile = requests.get(google.gmail_api_url + "gmail/v1/users/me/profile",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert profile.status_code == 401 and profile.json()["error"]["status"] == "UNAUTHENTICATED"


def test_messages_list_pages_and_filters(google):
    service = gmail(google, sa_token(google))
    mailbox = google.mailboxes[ALICE]
    listed, token = [], None
    while True:
        page = service.users().messages().list(userId="me", maxResults=7, pageToken=token,
                                               includeSpamTrash=True).execute()
        listed += [m["id"] for m in page["messages"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert sorted(listed) == sorted(mailbox.messages) and len(listed) == 30
    dates = [mailbox.messages[i].date for i in listed]
    assert dates == sorted(dates, reverse=True)  # newest first

    default = service.users().messages().list(userId="me", maxResults=500).execute()["messages"]
    assert {m["id"] for m in default} == {k for k, m in mailbox.messages.items()
                                          if not m.labels & {"SPAM", "TRASH"}}
    inbox = service.users().messages().list(userId="me", labelIds=["INBOX"]).execute()
    assert all("INBOX" in mailbox.messages[m["id"]].labels for m in inbox.get("messages", []))
    window = service.users().messages().list(userId="me", q="after:2023/01/03 before:2023/01/05",
                                             includeSpamTrash=True).execute()
    assert {m["id"] for m in window["messages"]} == {
        k for k, m in mailbox.messages.items() if "2023-01-03" <= m.date.date().isoformat() < "2023-01-05"}


def test_messages_get_formats_and_labels(google):
    service = gmail(google, sa_token(google))
    mailbox = google.mailboxes[ALICE]
    message_id, stored = next(iter(mailbox.messages.items()))
    raw = service.users().messages().get(userId="me", id=message_id, format="raw").execute()
    assert base64.urlsafe_b64decode(raw["raw"]) == stored.raw
    assert raw["labelIds"] == sorted(stored.labels) and int(raw["internalDate"]) == stored.date.timestamp() * 1000
    minimal = service.users().messages().get(userId="me", id=message_id, format="minimal").execute()
    assert "raw" not in minimal and "payload" not in minimal and minimal["labelIds"]
    metadata = service.users().messages().get(userId="me", id=message_id, format="metadata",
                                              metadataHeaders=["Subject"]).execute()
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["Subject"]
    labels = service.users().labels().list(userId="me").execute()["labels"]
    assert {"Projekte/日本語", "Reçus/Été 2024", "INBOX", "SPAM"} <= {label["name"] for label in labels}
    with pytest.raises(HttpError) as caught:
        service.users().messages().get(userId="me", id="0000000000000000").execute()
    assert caught.value.resp.status == 404


def test_batch_speaks_multipart_mixed_with_response_content_ids(google):
    token = sa_token(google)
    ids = list(google.mailboxes[ALICE].messages)[:3]
    boundary = "===============7330845974216740156=="
    parts = "".join(
        f"--{boundary}\nContent-Type: application/http\nContent-Transfer-Encoding: binary\n"
        f"Content-ID: <b29c5de2-0db4-490b-b421-6a51b598bd22 + {n}>\n\n"
        f"GET /gmail/v1/users/me/messages/{i}?format=raw&alt=json HTTP/1.1\n"
        f"Authorization: Bearer {token}\n\n" for n, i in enumerate(ids, 1))
    answer = requests.post(google.batch_uri, data=parts + f"--{boundary}--",
                           headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    envelope = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + answer.headers["Content-Type"].encode() + b"\r\n\r\n" + answer.content)
    responses = envelope.get_payload()
    assert [p["Content-ID"] for p in responses] == [
        f"<response-b29c5de2-0db4-490b-b421-6a51b598bd22 + {n}>" for n in (1, 2, 3)]
    for part, message_id in zip(responses, ids, strict=True):
        status_line, _, rest = part.get_payload().partition("\r\n")
        assert status_line == "HTTP/1.1 200 OK"
        body = json.loads(rest.split("\r\n\r\n", 1)[1])
        assert base64.urlsafe_b64decode(body["raw"]) == google.raw(ALICE, message_id)


def test_quota_is_per_user_and_answers_like_gmail():
    clock = FakeClock()
    fake = start_google_fake(mailboxes={ALICE: 5, BOB: 5}, big_message_bytes=0, clock=clock,
                             quota_units=20, quota_window=60)
    try:
        alice, bob = gmail(fake, sa_token(fake)), gmail(fake, sa_token(fake, BOB))
        for _ in range(4):
            alice.users().messages().list(userId="me").execute()  # 4 × 5 units = the whole minute
        with pytest.raises(HttpError) as caught:
            alice.users().messages().list(userId="me").execute()
        error = json.loads(caught.value.content)["error"]
        assert caught.value.resp.status == 429 and error["status"] == "RESOURCE_EXHAUSTED"
        assert error["errors"][0] == {"message": error["message"], "domain": "usageLimits",
                                      "reason": "rateLimitExceeded"}
        bob.users().messages().list(userId="me").execute()  # other users have their own budget
        fake.gmail.quota_status = 403
        with pytest.raises(HttpError) as caught:
            alice.users().labels().list(userId="me").execute()
        assert caught.value.resp.status == 403
        assert json.loads(caught.value.content)["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
        clock.advance(60)
        alice.users().messages().list(userId="me").execute()
        assert fake.quota.peak[ALICE] == 20 and fake.quota.rejected[ALICE] == 2
    finally:
        fake.stop()


def test_fault_hooks_fail_the_nth_call_and_throttle_batch_parts():
    fake = start_google_fake(mailboxes={ALICE: 40}, big_message_bytes=0, clock=FakeClock())
    try:
        service = gmail(fake, sa_token(fake))
        fake.gmail.faults.fail_call(2, 503)
        service.users().getProfile(userId="me").execute()
        with pytest.raises(HttpError) as caught:
            service.users().getProfile(userId="me").execute()
        assert caught.value.resp.status == 503
        fake.gmail.faults.throttle_batch_parts(0.5, status=403, seed=1)
        outcomes = {}
        batch = BatchHttpRequest(callback=lambda rid, resp, exc: outcomes.__setitem__(rid, exc),
                                 batch_uri=fake.batch_uri)
        for message_id in fake.mailboxes[ALICE].messages:
            batch.add(service.users().messages().get(userId="me", id=message_id, format="raw"),
                      request_id=message_id)
        batch.execute()
        throttled = [e for e in outcomes.values() if e is not None]
        assert len(outcomes) == 40 and 8 < len(throttled) < 32 and fake.gmail.throttled == len(throttled)
        assert {e.resp.status for e in throttled} == {403}
    finally:
        fake.stop()


def test_dovecot_conf_ext_text():
    text = oauth2_conf_ext("http://127.0.0.1:1234", mode="get")
    assert "introspection_url = http://127.0.0.1:1234/oauth2/v3/introspect?token=" in text
    assert "introspection_mode = get" in text and "scope = https://mail.google.com/" in text
    assert "tokeninfo_url = http://127.0.0.1:1234/oauth2/v3/tokeninfo?access_token=" in oauth2_conf_ext(
        "http://127.0.0.1:1234", mode="tokeninfo")


class _ImapFrom(imaplib.IMAP4):
    """imaplib from a chosen loopback source address: Dovecot delays refused logins per client IP,
    so each refused attempt comes from its own 127.0.0.x and stays fast."""

    def __init__(self, port: int, source: str):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def _refused(port: int, source: str, user: str, token: str) -> bool:
    client = _ImapFrom(port, source)
    try:
        client.authenticate("XOAUTH2", lambda _: tokens.xoauth2_string(user, token).encode())
        return False
    except imaplib.IMAP4.error:
        return True
    finally:
        client.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["post", "get", "auth", "tokeninfo"])
def test_dovecot_accepts_xoauth2_tokens_checked_against_the_fake(google, mode):
    from imapclient import IMAPClient

    from tests.servers.dovecot import DovecotServer

    directory = Path(tempfile.mkdtemp(prefix="lfoa-", dir="/tmp"))
    directory.chmod(0o755)  # Dovecot's auth process reads the .conf.ext
    snippet = write_dovecot_oauth2(directory, google.base_url, mode=mode) + "auth_failure_delay = 0\n"
    with DovecotServer(users={ALICE: "unused-password"}, extra_config=snippet) as dovecot:
        imap_token = sa_token(google, ALICE, tokens.GMAIL_IMAP_SCOPE)
        client = IMAPClient("127.0.0.1", dovecot.port, ssl=False, timeout=10)
        assert client.oauth2_login(ALICE, imap_token) == [b"Logged in"]
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.logout()

        assert _refused(dovecot.port, "127.0.0.2", ALICE, "ya29.not-a-token")
        assert _refused(dovecot.port, "127.0.0.3", ALICE, sa_token(google, BOB, tokens.GMAIL_IMAP_SCOPE))
        assert _refused(dovecot.port, "127.0.0.4", ALICE,
                        sa_token(google, ALICE, tokens.GMAIL_READONLY_SCOPE))  # lacks the IMAP scope
        oauth.google_revoke(tokens.GoogleClient("x", "y", revoke_uri=google.revoke_uri), imap_token)
        assert _refused(dovecot.port, "127.0.0.5", ALICE, imap_token)
