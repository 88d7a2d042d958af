"""Messages for the PST tests, each with what a reader must find in the PST, plus reader helpers.

Messages are built with the standard library's ``email`` package (or by hand, when they must be
malformed), never with the writer's own MIME parser, and each carries an ``Expected`` record
made from the generator's inputs: the tests compare what the real readers (readpst, pffexport,
libpff, and npm's pst-extractor, a port of java-libpst) extract from the PST against these
inputs, not against the writer's view of them. Each reader runs with a time limit: a reader
that hangs fails the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import struct
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from connectors.model import Message

BASE_DATE = datetime(2023, 5, 17, 8, 30, 0, tzinfo=UTC)
# An empty store Outlook wrote (the project's shared fixtures sit beside the repository).
_FIXTURE = Path("fixtures") / "outlook-empty.pst"
OUTLOOK_EMPTY = next(
    (p for p in (Path(__file__).resolve().parents[2] / "shared" / _FIXTURE,
                 Path("/work/shared") / _FIXTURE) if p.exists()),
    Path("/work/shared") / _FIXTURE,
)  # fmt: skip


@dataclass
class ExpectedAttachment:
    name: str
    sha256: str
    mime_type: str
    size: int
    embedded: Expected | None = None


@dataclass
class Expected:
    subject: str
    sender_name: str = ""
    sender_address: str = ""
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    sent: datetime | None = None
    message_id: str | None = None
    body_text: str | None = None
    body_html: str | None = None
    attachments: list[ExpectedAttachment] = field(default_factory=list)


@dataclass
class CorpusMessage:
    message: Message
    expected: Expected

    @property
    def folder(self) -> str:
        return self.message.folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalize_text(text: str | None) -> str | None:
    """Line endings and trailing whitespace differ between writers of the same text."""
    if text is None:
        return None
    return text.replace("\r\n", "\n").rstrip()


def _message(
    folder: str, raw: bytes, expected: Expected, *, seen: bool = True, index: int = 0
) -> CorpusMessage:
    received = BASE_DATE + timedelta(hours=1, minutes=index)
    flags = ("\\Seen",) if seen else ()
    return CorpusMessage(
        Message(folder=folder, source_id=str(index), raw=raw, internal_date=received, flags=flags),
        expected,
    )


def build_email(
    subject: str,
    *,
    sender: tuple[str, str] = ("Alice Sender", "alice@example.com"),
    to: list[tuple[str, str]] | None = None,
    cc: list[tuple[str, str]] | None = None,
    bcc: list[tuple[str, str]] | None = None,
    text: str | None = "Hello,\nthis is the body.\n",
    html: str | None = None,
    charset: str = "utf-8",
    attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    embedded: list[tuple[EmailMessage, Expected]] = (),  # type: ignore[assignment]
    sent: datetime = BASE_DATE,
    inline_images: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
) -> tuple[EmailMessage, Expected]:
    """An email built by the stdlib, and what a PST reader must find in it."""
    to = to if to is not None else [("Bob Receiver", "bob@example.org")]
    cc = cc or []
    bcc = bcc or []
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = _format_address(sender)
    if to:
        msg["To"] = ", ".join(_format_address(a) for a in to)
    if cc:
        msg["Cc"] = ", ".join(_format_address(a) for a in cc)
    if bcc:
        msg["Bcc"] = ", ".join(_format_address(a) for a in bcc)
    msg["Date"] = format_datetime(sent)
    message_id = make_msgid(domain="example.com")
    msg["Message-ID"] = message_id
    if text is not None:
        msg.set_content(text, charset=charset)
    if html is not None:
        if text is not None:
            msg.add_alternative(html, subtype="html", charset=charset)
        else:
            msg.set_content(html, subtype="html", charset=charset)
    expected_attachments = []
    for cid, data, mime in inline_images:
        maintype, subtype = mime.split("/")
        target = msg.get_body(("html",)) or msg
        target.add_related(data, maintype=maintype, subtype=subtype, cid=f"<{cid}>", disposition="inline",
                           filename=f"{cid}.{subtype}")  # fmt: skip
        expected_attachments.append(ExpectedAttachment(f"{cid}.{subtype}", sha256(data), mime,
                                                       len(data)))  # fmt: skip
    for name, data, mime in attachments:
        maintype, subtype = mime.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        expected_attachments.append(ExpectedAttachment(name, sha256(data), mime, len(data)))
    for inner, inner_expected in embedded:
        msg.add_attachment(inner)
        expected_attachments.append(
            ExpectedAttachment(inner_expected.subject + ".eml", "", "message/rfc822", 0,
                               inner_expected)  # fmt: skip
        )
    expected = Expected(
        subject=subject,
        sender_name=sender[0] or sender[1],
        sender_address=sender[1],
        to=list(to),
        cc=list(cc),
        bcc=list(bcc),
        sent=sent,
        message_id=message_id,
        body_text=text,
        body_html=html,
        attachments=expected_attachments,
    )
    return msg, expected


def _format_address(address: tuple[str, str]) -> str:
    name, addr = address
    if not name:
        return addr
    from email.headerregistry import Address

    local, _, domain = addr.partition("@")
    return str(Address(display_name=name, username=local, domain=domain))


def as_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=SMTP)


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- the corpus -------------------------------------------------------------------------------


def feature_corpus() -> list[CorpusMessage]:
    """One message per feature the writer must handle, in several folders."""
    out: list[CorpusMessage] = []

    def add(folder: str, msg: EmailMessage | bytes, expected: Expected, seen: bool = True) -> None:
        raw = msg if isinstance(msg, bytes) else as_bytes(msg)
        out.append(_message(folder, raw, expected, seen=seen, index=len(out)))

    msg, exp = build_email(
        "Plain message",
        to=[("Bob Receiver", "bob@example.org"), ("", "carol@example.net")],
        cc=[("Dave Copy", "dave@example.com")],
        bcc=[("Eve Hidden", "eve@example.com")],
    )
    add("INBOX", msg, exp)

    msg, exp = build_email(
        "Grüße aus Köln 🎉 — 日本語の件名",
        sender=("Jürgen Müller", "juergen@example.de"),
        to=[("山田太郎", "taro@example.jp")],
        text="Unicode body: 你好, Привет, 😀\n",
        attachments=[("Bericht über 日本 résumé.pdf", random_bytes(5000, 1), "application/pdf")],
    )
    add("INBOX/Projekte/日本語", msg, exp, seen=False)

    msg, exp = build_email(
        "HTML and plain",
        text="Plain part\nsecond line\n",
        html="<html><body><p>HTML <b>part</b> &amp; more</p></body></html>\n",
    )
    add("INBOX", msg, exp)

    msg, exp = build_email("Only HTML", text=None, html="<p>Just <i>HTML</i> here</p>\n")
    add("INBOX", msg, exp, seen=False)

    msg, exp = build_email(
        "Latin-1 body", text="Café, naïve, façade, Ünïcödé, ÿ ½ ©\n",
        charset="iso-8859-1",
    )  # fmt: skip
    add("Archive/2023", msg, exp)

    msg, exp = build_email(
        "Shift_JIS body", text="これはシフトJISの本文です。\n", charset="shift_jis"
    )
    add("Archive/2023", msg, exp)

    msg, exp = build_email(
        "Inline image",
        html='<p>Logo: <img src="cid:logo123"></p>\n',
        inline_images=[("logo123", random_bytes(700, 2), "image/png")],
    )
    add("INBOX", msg, exp)

    sizes = [0, 1, 3580, 3581, 8176, 8177, 200_000]
    msg, exp = build_email(
        "Attachments at block boundaries",
        attachments=[(f"file-{s}.bin", random_bytes(s, s), "application/octet-stream")
                     for s in sizes],
    )  # fmt: skip
    add("INBOX/Files", msg, exp)

    inner_inner = build_email(
        "Innermost", text="innermost body\n",
        attachments=[("deep.txt", b"deep attachment\n", "text/plain")],
    )  # fmt: skip
    inner = build_email(
        "Original message",
        sender=("Orig Sender", "orig@example.com"),
        to=[("Fwd Target", "target@example.com")],
        text="The original text.\n",
        attachments=[("orig.bin", random_bytes(10_000, 3), "application/octet-stream")],
        embedded=[inner_inner],
    )
    msg, exp = build_email("Fwd: Original message", text="See below.\n", embedded=[inner])
    add("INBOX", msg, exp)

    long_subject = "Long subject " + "x" * 600
    msg, exp = build_email(
        long_subject,
        to=[(f"Person {i}", f"person{i}@example.com") for i in range(120)],
        text="Long body line\n" * 2000,
    )
    add("INBOX", msg, exp)

    msg, exp = build_email(
        "Many attachments",
        attachments=[(f"note{i:02d}.txt", f"note {i}\n".encode(), "text/plain")
                     for i in range(40)],
    )  # fmt: skip
    add("INBOX/Files", msg, exp)

    raw, exp = no_body_message()
    add("INBOX", raw, exp)
    raw, exp = broken_multipart_message()
    add("INBOX/Broken", raw, exp)
    raw, exp = eight_bit_header_message()
    add("INBOX", raw, exp)
    raw, exp = garbage_message()
    add("INBOX/Broken", raw, exp)

    deep = "/".join(f"Level{i}" for i in range(1, 12))
    msg, exp = build_email("Deep folder")
    add(deep, msg, exp)
    return out


EMPTY_FOLDERS = ["Empty", "INBOX/Empty child", "Пустая/空のフォルダ"]


def no_body_message() -> tuple[bytes, Expected]:
    raw = (
        b"From: Silent <silent@example.com>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: No body at all\r\n"
        b"Date: Wed, 17 May 2023 08:30:00 +0000\r\n"
        b"Message-ID: <nobody@example.com>\r\n"
        b"\r\n"
    )
    return raw, Expected(
        "No body at all", "Silent", "silent@example.com", [("bob@example.org", "bob@example.org")],
        sent=BASE_DATE, message_id="<nobody@example.com>", body_text="",
    )  # fmt: skip


def broken_multipart_message() -> tuple[bytes, Expected]:
    """Declares multipart with a boundary that never occurs: the raw text becomes the body."""
    body = "This says multipart but has no parts.\r\n--not-the-boundary\r\nStill text.\r\n"
    raw = (
        b"From: Broken <broken@example.com>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: Broken multipart\r\n"
        b"Date: Wed, 17 May 2023 08:30:00 +0000\r\n"
        b'Content-Type: multipart/mixed; boundary="missing-boundary"\r\n'
        b"\r\n" + body.encode()
    )
    return raw, Expected(
        "Broken multipart", "Broken", "broken@example.com", [("bob@example.org", "bob@example.org")],
        sent=BASE_DATE, body_text=body,
    )  # fmt: skip


def eight_bit_header_message() -> tuple[bytes, Expected]:
    """Raw UTF-8 in headers (RFC 6532 style, or just sloppy software)."""
    raw = (
        "From: Zoë Ærøskøbing <zoe@example.dk>\r\n"
        "To: Åsa <asa@example.se>\r\n"
        "Subject: Smörgåsbord ünd 8-bit headers\r\n"
        "Date: Wed, 17 May 2023 08:30:00 +0000\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Body with 8-bit: Ærø\r\n"
    ).encode()
    return raw, Expected(
        "Smörgåsbord ünd 8-bit headers", "Zoë Ærøskøbing", "zoe@example.dk",
        [("Åsa", "asa@example.se")], sent=BASE_DATE, body_text="Body with 8-bit: Ærø\r\n",
    )  # fmt: skip


def garbage_message() -> tuple[bytes, Expected]:
    """Not really a message: no colon headers, binary noise, a lone boundary. Like Python's
    parser, the writer takes it all as text (the NUL dropped: MAPI strings end at one)."""
    raw = b"this is not a header line\r\n\x00\x01\xff garbage \r\n--\r\n"
    return raw, Expected("", body_text="this is not a header line\r\n\x01\xff garbage \r\n--")


def bulk_messages(count: int, folder: str, *, size: int = 600, seed: int = 7) -> list[Message]:
    """Many small distinct messages for one folder (half of them unread)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        body = "".join(rng.choice("abcdefghij klmnop\n") for _ in range(size))
        raw = (
            f"From: Sender {i % 17} <sender{i % 17}@example.com>\r\n"
            f"To: rcpt{i}@example.org\r\n"
            f"Subject: Bulk message {i:05d}\r\n"
            f"Date: {format_datetime(BASE_DATE + timedelta(minutes=i))}\r\n"
            f"Message-ID: <bulk{i}@example.com>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n" + body.replace("\n", "\r\n")
        ).encode()
        flags = ("\\Seen",) if i % 2 else ()
        out.append(Message(folder=folder, source_id=str(i), raw=raw, flags=flags,
                           internal_date=BASE_DATE + timedelta(minutes=i)))  # fmt: skip
    return out


