"""A Dovecot that logs mailboxes in with XOAUTH2 tokens of the Google or Microsoft fake.

Dovecot's ``passdb { driver = oauth2 }`` asks an RFC 7662 introspection endpoint about each token
(tests/fakes/dovecot_oauth2.py). For Gmail that is the Google fake itself. Exchange Online has no
such endpoint, so :class:`OutlookIntrospection` plays what Exchange decides at AUTHENTICATE: a
delegated token (``IMAP.AccessAsUser.All`` for outlook.office.com) opens the signed-in user's
mailbox; an app-only token (``IMAP.AccessAsApp``) opens the mailbox the app was given FullAccess
to (``granted``). Tokens are checked against the Microsoft fake in-process (expiry, revocation) or,
by hand, by their RS256 signature with the fake's published keys.

By hand, next to ``python -m tests.fakes.google`` / ``python -m tests.fakes.microsoft``::

    python -m tests.providers_dovecot --google http://127.0.0.1:8765 --user alice@legacyflo.test
    python -m tests.providers_dovecot --microsoft https://127.0.0.1:8766 \\
        --ca /tmp/legacyflo-msfake/ca.pem --user adele@legacyflo.onmicrosoft.com \\
        --app-mailbox megan@legacyflo.onmicrosoft.com

Each user gets a generated test mailbox; the command prints the SSL port and the CA file to give
the portal (GMAIL_IMAP_HOST/PORT or MICROSOFT_IMAP_HOST/PORT, LEGACYFLO_IMAP_CA_FILE).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import tempfile
import time
from pathlib import Path

from tests.fakes.dovecot_oauth2 import write_dovecot_oauth2
from tests.fakes.httpserver import Response, ServerThread
from tests.servers.dovecot import DovecotServer

OUTLOOK = "https://outlook.office.com"


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class JwksVerifier:
    """Check a Microsoft fake's access token by signature (RS256, keys from its JWKS) and expiry."""

    def __init__(self, authority_host: str, ca_file: str | None, tenant: str = "organizations"):
        import requests

        keys = requests.get(f"{authority_host.rstrip('/')}/{tenant}/discovery/v2.0/keys", verify=ca_file or True,
                            timeout=10).json()["keys"]
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.keys = {k["kid"]: rsa.RSAPublicNumbers(int.from_bytes(_b64(k["e"]), "big"),
                                                    int.from_bytes(_b64(k["n"]), "big")).public_key()
                     for k in keys}

    def __call__(self, token: str) -> dict | None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header, claims = json.loads(_b64(header_b64)), json.loads(_b64(payload_b64))
            self.keys[header["kid"]].verify(_b64(signature_b64), f"{header_b64}.{payload_b64}".encode(),
                                            padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, KeyError, InvalidSignature):
            return None
        if claims.get("exp", 0) < time.time():
            return None
        return {"aud": claims.get("aud"), "user": claims.get("upn"),
                "permissions": (claims.get("scp") or "").split() + list(claims.get("roles") or [])}


def in_process_verifier(ms):
    """Ask the running MicrosoftFake (sees revocation too)."""

    def verify(token: str) -> dict | None:
        issued = ms.identity.access_token(token)
        if issued is None:
            return None
        return {"aud": issued.resource, "user": issued.user, "permissions": list(issued.permissions)}

    return verify


class OutlookIntrospection:
    def __init__(self, verify, granted: str = ""):
        self.verify = verify
        self.granted = granted
        self.seen: list[str] = []  # "delegated" / "app_only", for tests

    def handle(self, request) -> Response:
        info = self.verify(request.form().get("token") or "")
        if info is None or info["aud"] != OUTLOOK:
            return Response.json({"active": False})
        if info["user"] and "IMAP.AccessAsUser.All" in info["permissions"]:
            email, kind = info["user"], "delegated"
        elif not info["user"] and "IMAP.AccessAsApp" in info["permissions"] and self.granted:
            email, kind = self.granted, "app_only"
        else:
            return Response.json({"active": False})
        self.seen.append(kind)
        return Response.json({"active": True, "email": email, "scope": " ".join(info["permissions"]),
                              "token_type": "Bearer", "expires_in": 3000})


class OAuthDovecot:
    """Dovecot (SSL) whose oauth2 passdb asks ``introspection_base``/oauth2/v3/introspect."""

    def __init__(self, users: list[str], introspection_base: str):
        self.directory = Path(tempfile.mkdtemp(prefix="lfoa-", dir="/tmp"))
        self.directory.chmod(0o755)  # Dovecot's auth process reads the .conf.ext
        snippet = write_dovecot_oauth2(self.directory, introspection_base, mode="post", scope=None)
        self.server = DovecotServer(users={u: "password-not-used-" + u for u in users}, ssl=True,
                                    extra_config=snippet + "auth_failure_delay = 0\n")

    def __enter__(self) -> DovecotServer:
        return self.server.__enter__()

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - by hand
    from tests.mailgen import generate_mailbox, write_maildir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--google", metavar="URL", help="the Google fake's base URL")
    which.add_argument("--microsoft", metavar="URL", help="the Microsoft fake's base URL")
    parser.add_argument("--ca", help="the Microsoft fake's CA file")
    parser.add_argument("--user", action="append", required=True, help="mailbox address (repeatable)")
    parser.add_argument("--app-mailbox", default="", help="Microsoft: the mailbox app-only tokens may open")
    args = parser.parse_args(argv)
    users = list(args.user) + ([args.app_mailbox] if args.app_mailbox and args.app_mailbox not in args.user else [])
    http = None
    if args.google:
        base = args.google.rstrip("/")
    else:
        http = ServerThread(OutlookIntrospection(JwksVerifier(args.microsoft, args.ca), args.app_mailbox)).start()
        base = http.url
    try:
        with OAuthDovecot(users, base) as dovecot:
            for n, user in enumerate(users):
                write_maildir(dovecot, user, generate_mailbox("test", seed=100 + n))
            host = "GMAIL" if args.google else "MICROSOFT"
            print(f"dovecot with XOAUTH2 on 127.0.0.1:{dovecot.ssl_port} (SSL) for {', '.join(users)}\n"
                  f"  {host}_IMAP_HOST=127.0.0.1 {host}_IMAP_PORT={dovecot.ssl_port} "
                  f"LEGACYFLO_IMAP_CA_FILE={dovecot.ca_file}\nCtrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        if http is not None:
            http.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
