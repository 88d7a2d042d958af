"""IMAP destination: restore's writer into any IMAP mailbox (issue 13).

The connection is the IMAP source's own (``connectors.sources.imap.client.ImapSource``:
``connect.CheckedIMAPClient`` with the private-address policy, TLS / STARTTLS with the CA file,
UTF-8-safe login, reconnects with backoff) — one connect path for both directions.

Folders: NAMESPACE gives the personal prefix and separator (LIST "" "" the separator when the
server has no NAMESPACE). An archive path ``A/B`` becomes ``PREFIX + A + SEP + B`` (Dovecot:
``A/B``; Mithi: ``INBOX.A.B``), under the base folder when one is given (``target_folder``);
``INBOX`` stays INBOX, and on an ``INBOX.``-prefixed server ``INBOX/Sub`` is ``INBOX.Sub``. A
level holding the separator (``v1.2`` on a '.' server) or that no server can hold has it
replaced by '_', and the mapping is kept for the report (``mapped_folders``). Names go out in
modified UTF-7. Parents are created first; created folders are subscribed.

APPEND sends the bytes unchanged (never imaplib's LF→CRLF rewrite), with the flags the target
can keep (``\\Recent`` dropped; keywords only when PERMANENTFLAGS has ``\\*`` or names them)
and the INTERNALDATE; as a LITERAL+ non-synchronising literal when offered (one round trip
fewer per message); APPENDUID gives the new UID (UIDPLUS). Size limits are checked first:
the server's APPENDLIMIT, the provider's cap (``presets``: 35 MiB on Gmail and Exchange), a
configured one; a message over them is ``MessageRejected`` and nothing is sent.

Exactly once: an APPEND cut by a fault may or may not have been stored. Before sending it
again, the destination looks for it among the folder's messages with UIDs at or above the
UIDNEXT it saw before (minus copies it appended itself since), by Message-ID and size, or by
its bytes' SHA-256 when it has no Message-ID. ``find_existing`` does the same for a whole
batch (a resumed restore), counting multiplicity, with SEARCHes of at most ``search_batch``
Message-IDs and FETCHes of sizes (and of bodies only for Message-ID-less candidates of a size
that occurs).
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from imapclient import imap_utf7
from imapclient.util import to_unicode

from connectors.destinations import Destination, MessageRejected
from connectors.model import FolderUnavailable, TransientError
from connectors.sources.imap.client import _TRANSIENT, ImapSource, decode_mailbox_name
from connectors.sources.imap.presets import PRESETS

log = logging.getLogger(__name__)

SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged",
                "\\deleted": "\\Deleted", "\\draft": "\\Draft"}
_ATOM = re.compile(r"[!#-'*+\-.0-9:;<=>?@A-Z\[\]^_`a-z|~&]+")  # atom-chars minus ( ) { % * " \ ]
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.I)
FETCH_BYTES = 8 * 1024 * 1024  # message bodies fetched at once for a bytes check
_OVER_QUOTA = re.compile(r"OVERQUOTA|quota exceeded|over quota", re.I)
_TOO_BIG = re.compile(r"TOOBIG|too (large|big)|size limit|maximum size|exceeds", re.I)


def imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapDestination(Destination):
    """Write into an IMAP mailbox. Use as a context manager; connects lazily. See the module docstring."""

    def __init__(self, host: str = "", port: int | None = None, security: str | None = None, username: str = "",
                 password: str | None = None, *, flavour: str = "imap", base_folder: str = "",
                 max_message_bytes: int | None = None, search_batch: int = 100, **connection) -> None:
        self.conn = ImapSource(host, port, security, username, password, flavour=flavour, **connection)
        self.preset = PRESETS[flavour]
        self.base_folder = "/".join(p for p in base_folder.strip().split("/") if p.strip())
        self.max_message_bytes = max_message_bytes
        self.search_batch = max(1, search_batch)
        self._layout: tuple[str, str] | None = None  # (prefix, separator)
        self._known: set[str] | None = None  # folder names (decoded) the server lists
        self._mapped: dict[str, str] = {}
        self._selected: str | None = None
        self._selected_on = None  # the connection ``_selected`` was selected on
        self._permanent: dict[str, set[str]] = {}
        self._uidnext: dict[str, int] = {}  # per folder: a UID at or below any UID we appended since
        self._appended: dict[str, Counter] = {}  # per folder: match keys appended since _uidnext
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"ImapDestination({self.conn!r})"

    # ---- connection -----------------------------------------------------------------------------
    @property
    def client(self):
        return self.conn.client

    @property
    def capabilities(self) -> set[str]:
        self.client  # noqa: B018 - connects
        return self.conn._capabilities

    def _drop(self) -> None:
        self.conn._drop()
        self._selected = None

    def close(self) -> None:
        self.conn.close()
        self._selected = None

    def _retrying(self, what: str, fn):
        """Run ``fn`` (idempotent: no APPEND) retrying transient faults on a fresh connection."""
        attempt = 0
        while True:
            try:
                return fn()
            except _TRANSIENT as exc:
                attempt += 1
                self._drop()
                if attempt > self.conn.retries:
                    raise TransientError(f"IMAP {what} failed after {self.conn.retries} retries: {exc}") from exc
                log.warning("IMAP %s failed (%s); reconnecting (attempt %d)", what, exc, attempt)
                self.reconnects += 1
                self.conn._sleep_backoff(attempt - 1)

    # ---- folders -------------------------------------------------------------------------------
    def layout(self) -> tuple[str, str]:
        """(personal namespace prefix, separator), as the server reports them."""
        if self._layout is None:
            def find():
                prefix, sep = "", None
                if "NAMESPACE" in self.capabilities:
                    personal = self.client.namespace().personal or ()
                    if personal:
                        prefix = decode_mailbox_name(personal[0][0] or "")
                        sep = to_unicode(personal[0][1]) if personal[0][1] else None
                if not sep:
                    rows = self.client.list_folders("", "")
                    sep = to_unicode(rows[0][1]) if rows and rows[0][1] else "/"
                return prefix, sep

            self._layout = self._retrying("NAMESPACE", find)
        return self._layout

    def _names(self) -> set[str]:
        if self._known is None:
            rows = self._retrying("LIST", lambda: self.client.list_folders())
            self._known = {decode_mailbox_name(name) for _flags, _sep, name in rows}
        return self._known

    def folder_name(self, path: str) -> tuple[str, list[str]]:
        """The destination's (decoded) name for an archive path, and the levels as they were
        changed (empty when none was)."""
        prefix, sep = self.layout()
        full = "/".join(p for p in (self.base_folder, path) if p)
        levels = [p for p in full.split("/") if p != ""] or ["INBOX"]
        changed = []
        clean = []
        for level in levels:
            fixed = level.replace(sep, "_") if sep != "/" else level
            fixed = re.sub(r"[\x00-\x1f\x7f]", "_", fixed)
            if fixed.strip() in ("", ".", ".."):
                fixed = "_" + fixed
            if fixed != level:
                changed.append(level)
            clean.append(fixed)
        if clean[0].upper() == "INBOX":
            clean[0] = "INBOX"
            if len(clean) == 1:
                return "INBOX", changed
            if prefix.rstrip(sep).upper() == "INBOX":
                return "INBOX" + sep + sep.join(clean[1:]), changed
        return prefix + sep.join(clean), changed

    def ensure_folder(self, path: str) -> str:
        name, changed = self.folder_name(path)
        if changed:
            self._mapped[path] = name
        known = self._names()
        if name in known:
            return name
        prefix, sep = self.layout()
        parts = name[len(prefix):].split(sep) if prefix and name.startswith(prefix) else name.split(sep)
        head = prefix if prefix and name.startswith(prefix) else ""
        for i in range(1, len(parts) + 1):
            candidate = head + sep.join(parts[:i])
            if candidate in known or candidate.upper() == "INBOX":
                continue
            self._create(candidate)
            known.add(candidate)
        return name

    def _create(self, name: str) -> None:
        encoded = imap_utf7.encode(name).decode("ascii")

        def create():
            try:
                self.client.create_folder(encoded)
            except imaplib.IMAP4.error as exc:
                if "EXISTS" not in str(exc).upper():  # [ALREADYEXISTS], "Mailbox exists"
                    raise FolderUnavailable(f"The folder {name!r} cannot be created on the target: "
                                            f"{str(exc)[:300]}") from exc
            try:
                self.client.subscribe_folder(encoded)
            except imaplib.IMAP4.error:
                pass

        self._retrying(f"CREATE {name}", create)

    def mapped_folders(self) -> dict[str, str]:
        return dict(self._mapped)

    def _select(self, folder: str) -> None:
        client = self.client
        if self._selected == folder and self._selected_on is client:
            return
        info = client.select_folder(imap_utf7.encode(folder).decode("ascii"))
        self._selected, self._selected_on = folder, client
        self._permanent[folder] = {to_unicode(f).lower() for f in info.get(b"PERMANENTFLAGS", ())}
        uidnext = info.get(b"UIDNEXT")
        if uidnext and folder not in self._uidnext:
            self._uidnext[folder] = int(uidnext)
            self._appended[folder] = Counter()

    # ---- append --------------------------------------------------------------------------------
    def size_limit(self) -> int | None:
        limits = [n for n in (self.max_message_bytes, self.preset_limit(), self.server_limit()) if n]
        return min(limits) if limits else None

    def preset_limit(self) -> int | None:
        return self.preset.max_message_bytes

    def server_limit(self) -> int | None:
        for cap in self.capabilities:
            if cap.startswith("APPENDLIMIT="):
                value = cap.split("=", 1)[1]
                if value.isdigit():
                    return int(value)
        return None

    def keepable_flags(self, folder: str, flags: Iterable[str]) -> list[str]:
        """The flags the folder can store: system flags (not \\Recent), and keywords when
        PERMANENTFLAGS has \\* or lists them; anything that is not an IMAP atom is dropped."""
        permanent = self._permanent.get(folder, set())
        out: list[str] = []
        for flag in flags:
            low = flag.lower()
            if low in SYSTEM_FLAGS:
                kept = SYSTEM_FLAGS[low]
            elif flag.startswith("\\"):
                continue  # \Recent, and extension flags we cannot set
            elif _ATOM.fullmatch(flag) and ("\\*" in permanent or low in permanent):
                kept = flag
            else:
                continue
            if kept not in out:
                out.append(kept)
        return out

    def append(self, folder: str, raw: bytes, flags: Iterable[str], internal_date: datetime | None) -> str | None:
        limit = self.size_limit()
        if limit is not None and len(raw) > limit:
            raise MessageRejected(f"The message is {len(raw):,} bytes; the target takes at most {limit:,} "
                                  f"({self._limit_source(limit)}).")
        key = match_key(raw)
        attempt = 0
        while True:
            try:
                try:
                    self._select(folder)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error as exc:
                    raise FolderUnavailable(f"The folder {folder!r} cannot be opened on the target: "
                                            f"{str(exc)[:300]}") from exc
                uid = self._append_once(folder, raw, list(flags), internal_date)
                if uid is not None:  # nothing below it can be ours: narrow later checks
                    self._uidnext[folder], self._appended[folder] = int(uid) + 1, Counter()
                else:
                    self._appended.setdefault(folder, Counter())[key] += 1
                return uid
            except _TRANSIENT as exc:
                attempt += 1
                self._drop()
                if attempt > self.conn.retries:
                    raise TransientError(f"IMAP APPEND failed after {self.conn.retries} retries: {exc}") from exc
                log.warning("IMAP APPEND failed (%s); reconnecting (attempt %d)", exc, attempt)
                self.reconnects += 1
                self.conn._sleep_backoff(attempt - 1)
                landed = self._retrying("SEARCH", lambda: self._landed(folder, key))
                if landed is not None:
                    self._appended.setdefault(folder, Counter())[key] += 1
                    return landed

    def _limit_source(self, limit: int) -> str:
        if limit == self.server_limit():
            return "the server's APPENDLIMIT"
        if limit == self.preset_limit():
            return f"{self.preset.label}'s limit"
        return "the configured limit"

    def _append_once(self, folder: str, raw: bytes, flags: list[str], when: datetime | None) -> str | None:
        imap = self.client._imap
        mailbox = imap_quote(imap_utf7.encode(folder).decode("ascii"))
        flag_list = "(" + " ".join(self.keepable_flags(folder, flags)) + ")"
        args = [mailbox, flag_list]
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            args.append(imaplib.Time2Internaldate(when))
        try:
            if "LITERAL+" in self.capabilities:
                typ, data = _append_literal_plus(imap, args, raw)
            else:
                imap.literal = raw  # imaplib sends it after the continuation, unchanged
                typ, data = imap._simple_command("APPEND", *args)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            text = str(exc)
            if _TOO_BIG.search(text):
                raise MessageRejected(f"The server refused the message as too large: {text[:300]}") from exc
            raise MessageRejected(f"The server refused the message: {text[:300]}") from exc
        finally:
            imap.literal = None
            imap.untagged_responses.clear()  # EXISTS / RECENT after each APPEND: flat over a long restore
        if typ != "OK":
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            if _OVER_QUOTA.search(text):
                raise MessageRejected(f"The target mailbox is over its quota: {text[:300]}")
            if _TOO_BIG.search(text):
                raise MessageRejected(f"The server refused the message as too large: {text[:300]}")
            raise MessageRejected(f"The server refused the message: {text[:300]}")
        for item in data:
            found = _APPENDUID.search(item) if isinstance(item, bytes) else None
            if found:
                uid = int(found.group(2))
                return str(uid)
        return None

    def _landed(self, folder: str, key: tuple) -> str | None:
        """After a cut APPEND: the UID of the copy it stored, or None when it stored none."""
        self._select(folder)
        since = self._uidnext.get(folder, 1)
        uids = self._matching_uids(key, since)
        already = self._appended.get(folder, Counter())[key]
        if len(uids) > already:
            return str(sorted(uids)[already])
        return None

    # ---- finding what is there -----------------------------------------------------------------
    def _matching_uids(self, key: tuple, since: int = 1) -> list[int]:
        """UIDs ≥ ``since`` of the selected folder holding the message of ``key`` (see match_key)."""
        kind, value, size = key
        if kind == "mid":
            found = self._by_message_ids({value}, since)
            return [uid for uid, (mid, sz) in found.items() if mid == value and sz == size]
        digest = value
        return [uid for uid, d in self._by_size({size}, since).items() if d[1] == digest]

    def _by_message_ids(self, mids: set[str], since: int = 1) -> dict[int, tuple[str, int]]:
        """{uid: (Message-ID, size)} of the selected folder's messages whose Message-ID is one of ``mids``."""
        found: dict[int, tuple[str, int]] = {}
        ordered = sorted(mids)
        for i in range(0, len(ordered), self.search_batch):
            batch = ordered[i:i + self.search_batch]
            terms = [f"HEADER Message-ID {imap_quote(m)}" for m in batch]
            criteria = terms[-1]
            for term in reversed(terms[:-1]):
                criteria = f"OR {term} {criteria}"
            if since > 1:
                criteria = f"UID {since}:* {criteria}"
            uids = [u for u in self.client.search(criteria.encode()) if u >= since]
            if not uids:
                continue
            fetched = self.client.fetch(sorted(uids),
                                        ["RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            for uid, data in fetched.items():
                header = data.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"") or b""
                found[uid] = (_message_id_of(header), int(data.get(b"RFC822.SIZE", -1)))
        return found

    def _by_size(self, sizes: set[int], since: int = 1) -> dict[int, tuple[int, str]]:
        """{uid: (size, sha256)} of the selected folder's messages of one of ``sizes`` bytes."""
        found: dict[int, tuple[int, str]] = {}
        for size in sorted(sizes):
            criteria = f"LARGER {size - 1} SMALLER {size + 1}"
            if since > 1:
                criteria = f"UID {since}:* {criteria}"
            uids = sorted(u for u in self.client.search(criteria.encode()) if u >= since)
            per_fetch = max(1, min(50, FETCH_BYTES // max(size, 1)))  # bodies in memory at once: bounded
            for i in range(0, len(uids), per_fetch):
                chunk = uids[i:i + per_fetch]
                for uid, data in self.client.fetch(chunk, ["BODY.PEEK[]"]).items():
                    body = data.get(b"BODY[]") or b""
                    found[uid] = (len(body), hashlib.sha256(body).hexdigest())
        return found

    def find_existing(self, folder: str, candidates: Iterable[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
        candidates = list(candidates)
        if not candidates:
            return []

        def find():
            try:
                self._select(folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:  # no such folder (yet): it holds nothing
                if folder in self._names():
                    raise
                return []
            held: Counter = Counter()
            with_mid = {mid for mid, _size, _sha in candidates if usable_message_id(mid)}
            if with_mid:
                for mid, size in self._by_message_ids(with_mid).values():
                    held[("mid", mid, size)] += 1
            sizes = {size for mid, size, _sha in candidates if not usable_message_id(mid)}
            if sizes:
                for size, digest in self._by_size(sizes).values():
                    held[("sha", digest, size)] += 1
            out = []
            for mid, size, sha in candidates:
                key = ("mid", mid, size) if usable_message_id(mid) else ("sha", sha, size)
                if held[key] > 0:
                    held[key] -= 1
                    out.append((mid, size, sha))
            return out

        return self._retrying("SEARCH", find)


def _append_literal_plus(imap, args: list[str], raw: bytes):
    """APPEND with a non-synchronising literal, the message sent as its own buffer: imaplib's
    ``_command`` would concatenate it into the command line (copies of a 30 MB message)."""
    tag = imap._new_tag()
    head = tag + b" APPEND " + " ".join(args).encode("ascii") + b" {%d+}\r\n" % len(raw)
    imap.send(head)
    imap.send(raw)
    imap.send(b"\r\n")
    return imap._command_complete("APPEND", tag)


def usable_message_id(mid: str) -> bool:
    """A Message-ID a SEARCH can look for (printable ASCII, not empty)."""
    return bool(mid) and mid.isascii() and mid.isprintable() and len(mid) < 1000


def match_key(raw: bytes) -> tuple[str, str, int]:
    """How a message is recognised in a folder: ("mid", Message-ID, size), or ("sha", SHA-256,
    size) when it has no usable Message-ID."""
    from connectors import mimeinfo

    mid = mimeinfo.extract(raw).message_id
    if usable_message_id(mid):
        return ("mid", mid, len(raw))
    return ("sha", hashlib.sha256(raw).hexdigest(), len(raw))


def _message_id_of(header: bytes) -> str:
    from connectors import mimeinfo

    return mimeinfo.extract(header.rstrip(b"\r\n") + b"\r\n\r\n").message_id