def big_attachment_message(size: int, seed: int = 40) -> tuple[bytes, str]:
    """A message carrying one ``size``-byte attachment, and the attachment's sha256."""
    data = random_bytes(size, seed)
    msg, _ = build_email("Big attachment", attachments=[("big.bin", data, "application/zip")])
    return as_bytes(msg), sha256(data)


# -- reading PSTs back with real readers ------------------------------------------------------


@dataclass
class ReadMessage:
    """A message as libpff (pypff) sees it."""

    folder: str
    subject: str
    sender_name: str
    sender_address: str
    recipients: list[tuple[int, str, str]]  # (type, name, address)
    sent: datetime | None
    delivered: datetime | None
    message_id: str | None
    flags: int
    body_text: str | None
    body_html: str | None
    transport_headers: str | None
    attachments: list[ReadAttachment]
    properties: dict[int, tuple[int, bytes | None]] = field(default_factory=dict)  # id -> (type, data)


@dataclass
class ReadAttachment:
    name: str | None
    data: bytes | None
    mime_type: str | None
    method: int | None
    embedded: ReadMessage | None


def _entries(item) -> dict[int, object]:
    out: dict[int, object] = {}
    for record_set in item.record_sets:
        for entry in record_set.entries:
            out.setdefault(entry.entry_type, entry)
    return out


