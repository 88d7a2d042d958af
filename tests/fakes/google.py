"""A local Google: OAuth authorization server + Gmail API, on one loopback port.

From a test::

    fake = start_google_fake()            # free port, in a thread, seeded mailboxes
    fake.settings()                       # {"GOOGLE_AUTH_URI": ..., "GMAIL_API_URL": ".../", ...}
    fake.client_id, fake.client_secret    # a registered web client (any loopback redirect URI)
    fake.service_account_info             # JSON key with domain-wide delegation, token_uri → fake
    fake.stop()

By hand: ``python -m tests.fakes.google --port 8765`` prints the URLs and the seeded accounts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.fakes.clock import RealClock
from tests.fakes.gmail_api import GmailApi, GmailMailbox, seed_gmail_mailbox
from tests.fakes.google_oauth import GoogleAuthServer
from tests.fakes.httpserver import Request, Response, ServerThread
from tests.fakes.quota import SlidingWindowQuota

DEFAULT_MAILBOXES = {"alice@legacyflo.test": 240, "bob@legacyflo.test": 40, "carol@legacyflo.test": 0}
WEB_CLIENT_ID = "legacyflo-web.apps.googleusercontent.com"
WEB_CLIENT_SECRET = "GOCSPX-fake-web-client-secret"
SERVICE_ACCOUNT_EMAIL = "legacyflo-backup@legacyflo-test.iam.gserviceaccount.com"
DELEGATED_SCOPES = {"https://www.googleapis.com/auth/gmail.readonly", "https://mail.google.com/"}
GMAIL_USER_QUOTA = 15_000  # units per user per minute
BIG_MESSAGE_BYTES = 3 * 1024 * 1024


class GoogleFake:
    def __init__(self, *, mailboxes: dict[str, int] | None = None,
                 big_message_bytes: int = BIG_MESSAGE_BYTES, clock: Callable[[], float] | None = None,
                 quota_units: int = GMAIL_USER_QUOTA, quota_window: float = 60.0,
                 quota_status: int = 429, seed: int = 1):
        self.clock = clock or RealClock()
        counts = DEFAULT_MAILBOXES if mailboxes is None else mailboxes
        self.mailboxes: dict[str, GmailMailbox] = {
            address.lower(): seed_gmail_mailbox(address, count, seed=seed,
                                                big_message_bytes=big_message_bytes if i == 0 else 0)
            for i, (address, count) in enumerate(counts.items())
        }
        self.auth = GoogleAuthServer(clock=self.clock, users=list(self.mailboxes))
        self.quota = SlidingWindowQuota(quota_units, quota_window, self.clock)
        self.gmail = GmailApi(self.auth, self.mailboxes, self.quota, quota_status=quota_status)
        self.client_id, self.client_secret = WEB_CLIENT_ID, WEB_CLIENT_SECRET
        self.auth.register_client(WEB_CLIENT_ID, WEB_CLIENT_SECRET, name="LegacyFlo (fake)")
        self.service_account = self.auth.register_service_account(SERVICE_ACCOUNT_EMAIL, DELEGATED_SCOPES)
        self.server: ServerThread | None = None
        self.base_url = ""

    # --- serving ------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        for app in (self.auth, self.gmail):
            response = app.handle(request)
            if response is not None:
                return response
        return Response.json({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}, 404)

    def bind(self, host: str = "127.0.0.1", port: int = 0) -> GoogleFake:
        self.server = ServerThread(self, host=host, port=port)
        self.base_url = self.server.url
        self.auth.base_url = self.base_url
        return self

    def start(self, host: str = "127.0.0.1", port: int = 0) -> GoogleFake:
        self.bind(host, port).server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> GoogleFake:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what clients need -----------------------------------------------------------------
    @property
    def users(self) -> list[str]:
        return list(self.mailboxes)

    @property
    def auth_uri(self) -> str:
        return self.base_url + "/o/oauth2/auth"

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    @property
    def revoke_uri(self) -> str:
        return self.base_url + "/revoke"

    @property
    def tokeninfo_uri(self) -> str:
        return self.base_url + "/oauth2/v3/tokeninfo"

    @property
    def introspection_uri(self) -> str:
        return self.base_url + "/oauth2/v3/introspect"

    @property
    def userinfo_uri(self) -> str:
        return self.base_url + "/oauth2/v3/userinfo"

    @property
    def gmail_api_url(self) -> str:
        return self.base_url + "/"  # the trailing slash matters to google-api-python-client

    @property
    def batch_uri(self) -> str:
        return self.base_url + "/batch/gmail/v1"

    @property
    def service_account_info(self) -> dict:
        return self.service_account.info(self.token_uri)

    def settings(self) -> dict[str, str]:
        """The portal's settings that point at this fake."""
        return {"GOOGLE_AUTH_URI": self.auth_uri, "GOOGLE_TOKEN_URI": self.token_uri,
                "GOOGLE_REVOKE_URI": self.revoke_uri, "GMAIL_API_URL": self.gmail_api_url}

    def raw(self, user: str, message_id: str) -> bytes:
        return self.mailboxes[user.lower()].messages[message_id].raw

    def consent(self, authorization_url: str, *, allow: bool = True, user: str | None = None) -> str:
        """Play the user on the consent page (without a browser); return the redirect URL."""
        import re

        import requests

        page = requests.get(authorization_url, timeout=10)
        page.raise_for_status()
        request_id = re.search(r'name="request_id" value="([^"]+)"', page.text).group(1)
        answer = requests.post(self.base_url + "/o/oauth2/approve", allow_redirects=False, timeout=10,
                               data={"request_id": request_id, "decision": "allow" if allow else "deny",
                                     "user": user or self.users[0]})
        return answer.headers["Location"]


def start_google_fake(**options) -> GoogleFake:
    """A started GoogleFake on a free loopback port (stop it with ``.stop()``)."""
    return GoogleFake(**options).start()


def describe(fake: GoogleFake, key_path: Path | None = None) -> str:
    lines = [f"Google fake listening on {fake.base_url}"]
    lines += [f"  {name} = {value}" for name, value in fake.settings().items()]
    lines += [f"  tokeninfo       {fake.tokeninfo_uri}?access_token=",
              f"  introspection   {fake.introspection_uri}  (Dovecot introspection_mode = post)",
              f"  Gmail batch     {fake.batch_uri}",
              f"  web client      {fake.client_id} / {fake.client_secret} (any loopback redirect URI)",
              f"  service account {fake.service_account.client_email}"
              + (f" (key file: {key_path})" if key_path else ""),
              f"  quota           {fake.quota.limit} units / {fake.quota.window:g} s per user",
              "  mailboxes:"]
    lines += [f"    {address}: {len(box.messages)} messages" for address, box in fake.mailboxes.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--messages", type=int, default=None, help="messages in alice's mailbox")
    parser.add_argument("--quota-units", type=int, default=GMAIL_USER_QUOTA)
    parser.add_argument("--quota-window", type=float, default=60.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    mailboxes = dict(DEFAULT_MAILBOXES)
    if args.messages is not None:
        mailboxes["alice@legacyflo.test"] = args.messages
    fake = GoogleFake(mailboxes=mailboxes, quota_units=args.quota_units, quota_window=args.quota_window)
    fake.bind(args.host, args.port)
    fake.server._server.verbose = args.verbose
    key_path = Path(tempfile.gettempdir()) / "legacyflo-fake-service-account.json"
    key_path.write_text(json.dumps(fake.service_account_info, indent=2))
    key_path.chmod(0o600)
    print(describe(fake, key_path), flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
