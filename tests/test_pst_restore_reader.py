"""Reading PSTs back for restore: PSTs written by our writer from the PST tests' corpus come
back as MIME with the same content (Message-ID, subject, sender, recipients, date, flags,
texts, attachment names and bytes, embedded messages), compared with the original parsed by
the standard library's ``email`` package and with the corpus's generator inputs."""

from __future__ import annotations

import email
import hashlib
import shutil
import struct
from email.policy import default
from pathlib import Path

import compressed_rtf
import pytest

from connectors.archives import ArchivedMessage, ArchiveFailure, Selection
from connectors.archives.pst import PstWriter
from connectors.archives.pst import props as P
from connectors.archives.pst.access import PstFile, PstFormatError
from connectors.archives.pst.mime import parse_message
from connectors.archives.pst.restore import PstArchiveReader
from connectors.archives.pst.rtf import rtf_to_text
from connectors.model import Message
from tests.mime_corpus import CASES, cpython_corpus
from tests.pst_corpus import (
    BASE_DATE,
    EMPTY_FOLDERS,
    OUTLOOK_EMPTY,
    CorpusMessage,
    Expected,
    as_bytes,
    big_attachment_message,
    build_email,
    feature_corpus,
    normalize_text,
    peak_rss_of,
    sha256,
)
from tests.pst_props import extra_properties
from tests.stdlib_view import View, stdlib_view

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def corpus() -> list[CorpusMessage]:
    return feature_corpus()


def _write(path: Path, corpus: list[CorpusMessage], *, strip_headers: bool = False) -> Path:
    with PstWriter(path, display_name="Restore test") as writer:
        for folder in EMPTY_FOLDERS:
            writer.add_folder(folder)
        for item in corpus:
            parsed = parse_message(item.message.raw)
            if strip_headers:
                _strip_transport_headers(parsed)
            writer.add_message(item.message, parsed)
    return path


def _strip_transport_headers(parsed) -> None:
    parsed.headers = ""
    for attachment in parsed.attachments:
        if attachment.embedded is not None:
            _strip_transport_headers(attachment.embedded)


@pytest.fixture(scope="module")
def feature_pst(tmp_path_factory, corpus) -> Path:
    return _write(tmp_path_factory.mktemp("restore") / "features.pst", corpus)


def _read_all(path: Path, **options) -> list[ArchivedMessage | ArchiveFailure]:
    with PstArchiveReader(path, **options) as reader:
        return list(reader.messages())


# -- comparing content ---------------------------------------------------------------------------


def _leaves(part):
    if part.get_content_type() == "message/rfc822":
        yield "embedded", part
        return
    if part.is_multipart():
        for sub in part.iter_parts():
            yield from _leaves(sub)
        return
    yield "leaf", part


def _content(msg) -> dict:
    """What a restore must keep of a message, as the email package reads it."""
    text = html = None
    attachments, embedded = [], []
    for kind, part in _leaves(msg):
        if kind == "embedded":
            inner = part.get_payload(0)
            embedded.append(_content(inner))
            continue
        ctype = part.get_content_type()
        named = part.get_filename() or part.get_content_disposition() == "attachment"
        if ctype == "text/plain" and not named and text is None:
            text = normalize_text(part.get_content())
            continue
        if ctype == "text/html" and not named and html is None:
            html = normalize_text(part.get_content())
            continue
        if part.get_content_maintype() == "multipart":  # a broken multipart: its text
            text = normalize_text(part.get_payload())
            continue
        data = part.get_payload(decode=True) or b""
        attachments.append((part.get_filename(), ctype, sha256(data)))
    return {
        "message_id": msg["Message-ID"],
        "subject": str(msg["Subject"] or ""),
        "from": [(_utf8(a.display_name), a.addr_spec) for a in msg["From"].addresses]
        if msg["From"]
        else [],
        "to": [a.addr_spec for a in msg["To"].addresses] if msg["To"] else [],
        "cc": [a.addr_spec for a in msg["Cc"].addresses] if msg["Cc"] else [],
        "bcc": [a.addr_spec for a in msg["Bcc"].addresses] if msg["Bcc"] else [],
        "date": msg["Date"].datetime if msg["Date"] else None,
        "text": text or None,
        "html": html,
        "attachments": attachments,
        "embedded": embedded,
    }