def _string(entry) -> str | None:
    if entry is None or entry.data is None:
        return None
    return entry.data_as_string


def _integer(entry) -> int | None:
    if entry is None or entry.data is None:
        return None
    return entry.data_as_integer


def read_pst_with_pypff(path: Path) -> dict[str, list[ReadMessage]]:
    """Folder path (below the IPM subtree, '/'-joined) -> its messages, via libpff."""
    import pypff

    pst = pypff.file()
    pst.open(str(path))
    try:
        out: dict[str, list[ReadMessage]] = {}
        root = pst.get_root_folder()
        ipm = [f for f in root.sub_folders if f.name == "Top of Outlook data file"]
        assert len(ipm) == 1, "no IPM subtree"

        def walk(folder, prefix: str) -> None:
            out.setdefault(prefix, [])
            for message in folder.sub_messages:
                out[prefix].append(_read_message(message, prefix))
            for sub in folder.sub_folders:
                walk(sub, f"{prefix}/{sub.name}" if prefix else sub.name)

        walk(ipm[0], "")
        return out
    finally:
        pst.close()


def _read_message(message, folder: str) -> ReadMessage:
    entries = _entries(message)
    recipients = []
    if message.recipients is not None:
        for record_set in message.recipients.record_sets:
            row = {e.entry_type: e for e in record_set.entries}
            recipients.append(
                (_integer(row.get(0x0C15)), _string(row.get(0x3001)), _string(row.get(0x3003)))
            )
    attachments = []
    for attachment in message.attachments:
        a_entries = _entries(attachment)
        method = _integer(a_entries.get(0x3705))
        data = None
        embedded = None
        if method == 5:
            if attachment.number_of_sub_items:
                embedded = _read_message(attachment.get_sub_item(0), folder)
        elif attachment.size is not None:
            data = attachment.read_buffer(attachment.size) if attachment.size else b""
        attachments.append(ReadAttachment(
            _string(a_entries.get(0x3707)), data, _string(a_entries.get(0x370E)), method,
            embedded))  # fmt: skip
    html = message.html_body
    plain = message.plain_text_body
    return ReadMessage(
        folder=folder,
        subject=message.subject or "",
        sender_name=message.sender_name or "",
        sender_address=_string(entries.get(0x0C1F)) or "",
        recipients=recipients,
        sent=message.client_submit_time,
        delivered=message.delivery_time,
        message_id=_string(entries.get(0x1035)),
        flags=_integer(entries.get(0x0E07)) or 0,
        body_text=plain.decode("utf-8") if plain is not None else None,
        body_html=html.decode("utf-8") if html is not None else None,
        transport_headers=message.transport_headers,
        attachments=attachments,
        properties={tag: (e.value_type, e.data) for tag, e in entries.items()},
    )


