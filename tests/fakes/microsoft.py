"""A local Microsoft: identity platform (msal's authority) + Graph mail, over TLS with a test CA.

From a test::

    fake = start_microsoft_fake(tmp_path)   # free port, TLS; CA written to tmp_path/ca.pem
    fake.settings()      # MICROSOFT_AUTHORITY_HOST, MICROSOFT_GRAPH_URL, LEGACYFLO_CA_BUNDLE
    fake.client_id, fake.client_secret, fake.tenant_id, fake.tenant_domain
    fake.stop()

The app is admin-consented in the main tenant (app-only works at once) but not in the second
tenant (``fake.other_tenant_id``), where the admin-consent flow has to run first.

By hand: ``python -m tests.fakes.microsoft --port 8766`` prints the URLs, the CA path and the
seeded accounts.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from tests.fakes.clock import RealClock
from tests.fakes.graph_api import GraphApi, GraphMailbox, seed_graph_mailbox
from tests.fakes.httpserver import Request, Response, ServerThread
from tests.fakes.microsoft_identity import MicrosoftIdentity
from tests.fakes.tls import TestCertificates, make_test_certificates

TENANT_DOMAIN = "legacyflo.onmicrosoft.com"
TENANT_ID = "5f1c6a52-8f3e-4a5b-9d61-2c0b7e4a9f10"
OTHER_TENANT_DOMAIN = "contoso.onmicrosoft.com"
OTHER_TENANT_ID = "0b9d3e7a-1c44-4f2e-8a55-6d7c8e9f0a21"
DEFAULT_MAILBOXES = {"adele@legacyflo.onmicrosoft.com": 200, "megan@legacyflo.onmicrosoft.com": 30}
CLIENT_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CLIENT_SECRET = "fake~client~secret~0123456789abcdef"
BIG_MESSAGE_BYTES = 3 * 1024 * 1024


class MicrosoftFake:
    def __init__(self, cert_dir: Path | None = None, *, mailboxes: dict[str, int] | None = None,
                 big_message_bytes: int = BIG_MESSAGE_BYTES, clock: Callable[[], float] | None = None,
                 max_concurrency: int = 4, seed: int = 1):
        self.clock = clock or RealClock()
        self._tempdir = None
        if cert_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="legacyflo-msfake-")
            cert_dir = Path(self._tempdir.name)
        self.certificates: TestCertificates = make_test_certificates(Path(cert_dir))
        counts = DEFAULT_MAILBOXES if mailboxes is None else mailboxes
        self.identity = MicrosoftIdentity(clock=self.clock)
        self.tenant = self.identity.add_tenant(
            TENANT_DOMAIN, [*counts, f"admin@{TENANT_DOMAIN}"], tenant_id=TENANT_ID)
        self.other_tenant = self.identity.add_tenant(
            OTHER_TENANT_DOMAIN, [f"admin@{OTHER_TENANT_DOMAIN}", f"lynne@{OTHER_TENANT_DOMAIN}"],
            tenant_id=OTHER_TENANT_ID)
        self.identity.add_app(CLIENT_ID, CLIENT_SECRET, name="LegacyFlo (fake)")
        self.tenant.consented_apps.add(CLIENT_ID)
        self.mailboxes: dict[str, GraphMailbox] = {
            upn.lower(): seed_graph_mailbox(upn, count, seed=seed,
                                            big_message_bytes=big_message_bytes if i == 0 else 0)
            for i, (upn, count) in enumerate(counts.items())
        }
        self.mailboxes[f"lynne@{OTHER_TENANT_DOMAIN}"] = seed_graph_mailbox(
            f"lynne@{OTHER_TENANT_DOMAIN}", 5, seed=seed)
        self.graph = GraphApi(self.identity, self.mailboxes, max_concurrency=max_concurrency)
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        self.tenant_id, self.tenant_domain = TENANT_ID, TENANT_DOMAIN
        self.other_tenant_id = OTHER_TENANT_ID
        self.server: ServerThread | None = None
        self.base_url = ""

    # --- serving --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        for app in (self.identity, self.graph):
            response = app.handle(request)
            if response is not None:
                return response
        return Response.json({"error": "not_found", "error_description": request.path}, 404)

    def bind(self, host: str = "127.0.0.1", port: int = 0) -> MicrosoftFake:
        self.server = ServerThread(self, host=host, port=port,
                                   ssl_context=self.certificates.server_context())
        self.base_url = self.server.url
        self.identity.base_url = self.base_url
        return self

    def start(self, host: str = "127.0.0.1", port: int = 0) -> MicrosoftFake:
        self.bind(host, port).server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> MicrosoftFake:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what clients need -------------------------------------------------------------------
    @property
    def authority_host(self) -> str:
        return self.base_url

    @property
    def graph_url(self) -> str:
        return self.base_url + "/v1.0"

    @property
    def ca_path(self) -> str:
        return str(self.certificates.ca_path)

    @property
    def users(self) -> list[str]:
        return list(self.mailboxes)

    def settings(self) -> dict[str, str]:
        return {"MICROSOFT_AUTHORITY_HOST": self.authority_host, "MICROSOFT_GRAPH_URL": self.graph_url,
                "LEGACYFLO_CA_BUNDLE": self.ca_path}

    def _play(self, url: str, accept: bool, user: str | None) -> str:
        import requests

        page = requests.get(url, verify=self.ca_path, timeout=10)
        page.raise_for_status()
        request_id = re.search(r'name="request_id" value="([^"]+)"', page.text).group(1)
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        data = {"request_id": request_id, "decision": "accept" if accept else "cancel"}
        first_option = re.search(r'<option value="([^"]+)"', page.text)
        if user or first_option:
            data["user"] = user or first_option.group(1)
        answer = requests.post(self.base_url + action, data=data, allow_redirects=False,
                               verify=self.ca_path, timeout=10)
        if "Location" in answer.headers:
            return answer.headers["Location"]
        # response_mode=form_post: the page posts the fields to redirect_uri; hand them back as a query
        target = re.search(r'action="([^"]+)"', answer.text).group(1)
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', answer.text))
        return html.unescape(target) + "?" + urlencode({k: html.unescape(v) for k, v in fields.items()})

    def consent(self, auth_uri: str, *, accept: bool = True, user: str | None = None) -> str:
        """Play the user on the sign-in/consent page (no browser); return the redirect URL."""
        return self._play(auth_uri, accept, user or self.users[0])

    def admin_consent(self, url: str, *, accept: bool = True, admin: str | None = None) -> str:
        """Play a tenant admin on the admin-consent page; return the redirect URL."""
        return self._play(url, accept, admin)


def start_microsoft_fake(cert_dir: Path | None = None, **options) -> MicrosoftFake:
    """A started MicrosoftFake on a free loopback port, TLS with a fresh test CA."""
    return MicrosoftFake(cert_dir, **options).start()


def describe(fake: MicrosoftFake) -> str:
    lines = [f"Microsoft fake listening on {fake.base_url} (TLS, CA {fake.ca_path})"]
    lines += [f"  {name} = {value}" for name, value in fake.settings().items()]
    lines += [f"  authority       {fake.authority_host}/{fake.tenant_id} (or /{fake.tenant_domain}, "
              "/organizations)",
              f"  app             {fake.client_id} / {fake.client_secret}",
              f"  tenant          {fake.tenant_domain} = {fake.tenant_id} (admin consent granted)",
              f"  other tenant    {OTHER_TENANT_DOMAIN} = {fake.other_tenant_id} (no consent yet)",
              f"  limits          {fake.graph.max_concurrency} concurrent requests per mailbox",
              "  mailboxes:"]
    lines += [f"    {upn}: {len(box.messages)} messages in {len(box.folders) - 1} folders"
              for upn, box in fake.mailboxes.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--cert-dir", type=Path, default=Path(tempfile.gettempdir()) / "legacyflo-msfake")
    parser.add_argument("--messages", type=int, default=None, help="messages in adele's mailbox")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    mailboxes = dict(DEFAULT_MAILBOXES)
    if args.messages is not None:
        mailboxes["adele@legacyflo.onmicrosoft.com"] = args.messages
    fake = MicrosoftFake(args.cert_dir, mailboxes=mailboxes).bind(args.host, args.port)
    fake.server._server.verbose = args.verbose
    print(describe(fake), flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