def _utf8(text: str) -> str:
    """Raw UTF-8 header bytes, which the email package keeps as surrogate escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _assert_matches_expected(content: dict, expected: Expected) -> None:
    """The rebuilt message against the corpus generator's inputs."""
    assert content["subject"] == expected.subject
    assert content["message_id"] == expected.message_id
    if expected.sender_address:
        assert content["from"][0][1] == expected.sender_address
        assert (content["from"][0][0] or content["from"][0][1]) == expected.sender_name
    assert content["to"] == [a for _n, a in expected.to]
    assert content["cc"] == [a for _n, a in expected.cc]
    assert content["bcc"] == [a for _n, a in expected.bcc]
    if expected.sent is not None:
        assert content["date"] == expected.sent
    assert content["text"] == (normalize_text(expected.body_text) or None)
    assert content["html"] == normalize_text(expected.body_html)
    plain = [a for a in expected.attachments if a.embedded is None]
    assert [(n, s) for n, _t, s in content["attachments"]] == [(a.name, a.sha256) for a in plain]
    assert [t for _n, t, _s in content["attachments"]] == [a.mime_type for a in plain]
    inner = [a.embedded for a in expected.attachments if a.embedded is not None]
    assert len(content["embedded"]) == len(inner)
    for got, want in zip(content["embedded"], inner, strict=True):
        _assert_matches_expected(got, want)


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strip_headers", [False, True], ids=["transport-headers", "from-properties"]
)
def test_every_message_comes_back_with_its_content(tmp_path, corpus, strip_headers):
    path = _write(tmp_path / "features.pst", corpus, strip_headers=strip_headers)
    read = _read_all(path)
    assert all(isinstance(m, ArchivedMessage) for m in read), read
    by_folder: dict[str, list[CorpusMessage]] = {}
    for item in corpus:
        by_folder.setdefault(item.folder, []).append(item)
    # Every folder's messages in the order written; every message once.
    assert len(read) == len(corpus)
    for folder, items in by_folder.items():
        got = [m for m in read if m.folder == folder]
        assert len(got) == len(items), folder
        for message, item in zip(got, items, strict=True):
            rebuilt = email.message_from_bytes(message.raw, policy=default)
            content = _content(rebuilt)
            _assert_matches_expected(content, item.expected)
            if item.expected.message_id and "Broken" not in folder:
                original = _content(email.message_from_bytes(item.message.raw, policy=default))
                if strip_headers:  # no Bcc... all kept; the header set differs only in order
                    original["date"] = content["date"]
                assert content == original, item.expected.subject
            assert ("\\Seen" in message.flags) == item.message.seen
            assert message.internal_date == item.message.internal_date
            assert message.message_id == (item.expected.message_id or "")
            assert message.extra["rebuilt"] is True and message.sha256 == ""
            assert b"\r\n" in message.raw and b"\n" not in message.raw.replace(b"\r\n", b"")


def test_original_headers_are_kept_as_they_were(feature_pst, corpus):
    read = _read_all(feature_pst)
    item = next(i for i in corpus if i.expected.subject == "Plain message")
    message = next(m for m in read if m.message_id == item.expected.message_id)
    head = item.message.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    kept = [line for line in head if not line.lower().startswith((b"content-", b"mime-version"))]
    rebuilt_head = message.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert rebuilt_head[: len(kept)] == kept