READER_TIMEOUT = 120  # seconds; the largest PST of the suite takes a reader a few
PST_EXTRACTOR = Path(__file__).resolve().parent / "pst_extractor"


def read_pst_with_reader(path: Path) -> dict[str, list[ReadMessage]]:
    """The same as ``read_pst_with_pypff``, through this package's own strict reader."""
    from connectors.archives.pst import props as P
    from connectors.archives.pst.reader import PstReader, decode_string

    with PstReader(path) as reader:
        names = {nid: reader.property_context(nid) for nid in reader.nodes if nid & 0x1F == 0x02}

        def folder_path(nid: int) -> str:
            if nid == 0x8022:
                return ""
            parent = folder_path(reader.nodes[nid].parent)
            name = decode_string(names[nid][P.DISPLAY_NAME])
            return f"{parent}/{name}" if parent else name

        def text(values: dict, tag: int) -> str | None:
            value = values.get(tag)
            return None if value is None else decode_string(value)

        def message(heap, folder: str) -> ReadMessage:
            values = heap.property_context()
            subnodes = heap.subnode_entries()
            recipients = []
            if 0x692 in subnodes:
                table = reader.heap(subnodes[0x692].bid_data, subnodes[0x692].bid_sub)
                for row in table.table_context().rows():
                    recipients.append((row.get(P.RECIPIENT_TYPE), text(row, P.DISPLAY_NAME),
                                       text(row, P.EMAIL_ADDRESS)))  # fmt: skip
            attachments = []
            if 0x671 in subnodes:
                table = reader.heap(subnodes[0x671].bid_data, subnodes[0x671].bid_sub)
                for row in table.table_context().rows():
                    entry = subnodes[row[P.LTP_ROW_ID]]
                    attached = reader.heap(entry.bid_data, entry.bid_sub)
                    a = attached.property_context()
                    embedded = data = None
                    if P.ATTACH_DATA_OBJECT in a:
                        inner = attached.subnode_entries()[struct.unpack_from("<I", a[P.ATTACH_DATA_OBJECT])[0]]
                        embedded = message(reader.heap(inner.bid_data, inner.bid_sub), folder)
                    else:
                        data = a.get(P.ATTACH_DATA_BINARY)
                    attachments.append(ReadAttachment(text(a, P.ATTACH_LONG_FILENAME), data,
                                                      text(a, P.ATTACH_MIME_TAG),
                                                      a.get(P.ATTACH_METHOD), embedded))  # fmt: skip
            html = values.get(P.BODY_HTML)
            return ReadMessage(
                folder=folder,
                subject=text(values, P.SUBJECT) or "",
                sender_name=text(values, P.SENDER_NAME) or "",
                sender_address=text(values, P.SENDER_EMAIL_ADDRESS) or "",
                recipients=recipients,
                sent=_filetime(values.get(P.CLIENT_SUBMIT_TIME)),
                delivered=_filetime(values.get(P.MESSAGE_DELIVERY_TIME)),
                message_id=text(values, P.INTERNET_MESSAGE_ID),
                flags=values.get(P.MESSAGE_FLAGS, 0),
                body_text=text(values, P.BODY),
                body_html=html.decode("utf-8") if html is not None else None,
                transport_headers=text(values, P.TRANSPORT_MESSAGE_HEADERS),
                attachments=attachments,
            )

        out: dict[str, list[ReadMessage]] = {folder_path(nid): [] for nid in names
                                             if nid not in (0x122, 0x8042, 0x8082, 0x2223)}  # fmt: skip
        for nid, node in sorted(reader.nodes.items()):
            if nid & 0x1F == 0x04:
                folder = folder_path(node.parent)
                out[folder].append(message(reader.heap(node.bid_data, node.bid_sub), folder))
        return out


