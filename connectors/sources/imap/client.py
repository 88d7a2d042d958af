"""IMAP source: any IMAP4rev1 server, with provider flavours (Gmail, Office 365, Yahoo, Mithi).

Serves each message as the exact bytes of ``BODY.PEEK[]`` (never sets \\Seen). Source ids are
``"{uidvalidity}:{uid}"``, so an id can never silently point at another message after the
server renumbers a folder.

How it stays correct on real servers:
- Listing walks the folder in UID windows (boundaries found with one ``FETCH n (UID)``) and
  runs ``UID SEARCH UID lo:hi [SINCE] [BEFORE]`` per window: no command touches more than
  ``window`` messages (Yahoo's MESSAGELIMIT=1000), no response line grows past imaplib's 1 MB
  limit, and a concurrent expunge cannot shift a message out of the listing.
- Fetching first asks for RFC822.SIZE per window, then fetches bodies in batches bounded by
  bytes (and by count), so memory holds one batch, or one message when it is larger.
- Dropped connections, BYE, timeouts: reconnect with backoff, re-select, check UIDVALIDITY,
  and fetch again only what has not been yielded. A batch that keeps failing is retried one
  message at a time; a message that still fails is a MessageFailure with the reason. A message
  expunged meanwhile is reported as skipped.
- imapclient sets imaplib's debug level to 5, which makes imaplib format a repr of every
  response; we reset it to 0 after connecting (fetching ~10x faster: bench/README.md). Passwords and
  tokens are never logged.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from imapclient import IMAPClient, imap_utf7
from imapclient.exceptions import CapabilityError, LoginError
from imapclient.response_parser import parse_fetch_response
from imapclient.util import to_unicode

from connectors.model import (
    AuthenticationFailed,
    ConnectionFailed,
    Folder,
    FolderUnavailable,
    Message,
    MessageFailure,
    TransientError,
)
from connectors.sources import Source
from connectors.sources.imap.connect import CheckedIMAPClient, speaks_plain_imap, speaks_tls
from connectors.sources.imap.fetch import parse_fetch
from connectors.sources.imap.presets import PRESETS, SECURITY_CHOICES

log = logging.getLogger(__name__)


_TRANSIENT = (imaplib.IMAP4.abort, OSError, TransientError)  # OSError covers socket/ssl/timeouts


class _UidValidityChanged(Exception):
    pass


def sequence_set(uids: Iterable[int]) -> str:
    """``[1,2,3,7,9,10]`` → ``"1:3,7,9:10"`` (short command lines; runs only of listed UIDs)."""
    out: list[str] = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def decode_mailbox_name(raw: bytes | str) -> str:
    """Modified UTF-7 → Unicode; servers that send raw UTF-8 (or worse) still get a readable name."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if all(b < 0x80 for b in raw):
        try:
            return imap_utf7.decode(raw)
        except (UnicodeError, ValueError):
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_UNSAFE_COMPONENT = re.compile(r"[\x00-\x1f\x7f]")


def folder_path(name: str, separator: str | None, prefix: str = "") -> str:
    """A decoded IMAP name as the archive shows it: '/' between levels, the personal namespace
    prefix removed (``INBOX.Sent`` → ``Sent`` on Mithi/Courier), INBOX kept as INBOX.

    A '/' inside one level (possible when the separator is '.') becomes '_', and '.', '..' and
    empty levels are neutralised, so no folder name can escape or alias the archive tree.
    """
    if name.upper() == "INBOX":
        return "INBOX"
    if prefix and name.upper().startswith(prefix.upper()) and len(name) > len(prefix):
        name = name[len(prefix):]
    parts = name.split(separator) if separator else [name]
    clean = []
    for part in parts:
        part = _UNSAFE_COMPONENT.sub("", part)
        if separator != "/":
            part = part.replace("/", "_")
        if part in ("", ".", ".."):
            part = "_" + part
        clean.append(part)
    if clean[0].upper() == "INBOX":
        clean[0] = "INBOX"
    return "/".join(clean)


def _unverified(where: str, exc: ssl.SSLCertVerificationError) -> str:
    """A certificate that cannot be verified, and how to trust a private CA (the portal's setting)."""
    return (f"The TLS certificate of {where} could not be verified ({exc.verify_message}). If the "
            "server uses a self-signed certificate or a private certificate authority, set "
            "LEGACYFLO_IMAP_CA_FILE to that CA's PEM file on the portal and its workers.")