def test_folders_and_walk_order(feature_pst, corpus):
    with PstArchiveReader(feature_pst) as reader:
        paths = [f.path for f in reader.folder_list()]
        expected = {i.folder for i in corpus} | set(EMPTY_FOLDERS)
        for path in list(expected):
            while "/" in path:
                path = path.rsplit("/", 1)[0]
                expected.add(path)
        assert set(paths) == expected | {"Deleted Items"}
        # Parents come before their children.
        for index, path in enumerate(paths):
            if "/" in path:
                assert path.rsplit("/", 1)[0] in paths[:index]
        folders = [m.folder for m in reader.messages()]
        # Messages come folder by folder, in walk order.
        order = [p for p in paths if p in folders]
        assert folders == sorted(folders, key=order.index)


def test_selection_filters_folders_and_dates(feature_pst, corpus):
    with PstArchiveReader(feature_pst) as reader:
        inbox = list(
            reader.messages(Selection(folders=("INBOX",), exclude_folders=("INBOX/Broken",)))
        )
        assert inbox and all(
            m.folder.startswith("INBOX") and m.folder != "INBOX/Broken" for m in inbox
        )
        late = list(reader.messages(Selection(since=(BASE_DATE.date().replace(day=18)))))
        assert late == []


def test_browse_lists_without_rebuilding_and_reads_one_eml(feature_pst, corpus):
    with PstArchiveReader(feature_pst, volume="mail/user.pst") as reader:
        entries = list(reader.browse())
        assert len(entries) == len(corpus)
        entry = next(e for e in entries if e.subject == "Plain message")
        assert entry.folder == "INBOX" and entry.sender == "Alice Sender"
        assert entry.date == BASE_DATE and entry.size > 0 and entry.flags == ("\\Seen",)
        assert entry.id.startswith("mail/user.pst!0x")
        eml = email.message_from_bytes(reader.read_entry(entry.id), policy=default)
        assert eml["Subject"] == "Plain message"
        restored = {m.entry: m for m in reader.messages()}
        assert restored[entry.id].raw == reader.read_entry(entry.id)
        summaries = {s.folder: s for s in reader.folders()}
        assert summaries["INBOX/Files"].messages == 2 and summaries["Empty"].messages == 0
        assert sum(s.messages for s in summaries.values()) == len(corpus)
        for path, summary in summaries.items():
            assert summary.bytes == sum(e.size for e in entries if e.folder == path), path
        with pytest.raises(KeyError):
            reader.read_entry("mail/user.pst!0x00000122")  # a folder, not a message
        with pytest.raises(KeyError):
            reader.read_entry("other.pst!" + entry.id.split("!")[1])


def test_a_file_object_is_read_and_left_open(feature_pst, corpus):
    with open(feature_pst, "rb") as handle:
        with PstArchiveReader(handle, volume="v.pst") as reader:
            read = list(reader.messages())
        assert not handle.closed
    assert len(read) == len(corpus) and all(m.entry.startswith("v.pst!") for m in read)


def test_split_volumes_are_read_in_order(tmp_path, corpus):
    first = _write(tmp_path / "a.pst", corpus[:5])
    second = _write(tmp_path / "b.pst", corpus[5:])
    with PstArchiveReader([("k.part001.pst", first), ("k.part002.pst", second)]) as reader:
        read = list(reader.messages())
    assert [m.message_id for m in read if isinstance(m, ArchivedMessage)][:1]
    assert len(read) == len(corpus)
    assert {m.entry.split("!")[0] for m in read} == {"k.part001.pst", "k.part002.pst"}


# -- metadata ---------------------------------------------------------------------------------------