def _filetime(value: object) -> datetime | None:
    from connectors.archives.pst import props as P

    if not isinstance(value, bytes):
        return None
    return P.from_filetime(int.from_bytes(value, "little")).replace(tzinfo=None)


@dataclass
class ExtractorMessage:
    """A message as pst-extractor (npm, a port of java-libpst) sees it."""

    folder: str
    subject: str
    sender_name: str
    sender_address: str
    recipients: list[tuple[int, str, str]]  # (type, name, address)
    sent: datetime | None
    delivered: datetime | None
    message_id: str
    read: bool
    body_text: str
    body_html: str
    attachments: list[ExtractorAttachment]
    # flag_status, last_verb, icon_index, keywords, source_id, sha256, imap_flags (read_pst.js)
    metadata: dict = field(default_factory=dict)


@dataclass
class ExtractorAttachment:
    name: str
    mime_type: str
    method: int
    size: int | None
    sha256: str | None
    embedded: ExtractorMessage | None


def read_pst_with_pst_extractor(path: Path) -> dict[str, list[ExtractorMessage]]:
    """Folder path (below the IPM subtree, '/'-joined) -> its messages, via pst-extractor.

    Runs ``tests/pst_extractor/read_pst.js`` (``make node-deps`` installs the package) with a
    time limit: java-libpst's readers spin forever on some layouts rather than fail.
    """
    script = PST_EXTRACTOR / "read_pst.js"
    if not (PST_EXTRACTOR / "node_modules" / "pst-extractor").is_dir():
        raise AssertionError("pst-extractor is not installed: run `make node-deps` "
                             f"(npm ci --prefix {PST_EXTRACTOR})")  # fmt: skip
    try:
        completed = subprocess.run(["node", str(script), str(path)], capture_output=True,
                                   timeout=READER_TIMEOUT, cwd=PST_EXTRACTOR)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"pst-extractor hung on {path.name} "
                             f"(no answer in {READER_TIMEOUT} s)") from None  # fmt: skip
    stderr = completed.stderr.decode("utf-8", "replace")
    assert completed.returncode == 0, f"pst-extractor failed on {path.name}:\n{stderr}"
    assert not stderr.strip(), f"pst-extractor complained about {path.name}:\n{stderr}"
    found = json.loads(completed.stdout)
    out: dict[str, list[ExtractorMessage]] = {}
    for folder in found["folders"]:
        names = folder["path"]
        if not names or names[0] != "Top of Outlook data file":
            continue
        key = "/".join(names[1:])
        assert folder["content_count"] == len(folder["messages"]), key
        out[key] = [_extractor_message(m, key) for m in folder["messages"]]
    return out