def _flag_set(flags: Iterable[bytes | str]) -> set[str]:
    return {to_unicode(f).lower() for f in flags}


class ImapSource(Source):
    """Read a mailbox over IMAP. Use as a context manager; connects lazily."""

    def __init__(
        self,
        host: str = "",
        port: int | None = None,
        security: str | None = None,
        username: str = "",
        password: str | None = None,
        *,
        oauth2_token: Callable[[], str] | None = None,
        flavour: str = "imap",
        allow_private: bool = False,
        connect_timeout: float = 30.0,
        read_timeout: float = 180.0,
        ssl_verify: bool = True,
        ca_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        batch_bytes: int = 8 * 1024 * 1024,
        batch_messages: int = 500,
        retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        connect_attempts: int = 2,
    ) -> None:
        if flavour not in PRESETS:
            raise ValueError(f"unknown IMAP flavour {flavour!r}")
        self.preset = PRESETS[flavour]
        self.flavour = flavour
        self.host = host or self.preset.host
        self.port = int(port or self.preset.port)
        self.security = security or self.preset.security
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}")
        self.username = username
        self._password = password
        self._oauth2_token = oauth2_token
        self.allow_private = allow_private
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._ssl_context = ssl_context or self._make_ssl_context(ssl_verify, ca_file)
        self.window = self.preset.window
        self.batch_bytes = batch_bytes
        self.batch_messages = min(batch_messages, self.window)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.connect_attempts = max(1, connect_attempts)
        self._client: IMAPClient | None = None
        self._selected: tuple[str, int] | None = None  # (ref, uidvalidity)
        self._capabilities: set[str] = set()
        self._prefix: str | None = None
        self.reconnects = 0

    def __repr__(self) -> str:  # never shows the password
        return f"ImapSource({self.username}@{self.host}:{self.port}, {self.security}, {self.flavour})"

    # ---- connection ------------------------------------------------------------------------
    @staticmethod
    def _make_ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca_file)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _open(self) -> IMAPClient:
        """Connect and log in. Every call (reconnects too) resolves and checks the host again
        and connects to the checked address (``connectors.sources.imap.connect``)."""
        where = f"{self.host}:{self.port}"
        from imapclient import SocketTimeout

        try:
            client = CheckedIMAPClient(self.host, self.port, allow_private=self.allow_private,
                                       ssl=self.security == "ssl", ssl_context=self._ssl_context, use_uid=True,
                                       timeout=SocketTimeout(self.connect_timeout, self.read_timeout))
        except socket.gaierror as exc:
            raise ConnectionFailed(f"The host name {self.host!r} cannot be resolved ({exc.strerror}).") from exc
        except ConnectionRefusedError as exc:
            raise ConnectionFailed(f"{where} refused the connection: is the host and port right, "
                                   "and is the IMAP server running?") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionFailed(_unverified(where, exc)) from exc
        except ssl.SSLError as exc:
            if speaks_plain_imap(self.host, self.port, self._probe_timeout, allow_private=self.allow_private):
                raise ConnectionFailed(f"{where} answered in plain text, not TLS: choose STARTTLS or None "
                                       "for this port, or give the server's SSL port (usually 993).") from exc
            raise ConnectionFailed(f"The TLS handshake with {where} failed ({exc.reason or exc}): "
                                   "check the security setting (SSL or STARTTLS) and the port.") from exc
        except TimeoutError as exc:
            if speaks_tls(self.host, self.port, self._probe_timeout, allow_private=self.allow_private):
                raise ConnectionFailed(f"{where} did not greet in plain text: the server spoke TLS. "
                                       "Choose SSL for this port.") from exc
            raise TransientError(f"{where} did not answer in time (no IMAP greeting after "
                                 f"{self.connect_timeout:g}s): check host, port and security "
                                 "setting.") from exc
        except imaplib.IMAP4.error as exc:
            raise TransientError(f"{where} sent no valid IMAP greeting ({exc}).") from exc
        except OSError as exc:
            raise ConnectionFailed(f"Cannot connect to {where}: {exc.strerror or exc}.") from exc
        client._imap.debug = 0  # see module docstring: 10x faster fetches
        client.folder_encode = False  # we decode names ourselves, tolerantly
        try:
            if self.security == "starttls":
                try:
                    client.starttls(self._ssl_context)
                except CapabilityError as exc:
                    raise ConnectionFailed(f"{where} does not offer STARTTLS; choose SSL or "
                                           "no encryption.") from exc
                except ssl.SSLCertVerificationError as exc:
                    raise ConnectionFailed(_unverified(where, exc)) from exc
            self._login(client)
            self._capabilities = {to_unicode(c).upper() for c in client.capabilities()}
        except BaseException:
            try:
                client.shutdown()
            except Exception:
                pass
            raise
        return client

    def _login(self, client: IMAPClient) -> None:
        password = self._password or ""
        try:
            if self._oauth2_token is not None:
                client.oauth2_login(self.username, self._oauth2_token())
            elif (password + self.username).isascii():
                client.login(self.username, password)
            elif b"AUTH=PLAIN" in client.capabilities():
                client.plain_login(self.username, password)  # SASL PLAIN carries UTF-8
            else:
                raise AuthenticationFailed(
                    f"{self.host} cannot take a user name or password with non-ASCII characters "
                    "(it offers neither AUTH=PLAIN nor UTF-8 LOGIN).")
        except LoginError as exc:
            detail = re.sub(r"^b'(.*)'$", r"\1", str(exc).strip()) or "no reason given"
            how = "XOAUTH2 token" if self._oauth2_token is not None else "user name or password"
            raise AuthenticationFailed(
                f"{self.host} refused the login of {self.username!r}: wrong {how}? "
                f"(server said: {detail[:200]})") from exc

    def _sleep_backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        time.sleep(delay * (0.5 + random.random() / 2))

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            attempt = 0
            while True:
                try:
                    self._client = self._open()
                    break
                except TransientError:
                    attempt += 1
                    if attempt >= self.connect_attempts:
                        raise
                    self._sleep_backoff(attempt)
            self._selected = None
        return self._client

    def _drop(self) -> None:
        """Forget a connection that failed (without waiting on a dead socket)."""
        client, self._client, self._selected = self._client, None, None
        if client is not None:
            try:
                client.shutdown()
            except Exception:
                pass

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.logout()
            except Exception:
                pass
        self._drop()

    def _call(self, what: str, fn: Callable[[], object]):
        """Run ``fn`` and retry transient faults (with a fresh connection) ``retries`` times."""
        attempt = 0
        while True:
            try:
                return fn()
            except (AuthenticationFailed, ConnectionFailed, FolderUnavailable):
                raise
            except _TRANSIENT as exc:
                attempt += 1
                self._drop()
                if attempt > self.retries:
                    raise TransientError(f"{what} failed after {self.retries} retries: {exc}") from exc
                log.warning("IMAP %s failed (%s); reconnecting (attempt %d)", what, exc, attempt)
                self.reconnects += 1
                self._sleep_backoff(attempt - 1)

    # ---- folders ---------------------------------------------------------------------------
    def _namespace_prefix(self) -> str:
        """The personal namespace's prefix as the server reports it (``INBOX.`` on Courier-style
        servers such as Mithi); empty without NAMESPACE."""
        if self._prefix is None:
            self._prefix = ""
            if "NAMESPACE" in self._capabilities:
                try:
                    personal = self.client.namespace().personal or ()
                    if personal and personal[0][0]:
                        self._prefix = decode_mailbox_name(personal[0][0])
                except imaplib.IMAP4.error:
                    pass
        return self._prefix

    def list_all_folders(self) -> list[Folder]:
        """Every folder of the account as the server lists it, parents before children."""
        def fetch():
            rows = self.client.list_folders()
            return rows, self._namespace_prefix()

        rows, prefix = self._call("LIST", fetch)
        folders: list[Folder] = []
        seen: dict[str, int] = {}
        for flags, delimiter, raw_name in sorted(rows, key=lambda r: str(r[2])):
            if isinstance(raw_name, int):
                raw_name = str(raw_name).encode()
            name = decode_mailbox_name(raw_name)
            path = folder_path(name, to_unicode(delimiter) if delimiter else None, prefix)
            if path in seen:  # two server names that map to one path: keep both, distinctly
                seen[path] += 1
                path = f"{path} ({seen[path]})"
            else:
                seen[path] = 1
            flagset = _flag_set(flags)
            selectable = not ({"\\noselect", "\\nonexistent"} & flagset)
            ref = raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name
            folders.append(_FolderWithFlags(path, ref, None, selectable, frozenset(flagset)))
        folders.sort(key=lambda f: (f.path != "INBOX", f.path.split("/")))
        return folders

    def list_folders(self) -> list[Folder]:
        """The folders to back up. Gmail: the \\All folder (plus Trash and Spam, whose messages
        are not in All Mail) instead of one folder per label; labels come with each message."""
        folders = self.list_all_folders()
        if self.preset.all_mail_only:
            all_mail = [f for f in folders if "\\all" in f.flags]
            if all_mail:
                keep = {"\\all", "\\trash", "\\junk"}
                return [f for f in folders if f.flags & keep]
        return folders

    @property
    def _probe_timeout(self) -> float:
        return min(self.connect_timeout, 5.0)

    def test_connection(self, *, timeout: float | None = None) -> list[Folder]:
        """Log in and list every folder with its message count (STATUS MESSAGES).

        With ``timeout`` (the form's button): one connection attempt, no reconnects, and every
        network wait bounded by ``timeout``, so a wrong port or security setting gets its answer
        in seconds instead of after the worker's rounds of retries."""
        if timeout is not None:
            self.connect_attempts, self.retries = 1, 0
            self.connect_timeout = self.read_timeout = timeout
        out = []
        for folder in self.list_all_folders():
            count = None
            if folder.selectable:
                try:
                    status = self._call("STATUS", lambda f=folder: self.client.folder_status(
                        f.ref, [b"MESSAGES"]))
                    count = int(status.get(b"MESSAGES", 0))
                except imaplib.IMAP4.error:
                    count = None
            out.append(Folder(folder.path, folder.ref, count, folder.selectable))
        return out

    # ---- selecting and listing ---------------------------------------------------------------
    def _select(self, folder: Folder) -> tuple[int, int]:
        """Select (read-only) and return (uidvalidity, exists)."""
        try:
            response = self.client.select_folder(folder.ref, readonly=True)
        except UnicodeEncodeError as exc:
            raise FolderUnavailable(f"The folder {folder.path!r} has a name this server did not "
                                    "encode in modified UTF-7; it cannot be selected.") from exc
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise FolderUnavailable(f"The folder {folder.path!r} cannot be opened: {exc}") from exc
        uidvalidity = int(response.get(b"UIDVALIDITY", 0))
        self._selected = (folder.ref, uidvalidity)
        return uidvalidity, int(response.get(b"EXISTS", 0))

    def _ensure_selected(self, folder: Folder, uidvalidity: int) -> None:
        if self._selected == (folder.ref, uidvalidity):
            return
        current, _exists = self._select(folder)
        if current != uidvalidity:
            raise _UidValidityChanged(current)

    def _window_starts(self, exists: int) -> list[int]:
        """The UID of every ``window``-th message (1st, window+1st, ...)."""
        seqs = list(range(1, exists + 1, self.window))
        starts = []
        for i in range(0, len(seqs), self.window):
            chunk = seqs[i:i + self.window]
            typ, data = self.client._imap.fetch(",".join(map(str, chunk)), "(UID)")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"FETCH (UID) failed: {data}")
            parsed = parse_fetch_response(data, True, False)
            starts += sorted(int(v[b"UID"]) for v in parsed.values() if b"UID" in v)
        return sorted(set(starts)) or [1]

    def list_message_ids(self, folder: Folder, *, since: dt.date | None = None,
                         before: dt.date | None = None) -> list[str]:
        if not folder.selectable:
            return []

        def listing() -> list[str]:
            uidvalidity, exists = self._select(folder)
            if exists == 0:
                return []
            dates: list = []
            if since:
                dates += ["SINCE", since]
            if before:
                dates += ["BEFORE", before]
            starts = self._window_starts(exists)
            uids: set[int] = set()
            for i, lo in enumerate(starts):
                hi = f"{starts[i + 1] - 1}" if i + 1 < len(starts) else "*"
                found = self.client.search(["UID", f"{lo}:{hi}", *dates])
                uids.update(u for u in found if u >= lo)  # "lo:*" also matches the last UID
            return [f"{uidvalidity}:{uid}" for uid in sorted(uids)]

        return self._call(f"listing {folder.path!r}", listing)

    # ---- incremental series (connectors.sources.imap.incremental) ----------------------------
    @property
    def condstore(self) -> bool:
        self.client  # noqa: B018 - connect: the capabilities come with the login
        return "CONDSTORE" in self._capabilities

    def folder_status(self, folder: Folder) -> dict[str, int]:
        """STATUS (UIDVALIDITY UIDNEXT MESSAGES [HIGHESTMODSEQ]) of ``folder``: no SELECT, no
        message touched. Keys in lower case; ``highestmodseq`` only where CONDSTORE is offered."""
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]
        if self.condstore:
            items.append(b"HIGHESTMODSEQ")

        def status():
            try:
                return self.client.folder_status(folder.ref, items)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                raise FolderUnavailable(f"The folder {folder.path!r} cannot be opened: {exc}") from exc

        found = self._call(f"STATUS {folder.path!r}", status)
        return {to_unicode(k).lower(): int(v) for k, v in found.items()}

    def list_uids(self, folder: Folder, *, min_uid: int = 1, since: dt.date | None = None,
                  before: dt.date | None = None) -> tuple[int, list[int]]:
        """(UIDVALIDITY, the UIDs ≥ ``min_uid`` in the date window), searched window by window
        as ``list_message_ids`` does (no command touches more than ``window`` messages)."""
        def listing() -> tuple[int, list[int]]:
            uidvalidity, exists = self._select(folder)
            if exists == 0:
                return uidvalidity, []
            dates: list = []
            if since:
                dates += ["SINCE", since]
            if before:
                dates += ["BEFORE", before]
            starts = self._window_starts(exists)
            uids: set[int] = set()
            for i, lo in enumerate(starts):
                if i + 1 < len(starts) and starts[i + 1] <= min_uid:
                    continue  # the whole window is below min_uid
                lo = max(lo, min_uid)
                hi = f"{starts[i + 1] - 1}" if i + 1 < len(starts) else "*"
                if hi != "*" and int(hi) < lo:
                    continue
                found = self.client.search(["UID", f"{lo}:{hi}", *dates])
                uids.update(u for u in found if u >= lo)  # "lo:*" also matches the last UID
            return uidvalidity, sorted(uids)

        return self._call(f"listing {folder.path!r}", listing)

    def present_uids(self, folder: Folder, uidvalidity: int, uids: list[int]) -> list[int]:
        """Which of ``uids`` the folder still holds (UID SEARCH, ``window`` at a time)."""
        out: list[int] = []
        for start in range(0, len(uids), self.window):
            chunk = uids[start:start + self.window]
            found = self._with_selection(folder, uidvalidity, "UID SEARCH",
                                         lambda c=chunk: self.client.search(["UID", sequence_set(c)]))
            out += [u for u in found if u in set(chunk)]
        return sorted(set(out))

    def fetch_identities(self, folder: Folder, uidvalidity: int, uids: list[int]) -> dict[int, tuple]:
        """UID → (Message-ID, RFC822.SIZE, INTERNALDATE, ``mimeinfo.HeaderInfo``), from headers
        only (``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]``): how a renumbered
        folder is matched again without downloading a body."""
        from connectors.mimeinfo import extract

        items = "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)] RFC822.SIZE INTERNALDATE)"
        out: dict[int, tuple] = {}
        for start in range(0, len(uids), self.window):
            chunk = uids[start:start + self.window]
            data = self._with_selection(folder, uidvalidity, "header FETCH",
                                        lambda c=chunk: self._uid_fetch(c, items))
            for uid, entry in data.items():
                header = next((v for k, v in entry.items()
                               if isinstance(k, bytes) and k.startswith(b"BODY[HEADER")), b"") or b""
                if isinstance(header, str):
                    header = header.encode("utf-8", "surrogateescape")
                when = entry.get(b"INTERNALDATE")
                info = extract(bytes(header))
                out[uid] = (info.message_id, int(entry.get(b"RFC822.SIZE", 0)),
                            when if isinstance(when, dt.datetime) else None, info)
        return out

    def series_plan(self, folder: Folder, previous: dict | None, archived, *,
                    since: dt.date | None = None, before: dt.date | None = None):
        """This run's ``FolderPlan`` for ``folder`` (``connectors.sources.imap.incremental``)."""
        from connectors.sources.imap.incremental import plan_folder

        return plan_folder(self, folder, previous, archived, since=since, before=before)

    # ---- fetching --------------------------------------------------------------------------
    def _fetch_items(self) -> str:
        items = "BODY.PEEK[] FLAGS INTERNALDATE"
        if "X-GM-EXT-1" in self._capabilities:
            items += " X-GM-LABELS"
        return f"({items})"

    def _uid_fetch(self, uids: list[int], items: str) -> dict:
        typ, data = self.client._imap.uid("FETCH", sequence_set(uids), items)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH failed: {to_unicode(data[-1] or b'')}")
        parsed = parse_fetch(data)
        del data
        wanted = set(uids)
        return {uid: v for uid, v in parsed.items() if uid in wanted}

    def fetch_messages(self, folder: Folder, ids: Iterable[str]) -> Iterator[Message | MessageFailure]:
        parsed: list[tuple[str, int, int]] = []
        for sid in ids:
            uv, _, uid = sid.partition(":")
            parsed.append((sid, int(uv), int(uid)))
        for start in range(0, len(parsed), self.window):
            window = parsed[start:start + self.window]
            yield from self._fetch_window(folder, window)

    def _fetch_window(self, folder: Folder, window: list[tuple[str, int, int]]):
        by_validity: dict[int, list[tuple[str, int, int]]] = {}
        for item in window:
            by_validity.setdefault(item[1], []).append(item)
        if len(by_validity) > 1:  # ids from two listings: fetch each group, keep the order
            for item in window:
                yield from self._fetch_window(folder, [item])
            return
        uidvalidity = window[0][1]
        try:
            sizes = self._with_selection(folder, uidvalidity, "RFC822.SIZE",
                                         lambda: self._uid_fetch([u for _, _, u in window],
                                                                 "(RFC822.SIZE)"))
        except _UidValidityChanged:
            yield from self._validity_failures(folder, window)
            return
        except (TransientError, imaplib.IMAP4.error) as exc:
            log.warning("size FETCH failed in %r (%s); fetching one by one", folder.path, exc)
            sizes = {}
        batch: list[tuple[str, int, int]] = []
        batch_bytes = 0
        for item in window:
            size = int(sizes.get(item[2], {}).get(b"RFC822.SIZE", 0))
            if batch and (batch_bytes + size > self.batch_bytes or len(batch) >= self.batch_messages):
                yield from self._fetch_batch(folder, uidvalidity, batch)
                batch, batch_bytes = [], 0
            batch.append(item)
            batch_bytes += size
        if batch:
            yield from self._fetch_batch(folder, uidvalidity, batch)

    def _with_selection(self, folder: Folder, uidvalidity: int, what: str, fn):
        def run():
            self._ensure_selected(folder, uidvalidity)
            return fn()
        return self._call(f"{what} in {folder.path!r}", run)

    def _validity_failures(self, folder: Folder, items):
        for sid, _, _ in items:
            yield MessageFailure(folder.path, sid, "The folder's UIDVALIDITY changed during the "
                                 "export (the server renumbered its messages); run it again.")

    def _fetch_batch(self, folder: Folder, uidvalidity: int, batch: list[tuple[str, int, int]]):
        uids = [u for _, _, u in batch]
        items = self._fetch_items()
        try:
            data = self._with_selection(folder, uidvalidity, "FETCH",
                                        lambda: self._uid_fetch(uids, items))
        except _UidValidityChanged:
            yield from self._validity_failures(folder, batch)
            return
        except (TransientError, imaplib.IMAP4.error) as exc:
            if len(batch) > 1:
                log.warning("FETCH of %d messages in %r keeps failing (%s); one by one",
                            len(batch), folder.path, exc)
                for item in batch:
                    yield from self._fetch_batch(folder, uidvalidity, [item])
                return
            yield MessageFailure(folder.path, batch[0][0], f"The server did not deliver this "
                                 f"message after {self.retries} retries: {exc}")
            return
        for sid, _, uid in batch:
            entry = data.pop(uid, None)
            if entry is None:
                yield MessageFailure(folder.path, sid, "The message was deleted from the server "
                                     "during the export.", status="skipped")
                continue
            raw = entry.get(b"BODY[]")
            if raw is None:
                yield MessageFailure(folder.path, sid, "The server returned no content (NIL) "
                                     "for this message.")
                continue
            if isinstance(raw, str):
                raw = raw.encode("utf-8", "surrogateescape")
            labels = tuple(decode_mailbox_name(lb if isinstance(lb, bytes) else str(lb).encode())
                           for lb in entry.get(b"X-GM-LABELS", ()) or ())
            internal = entry.get(b"INTERNALDATE")
            yield Message(folder=folder.path, source_id=sid, raw=bytes(raw),
                          internal_date=internal if isinstance(internal, dt.datetime) else None,
                          flags=tuple(f for f in (to_unicode(f) for f in entry.get(b"FLAGS", ()))
                                      if f.lower() != "\\recent"),  # per session: no APPEND takes it
                          labels=labels)


@dataclass(frozen=True)
class _FolderWithFlags(Folder):
    flags: frozenset = frozenset()