def test_flags_labels_and_legacyflo_properties_written_by_the_writer(tmp_path):
    cases = [  # subject, flags, labels, source id
        ("Flagged and answered", ("\\Seen", "\\Flagged", "\\Answered"), ("Work", "Important/Label"),
         "7:42"),
        ("Forwarded", ("$Forwarded",), (), "7:43"),
        ("Keywords", ("\\Seen", "\\Answered", "$Forwarded", "$Junk", "custom"), ("Inbox",), "7:44"),
        ("Unflagged in Outlook since", ("\\Flagged", "custom"), (), "7:45"),
        ("Flagged in Outlook since", (), (), "7:46"),
        ("Nothing recorded", (), (), ""),
    ]  # fmt: skip
    messages, digests = [], {}
    for subject, flags, labels, source_id in cases:
        msg, _ = build_email(subject)
        raw = as_bytes(msg)
        digests[subject] = sha256(raw)
        messages.append(Message(folder="INBOX", source_id=source_id, raw=raw, flags=flags,
                                labels=labels, internal_date=BASE_DATE))  # fmt: skip
    outlook_changes = {  # what a user did in Outlook after the backup
        "Unflagged in Outlook since": {"flag_status": 1},
        "Flagged in Outlook since": {"flag_status": 2},
    }
    path = tmp_path / "meta.pst"
    with extra_properties(outlook_changes), PstWriter(path) as writer:
        for message in messages:
            writer.add_message(message)
    got = {}
    for message in _read_all(path):
        assert isinstance(message, ArchivedMessage)
        got[email.message_from_bytes(message.raw, policy=default)["Subject"]] = message
    first = got["Flagged and answered"]
    assert first.flags == ("\\Seen", "\\Flagged", "\\Answered")
    assert first.labels == ("Work", "Important/Label")
    assert first.source_id == "7:42" and first.internal_date == BASE_DATE
    # The recorded digest is the original's, not the rebuilt bytes'.
    assert first.extra["original_sha256"] == digests["Flagged and answered"] != sha256(first.raw)
    assert first.sha256 == ""
    assert got["Forwarded"].flags == ("$Forwarded",) and got["Forwarded"].labels == ()
    # LegacyFloFlags gives the keywords; the categories less those keywords are the labels.
    assert got["Keywords"].flags == ("\\Seen", "\\Answered", "$Forwarded", "$Junk", "custom")
    assert got["Keywords"].labels == ("Inbox",)
    # MAPI's own state wins for what Outlook shows: \Seen, \Flagged, \Answered.
    assert got["Unflagged in Outlook since"].flags == ("custom",)
    assert got["Flagged in Outlook since"].flags == ("\\Flagged",)
    nothing = got["Nothing recorded"]
    assert nothing.flags == () and nothing.labels == () and nothing.source_id == ""
    assert nothing.extra["original_sha256"] == digests["Nothing recorded"]


def test_headers_from_properties_with_an_exchange_sender(tmp_path):
    """A message composed in Outlook has no transport headers and may name its sender by an
    Exchange address: From is then the SMTP address where one is recorded, else the name."""
    msg, _ = build_email("Composed in Outlook", sender=("Jöhn Exchange", "john@example.com"))
    parsed = parse_message(as_bytes(msg))
    parsed.headers = ""
    ex = "/O=EXAMPLE/OU=EXCHANGE/CN=RECIPIENTS/CN=JOHN".encode("utf-16-le")
    changes = {
        "Composed in Outlook": {
            "drop": [P.tag(0x5D01, P.PT_UNICODE), P.tag(0x5D02, P.PT_UNICODE)],
            "set": [(P.SENDER_ADDRESS_TYPE, "EX".encode("utf-16-le")), (P.SENDER_EMAIL_ADDRESS, ex),
                    (P.SENT_REPRESENTING_ADDRESS_TYPE, "EX".encode("utf-16-le")),
                    (P.SENT_REPRESENTING_EMAIL_ADDRESS, ex)],
        }
    }  # fmt: skip
    path = tmp_path / "ex.pst"
    with extra_properties(changes), PstWriter(path) as writer:
        writer.add_message(Message(folder="Sent", source_id="1", raw=as_bytes(msg)), parsed)
    (message,) = _read_all(path)
    rebuilt = email.message_from_bytes(message.raw, policy=default)
    assert rebuilt["From"].addresses[0].display_name == "Jöhn Exchange"
    assert "/O=EXAMPLE" not in message.raw.decode("ascii")
    assert rebuilt["Subject"] == "Composed in Outlook"
    assert [a.addr_spec for a in rebuilt["To"].addresses] == ["bob@example.org"]
    assert rebuilt["Message-ID"] == msg["Message-ID"] and rebuilt["Date"].datetime == BASE_DATE