def _extractor_message(found: dict, folder: str) -> ExtractorMessage:
    return ExtractorMessage(
        folder=folder,
        subject=found["subject"],
        sender_name=found["sender_name"],
        sender_address=found["sender_address"],
        recipients=[(r["type"], r["name"], r["address"]) for r in found["recipients"]],
        sent=_iso(found["sent"]),
        delivered=_iso(found["delivered"]),
        message_id=found["message_id"],
        read=found["read"],
        body_text=found["body"],
        body_html=found["body_html"],
        metadata=found.get("metadata") or {},
        attachments=[
            ExtractorAttachment(a["name"], a["mime_type"], a["method"], a.get("size"),
                                a.get("sha256"), _extractor_message(a["embedded"], folder)
                                if a.get("embedded") else None)
            for a in found["attachments"]
        ],
    )  # fmt: skip


def _iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def assert_every_reader_opens(path: Path, tmp_path: Path, messages: int) -> None:
    """check_pst finds nothing, and libpff, readpst, pffexport and pst-extractor each open
    the file (within the time limit) and find its ``messages`` messages."""
    from connectors.archives.pst import check_pst

    assert check_pst(path) == []
    assert sum(len(m) for m in read_pst_with_pypff(path).values()) == messages
    readpst = run_readpst(path, tmp_path / f"readpst-{path.stem}")
    assert readpst.returncode == 0 and readpst.skipped == 0, readpst.output
    assert sum(len(v) for v in readpst.emls.values()) == messages
    pffexport = run_pffexport(path, tmp_path / f"pff-{path.stem}")
    assert pffexport.returncode == 0 and "Export completed" in pffexport.output, pffexport.output
    assert not pffexport.errors(), pffexport.output
    assert sum(len(m) for m in read_pst_with_pst_extractor(path).values()) == messages


