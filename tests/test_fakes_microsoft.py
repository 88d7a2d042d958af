"""The Microsoft fake speaks the identity platform's and Graph's wire protocols over TLS."""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.microsoft import MicrosoftFake, describe

ADELE = "adele@legacyflo.onmicrosoft.com"


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca"), mailboxes={ADELE: 40}, big_message_bytes=0).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _reset(ms):
    ms.graph.latency, ms.graph.page_cap = 0.0, None
    ms.graph.peak_concurrency.clear()
    ms.graph.peak_attempted.clear()
    ms.graph.concurrency_rejections = 0


def get(ms, path: str, token: str | None = None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = path if path.startswith("https://") else ms.base_url + path
    return requests.get(url, headers=headers, params=params, verify=ms.ca_path, timeout=10)


def app_token(ms, tenant: str | None = None, scope: str = "https://graph.microsoft.com/.default") -> str:
    answer = requests.post(f"{ms.base_url}/{tenant or ms.tenant_id}/oauth2/v2.0/token", verify=ms.ca_path,
                           timeout=10, data={"grant_type": "client_credentials", "client_id": ms.client_id,
                                             "client_secret": ms.client_secret, "scope": scope})
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_tls_needs_the_test_ca(ms):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(ms.base_url + f"/{ms.tenant_id}/v2.0/.well-known/openid-configuration", timeout=10,
                     verify=True)
    assert ms.settings()["LEGACYFLO_CA_BUNDLE"] == ms.ca_path
    assert ms.client_id in describe(ms) and ms.base_url.startswith("https://127.0.0.1:")


def test_oidc_discovery_and_signed_tokens(ms):
    config = get(ms, f"/{ms.tenant_domain}/v2.0/.well-known/openid-configuration").json()
    assert config["issuer"] == f"{ms.base_url}/{ms.tenant_id}/v2.0"
    assert config["token_endpoint"] == f"{ms.base_url}/{ms.tenant_domain}/oauth2/v2.0/token"
    assert get(ms, "/organizations/v2.0/.well-known/openid-configuration").json()["issuer"].endswith(
        "/{tenantid}/v2.0")
    assert get(ms, "/nope.example/v2.0/.well-known/openid-configuration").status_code == 400

    [key] = get(ms, config["jwks_uri"]).json()["keys"]
    public = rsa.RSAPublicNumbers(int.from_bytes(_b64(key["e"]), "big"),
                                  int.from_bytes(_b64(key["n"]), "big")).public_key()
    header, payload, signature = app_token(ms).split(".")
    public.verify(_b64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    claims = json.loads(_b64(payload))
    assert claims["aud"] == "https://graph.microsoft.com" and "Mail.Read" in claims["roles"]
    assert json.loads(_b64(header))["kid"] == key["kid"]


def test_client_credentials_rules(ms):
    def token(scope: str, tenant: str | None = None, secret: str | None = None) -> requests.Response:
        return requests.post(f"{ms.base_url}/{tenant or ms.tenant_id}/oauth2/v2.0/token", verify=ms.ca_path,
                             timeout=10, data={"grant_type": "client_credentials", "client_id": ms.client_id,
                                               "client_secret": secret or ms.client_secret, "scope": scope})

    assert token("https://graph.microsoft.com/Mail.Read").json()["error_codes"] == [1002012]
    assert token("https://graph.microsoft.com/.default", ms.other_tenant_id).json()["error_codes"] == [700016]
    wrong = token("https://graph.microsoft.com/.default", secret="wrong")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    outlook = token("https://outlook.office365.com/.default").json()["access_token"]
    assert json.loads(_b64(outlook.split(".")[1]))["roles"] == ["IMAP.AccessAsApp"]


def test_admin_consent_redirects_with_tenant_and_state(ms):
    url = (f"{ms.base_url}/organizations/v2.0/adminconsent?client_id={ms.client_id}"
           "&redirect_uri=https://portal.example/consent&state=abc")
    page = get(ms, url).text
    assert 'id="accept"' in page and 'id="cancel"' in page
    query = parse_qs(urlsplit(ms.admin_consent(url, admin=f"admin@{ms.tenant_domain}")).query)
    assert query["admin_consent"] == ["True"] and query["tenant"] == [ms.tenant_id]
    assert query["state"] == ["abc"]
    cancelled = parse_qs(urlsplit(ms.admin_consent(url, accept=False)).query)
    assert cancelled["error"] == ["access_denied"] and cancelled["state"] == ["abc"]


def test_folders_well_known_names_hidden_and_paging(ms):
    token = app_token(ms)
    base = f"/v1.0/users/{ADELE}"
    visible = get(ms, f"{base}/mailFolders", token).json()
    assert len(visible["value"]) == 10 and "@odata.nextLink" in visible  # Graph's default page size
    names, url = [], f"{ms.base_url}{base}/mailFolders?includeHiddenFolders=true"
    while url:
        page = get(ms, url, token).json()
        names += [f["displayName"] for f in page["value"]]
        url = page.get("@odata.nextLink")
    assert "Verborgen" in names and "Inbox" in names and len(names) == len(set(names))
    top_level = get(ms, f"{base}/mailFolders", token, **{"$top": 100}).json()["value"]
    assert "Verborgen" not in [f["displayName"] for f in top_level]
    for name in ("inbox", "sentitems", "deleteditems", "junkemail", "archive", "msgfolderroot"):
        assert get(ms, f"{base}/mailFolders/{name}", token).status_code == 200
    inbox = get(ms, f"{base}/mailFolders/inbox", token).json()
    children = get(ms, f"{base}/mailFolders/{inbox['id']}/childFolders", token).json()["value"]
    assert {c["displayName"] for c in children} == {"Projekte", "Reçus"} and inbox["childFolderCount"] == 2


def test_messages_paging_select_filter_and_value(ms):
    token = app_token(ms)
    base = f"/v1.0/users/{ADELE}/mailFolders/inbox/messages"
    first = get(ms, base, token, **{"$select": "id,receivedDateTime", "$top": 3}).json()
    assert set(first["value"][0]) == {"id", "receivedDateTime", "@odata.etag"}
    assert "%24skiptoken=" in first["@odata.nextLink"] and "%24select=" in first["@odata.nextLink"]
    second = get(ms, first["@odata.nextLink"], token).json()
    assert len(second["value"]) == 3 and second["value"][0]["id"] != first["value"][0]["id"]
    filtered = get(ms, base, token, **{"$filter": "receivedDateTime ge 2023-01-03T00:00:00Z and "
                                                  "receivedDateTime lt 2023-01-05T00:00:00Z", "$top": 100}).json()
    assert all("2023-01-03" <= m["receivedDateTime"] < "2023-01-05" for m in filtered["value"])
    assert get(ms, base, token, **{"$filter": "subject eq 'x'"}).json()["error"]["code"] == \
        "ErrorInvalidUrlQueryFilter"
    assert get(ms, base, token, **{"$top": 1001}).status_code == 400

    message_id = first["value"][0]["id"]
    raw = get(ms, f"/v1.0/users/{ADELE}/messages/{requests.utils.quote(message_id, safe='')}/$value", token)
    assert raw.status_code == 200 and raw.content == ms.mailboxes[ADELE].messages[message_id].raw
    assert int(raw.headers["Content-Length"]) == len(raw.content)


def test_auth_errors_look_like_graph(ms):
    unauthenticated = get(ms, f"/v1.0/users/{ADELE}/mailFolders", "not-a-token")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "InvalidAuthenticationToken"
    me = get(ms, "/v1.0/me/mailFolders", app_token(ms))
    assert me.status_code == 400 and "delegated" in me.json()["error"]["message"]
    assert get(ms, "/v1.0/users/nobody@legacyflo.onmicrosoft.com/mailFolders",
               app_token(ms)).json()["error"]["code"] == "ErrorInvalidUser"


def test_fifth_concurrent_request_gets_429_mailbox_concurrency(ms):
    token = app_token(ms)
    ms.graph.latency = 0.5
    answers: list[requests.Response] = []
    start = threading.Barrier(6)

    def call() -> None:
        start.wait()
        answers.append(get(ms, f"/v1.0/users/{ADELE}/mailFolders/inbox", token))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    throttled = [a for a in answers if a.status_code == 429]
    assert len(throttled) == 2 and sum(a.status_code == 200 for a in answers) == 4
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled[0].json()["error"]["message"]
    assert throttled[0].headers["Retry-After"] == "1"
    assert ms.graph.peak_concurrency[ADELE] == 4 and ms.graph.peak_attempted[ADELE] == 5


def test_injected_throttling_carries_retry_after(ms):
    token = app_token(ms)
    ms.graph.faults.throttle(1, retry_after=12)
    ms.graph.faults.throttle(1, retry_after=3, status=503)
    first, second = (get(ms, f"/v1.0/users/{ADELE}/mailFolders", token) for _ in range(2))
    assert (first.status_code, first.headers["Retry-After"]) == (429, "12")
    assert (second.status_code, second.headers["Retry-After"]) == (503, "3")
    assert get(ms, f"/v1.0/users/{ADELE}/mailFolders", token).status_code == 200