def test_outlook_items_that_are_no_mail_are_skipped_with_the_reason(tmp_path):
    path = tmp_path / "items.pst"
    classes = {
        "A contact": "IPM.Contact",
        "A meeting": "IPM.Appointment",
        "A mail": "IPM.Note.SMIME",
    }
    with extra_properties({s: {"message_class": c} for s, c in classes.items()}), \
            PstWriter(path) as writer:  # fmt: skip
        for subject in classes:
            msg, _ = build_email(subject)
            writer.add_message(Message(folder="Mixed", source_id=subject, raw=as_bytes(msg)))
    read = _read_all(path)
    skipped = [m for m in read if isinstance(m, ArchiveFailure)]
    assert [(m.status, m.error) for m in skipped] == [
        ("skipped", "not a mail message (IPM.Contact)"),
        ("skipped", "not a mail message (IPM.Appointment)"),
    ]
    (mail,) = [m for m in read if isinstance(m, ArchivedMessage)]
    assert email.message_from_bytes(mail.raw)["Subject"] == "A mail"


def test_rtf_only_body_is_decompressed_and_kept(tmp_path):
    rtf = (rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Arial;}}{\colortbl;\red0\green0\blue0;}"
           rb"\f0\fs20 Hello RTF\par Caf\'e9 and \u8364? euro\par\tab indented}")  # fmt: skip
    msg, _ = build_email("RTF only", text="will be replaced")
    path = tmp_path / "rtf.pst"
    with extra_properties({"RTF only": {"rtf": compressed_rtf.compress(rtf, compressed=True)}}), \
            PstWriter(path) as writer:  # fmt: skip
        writer.add_message(Message(folder="INBOX", source_id="1", raw=as_bytes(msg)))
    (message,) = _read_all(path)
    rebuilt = email.message_from_bytes(message.raw, policy=default)
    content = _content(rebuilt)
    assert content["text"] == "Hello RTF\nCafé and € euro\n\tindented"
    assert content["attachments"] == [("body.rtf", "application/rtf", sha256(rtf))]


def test_rtf_encapsulating_html_gives_the_html_body(tmp_path):
    rtf = (rb"{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl{\f0\fswiss Arial;}}"
           rb"{\*\htmltag19 <html>}{\*\htmltag50 <body>}\htmlrtf \f0\fs20 \htmlrtf0 "
           rb"{\*\htmltag64 <p>}Caf\'e9 {\*\htmltag84 <b>}bold{\*\htmltag92 </b>}"
           rb"\htmlrtf\par\htmlrtf0 {\*\htmltag72 </p>}{\*\htmltag58 </body>}{\*\htmltag27 </html>}}")  # fmt: skip
    msg, _ = build_email("RTF html", text="will be replaced")
    path = tmp_path / "rtfhtml.pst"
    with extra_properties({"RTF html": {"rtf": compressed_rtf.compress(rtf, compressed=True)}}), \
            PstWriter(path) as writer:  # fmt: skip
        writer.add_message(Message(folder="INBOX", source_id="1", raw=as_bytes(msg)))
    (message,) = _read_all(path)
    content = _content(email.message_from_bytes(message.raw, policy=default))
    assert content["html"] == "<html><body><p>Café <b>bold</b></p></body></html>"
    assert content["text"] is None and content["attachments"] == []


def test_rtf_to_text_skips_destinations():
    rtf = rb"{\rtf1{\*\generator Riched20;}{\info{\title T}}Body \{x\}\line two}"
    assert rtf_to_text(rtf) == "Body {x}\ntwo\n"


