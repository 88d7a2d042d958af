"""Dovecot 2.3 configuration that checks XOAUTH2 / OAUTHBEARER tokens against the Google fake.

Dovecot's ``passdb { driver = oauth2 }`` reads ``dovecot-oauth2.conf.ext``. What it does with it
(src/auth/db-oauth2.c, lib-oauth2 in 2.3):

- with ``tokeninfo_url`` it GETs ``tokeninfo_url + token`` (so the URL ends in ``access_token=``);
  a 4xx or an ``error`` field means "invalid token";
- with ``introspection_url`` (and no tokeninfo, or ``force_introspection = yes``) it asks the
  introspection endpoint, by ``introspection_mode``: ``auth`` (GET with ``Authorization: Bearer``),
  ``get`` (GET ``introspection_url + token``), ``post`` (POST ``token=...`` form) or ``local``
  (JWT checked with keys from a dict);
- then ``username_attribute`` (default ``email``) must equal the login name (both passed through
  ``username_format``, default ``%Lu``), ``active_attribute``/``active_value`` must match when set,
  and ``scope`` must be one of the space-separated ``scope`` field values;
- only top-level scalar JSON fields are read; ``expires_in`` must be an unsigned integer and
  ``token_type``, when present, must be ``Bearer``.

The fake serves ``/oauth2/v3/tokeninfo?access_token=`` (Google's shape: email, scope, expires_in)
and ``/oauth2/v3/introspect`` (RFC 7662: active, email, username, scope, exp, expires_in) for all
three online modes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

GMAIL_IMAP_SCOPE = "https://mail.google.com/"


def oauth2_conf_ext(base_url: str, *, mode: Literal["post", "get", "auth", "tokeninfo"] = "post",
                    scope: str | None = GMAIL_IMAP_SCOPE, debug: bool = False) -> str:
    """The text of ``dovecot-oauth2.conf.ext`` pointing at a Google fake on ``base_url``."""
    lines = []
    if mode == "tokeninfo":
        lines.append(f"tokeninfo_url = {base_url}/oauth2/v3/tokeninfo?access_token=")
    else:
        introspection = f"{base_url}/oauth2/v3/introspect" + ("?token=" if mode == "get" else "")
        lines += [f"introspection_url = {introspection}", f"introspection_mode = {mode}",
                  "active_attribute = active", "active_value = true"]
    lines.append("username_attribute = email")
    if scope:
        lines.append(f"scope = {scope}")
    lines += ["timeout_msecs = 5000", f"debug = {'yes' if debug else 'no'}"]
    return "\n".join(lines) + "\n"


def dovecot_passdb_block(conf_ext: Path) -> str:
    """The ``dovecot.conf`` lines that enable XOAUTH2/OAUTHBEARER through the oauth2 passdb."""
    return (
        "auth_mechanisms = plain login xoauth2 oauthbearer\n"
        "passdb {\n"
        "  driver = oauth2\n"
        "  mechanisms = xoauth2 oauthbearer\n"
        f"  args = {conf_ext}\n"
        "}\n"
    )


def write_dovecot_oauth2(directory: Path, base_url: str, **options) -> str:
    """Write the .conf.ext into ``directory`` and return the snippet for DovecotServer(extra_config=)."""
    directory.mkdir(parents=True, exist_ok=True)
    conf_ext = directory / "dovecot-oauth2.conf.ext"
    conf_ext.write_text(oauth2_conf_ext(base_url, **options))
    conf_ext.chmod(0o644)
    return dovecot_passdb_block(conf_ext)