_READPST_COUNTS = re.compile(r'^\s*"(.*)" - (\d+) items done, (\d+) items skipped\.$', re.M)


@dataclass
class ReadpstResult:
    returncode: int
    done: int
    skipped: int
    emls: dict[str, list[Path]]  # folder below the store name -> .eml files
    output: str


def run_readpst(pst: Path, out_dir: Path) -> ReadpstResult:
    """``readpst -e -D`` into ``out_dir``; counts from its "N items done, M skipped" lines.

    ``-j 0``: readpst's default parallel mode forks children that share one file offset and
    now and then read a block from the wrong place (random "items skipped" on valid files).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        ["readpst", "-j", "0", "-e", "-D", "-8", "-o", str(out_dir), str(pst)],
        capture_output=True, text=True, timeout=READER_TIMEOUT,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    done = skipped = 0
    for _name, d, s in _READPST_COUNTS.findall(output):
        done += int(d)
        skipped += int(s)
    emls: dict[str, list[Path]] = {}
    store_dirs = [p for p in out_dir.iterdir() if p.is_dir()]
    for store_dir in store_dirs:
        for eml in store_dir.rglob("*.eml"):
            folder = eml.parent.relative_to(store_dir).as_posix()
            emls.setdefault("" if folder == "." else folder, []).append(eml)
    return ReadpstResult(completed.returncode, done, skipped, emls, output)


@dataclass
class PffexportResult:
    returncode: int
    root: Path  # the "Top of Outlook data file" directory
    output: str

    def errors(self) -> list[str]:
        """The lines where libpff reports a failure (pffexport still says it completed)."""
        return [line for line in self.output.splitlines()
                if line.startswith("libpff_") or "unable to" in line]  # fmt: skip

    def message_dirs(self, folder: str) -> list[Path]:
        base = self.root / folder if folder else self.root
        return sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("Message"))

    def folders(self) -> set[str]:
        found = {""}
        for path in self.root.rglob("*"):
            if path.is_dir() and not any(
                part.startswith(("Message", "Attachment")) or part in ("Attachments", "Recipients")
                for part in path.relative_to(self.root).parts
            ):
                found.add(path.relative_to(self.root).as_posix())
        return found


def run_pffexport(pst: Path, out_dir: Path) -> PffexportResult:
    """``pffexport -m all`` (reads the allocation maps too) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "export"
    completed = subprocess.run(
        ["pffexport", "-m", "all", "-f", "text", "-t", str(target), str(pst)],
        capture_output=True, text=True, timeout=READER_TIMEOUT,
    )  # fmt: skip
    return PffexportResult(
        completed.returncode,
        Path(str(target) + ".export") / "Top of Outlook data file",
        completed.stdout + completed.stderr,
    )


def peak_rss_of(script: str, *args: str, timeout: int = 300) -> tuple[int, str]:
    """Run ``script`` in a fresh interpreter; return (its peak RSS in bytes, its stdout).

    The peak is VmHWM of the new process image: ru_maxrss would also count the pages the
    forked child shared with this (large) test process before exec, since Linux keeps
    rusage across execve.
    """
    import sys

    code = (
        "import re, sys\n"
        f"sys.argv = ['x', *{list(args)!r}]\n"
        f"exec(compile({script!r}, 'script', 'exec'))\n"
        "status = open('/proc/self/status').read()\n"
        "print('PEAK_RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent, env={**os.environ},
    )  # fmt: skip
    if completed.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{completed.stdout}\n{completed.stderr}")
    match = re.search(r"PEAK_RSS_KB (\d+)", completed.stdout)
    assert match, completed.stdout
    return int(match.group(1)) * 1024, completed.stdout