# -- other writers, damage, memory -------------------------------------------------------------------


def test_outlook_empty_store_yields_nothing(tmp_path):
    if not OUTLOOK_EMPTY.exists():
        pytest.skip("shared fixture outlook-empty.pst missing")
    with PstArchiveReader(OUTLOOK_EMPTY) as reader:
        assert list(reader.messages()) == []
        assert list(reader.browse()) == []
        assert {f.path for f in reader.folder_list()} >= {"Deleted Items"}


def test_not_a_pst_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pst"
    path.write_bytes(b"PK\x03\x04" + bytes(1000))
    with pytest.raises(PstFormatError, match="not a PST"):
        PstArchiveReader(path)
    path.write_bytes(b"")
    with pytest.raises(PstFormatError):
        PstArchiveReader(path)


def test_ansi_pst_and_damaged_header_are_clear_errors(tmp_path, feature_pst):
    data = bytearray(feature_pst.read_bytes())
    ansi = bytearray(data)
    ansi[10:12] = struct.pack("<H", 14)  # wVer of an ANSI (Outlook 97-2002) file
    (tmp_path / "ansi.pst").write_bytes(bytes(ansi))
    with pytest.raises(PstFormatError, match="ANSI"):
        PstArchiveReader(tmp_path / "ansi.pst")
    data[100] ^= 0xFF  # inside the CRC-protected part of the header
    (tmp_path / "header.pst").write_bytes(bytes(data))
    with pytest.raises(PstFormatError, match="header is damaged"):
        PstArchiveReader(tmp_path / "header.pst")


def test_truncated_pst_is_a_clear_error(tmp_path, feature_pst):
    data = feature_pst.read_bytes()
    path = tmp_path / "cut.pst"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(PstFormatError):
        with PstArchiveReader(path) as reader:
            list(reader.messages())


def _message_block_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of each message's PC block in the PST (found with our own access)."""
    out = []
    with PstFile(path) as pst:
        reader = PstArchiveReader(path)
        for item in reader.messages():
            node = pst.node(item.extra["nid"])
            entry = pst._lookup(pst.header.bbt_ib, 0x80, node.bid_data & ~1)
            _bid, ib, cb = struct.unpack_from("<QQH", entry, 0)
            out.append((ib, cb))
        reader.close()
    return out


def test_a_damaged_message_is_one_failure_and_the_rest_is_read(tmp_path, feature_pst, corpus):
    path = tmp_path / "damaged.pst"
    shutil.copy(feature_pst, path)
    offsets = _message_block_offsets(path)
    ib, cb = offsets[2]
    with open(path, "r+b") as handle:  # overwrite the third message's PC block
        handle.seek(ib)
        block = handle.read(cb)
        handle.seek(ib)
        handle.write(bytes(b ^ 0x5A for b in block))
    read = _read_all(path)
    failures = [m for m in read if isinstance(m, ArchiveFailure)]
    assert len(failures) == 1 and "CRC" in failures[0].error and failures[0].entry
    assert len(read) == len(corpus)


def test_garbage_after_the_header_never_hangs(tmp_path, feature_pst):
    data = bytearray(feature_pst.read_bytes())
    for at in range(0x4400, len(data), 997):  # damage every B-tree page and block a little
        data[at] ^= 0xFF
    path = tmp_path / "noise.pst"
    path.write_bytes(bytes(data))
    try:
        with PstArchiveReader(path) as reader:
            items = list(reader.messages())
    except PstFormatError:
        return  # the B-tree roots are damaged: the whole file is refused, clearly
    assert all(isinstance(i, ArchiveFailure) for i in items if not isinstance(i, ArchivedMessage))


@pytest.mark.slow
def test_30_mb_attachment_is_read_in_bounded_memory(tmp_path):
    size = 30 * 1024 * 1024
    raw, digest = big_attachment_message(size)
    path = tmp_path / "big.pst"
    with PstWriter(path) as writer:
        writer.add_message(Message(folder="INBOX", source_id="1", raw=raw))
    del raw
    script = (
        "import hashlib\n"
        "from connectors.archives.pst.restore import PstArchiveReader\n"
        "with PstArchiveReader(sys.argv[1]) as reader:\n"
        "    for m in reader.messages():\n"
        "        print('SIZE', len(m.raw), hashlib.sha256(m.raw).hexdigest())\n"
    )
    peak, output = peak_rss_of(script, str(path))
    print(f"peak RSS reading a PST with a 30 MB attachment: {peak / 2**20:.0f} MiB")
    line = next(line for line in output.splitlines() if line.startswith("SIZE"))
    rebuilt_size = int(line.split()[1])
    # The rebuilt message (base64: 4/3 of the attachment) is held once, plus the interpreter.
    assert peak <= rebuilt_size + 60 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB"
    (message,) = _read_all(path)
    rebuilt = email.message_from_bytes(message.raw, policy=default)
    (attachment,) = list(rebuilt.iter_attachments())
    assert attachment.get_filename() == "big.bin"
    assert hashlib.sha256(attachment.get_payload(decode=True)).hexdigest() == digest


# -- real-world MIME --------------------------------------------------------------------------------

REALWORLD = {
    **{f"shapes/{name}": raw for name, (raw, _differs) in CASES.items()},
    **{f"cpython/{name}": raw for name, raw in cpython_corpus().items()},
}
REALWORLD_RECEIVED = BASE_DATE


@pytest.fixture(scope="module")
def realworld_restored(tmp_path_factory) -> dict[str, ArchivedMessage | ArchiveFailure]:
    """Every real-world message through our writer and back, by its folder (one each)."""
    path = tmp_path_factory.mktemp("realworld") / "realworld.pst"
    with PstWriter(path) as writer:
        for name, raw in REALWORLD.items():
            writer.add_message(Message(folder=name, source_id=name, raw=raw,
                                       internal_date=REALWORLD_RECEIVED))  # fmt: skip
    return {m.folder: m for m in _read_all(path)}


def _assert_same_view(got: View, want: View, where: str) -> None:
    assert got.subject == want.subject, where
    assert got.sender == want.sender, where
    assert (got.to, got.cc, got.bcc) == (want.to, want.cc, want.bcc), where
    assert got.date == want.date, where
    assert got.body_text == want.body_text, where
    assert got.body_html == want.body_html, where
    assert [(a.name, a.mime_type) for a in got.attachments] == [
        (a.name, a.mime_type) for a in want.attachments
    ], where
    for number, (mine, theirs) in enumerate(zip(got.attachments, want.attachments, strict=True)):
        at = f"{where}, attachment {number + 1} ({theirs.name})"
        if theirs.embedded is not None:
            assert mine.embedded is not None, at
            _assert_same_view(mine.embedded, theirs.embedded, at)
        elif theirs.size is not None:
            assert (mine.size, mine.sha256) == (theirs.size, theirs.sha256), at


@pytest.mark.parametrize("name", sorted(REALWORLD))
def test_real_world_messages_come_back_as_python_sees_them(realworld_restored, name):
    """What the email package sees in the rebuilt message is what it sees in the source,
    for every message the PST can hold as it is (``differences`` empty)."""
    raw = REALWORLD[name]
    if parse_message(raw).differences:
        pytest.skip("the PST holds this message otherwise (the export reports why)")
    restored = realworld_restored[name]
    assert isinstance(restored, ArchivedMessage), restored
    want = stdlib_view(raw)
    if not parse_message(raw).headers:  # no headers at all: rebuilt from the properties,
        want.date = REALWORLD_RECEIVED  # dated by the arrival (else no Date is added)
    _assert_same_view(stdlib_view(restored.raw), want, name)
