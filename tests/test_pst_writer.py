"""PstWriter end to end: every PST written here is read back by readpst, pffexport, libpff
(pypff) and pst-extractor (npm, a port of java-libpst), and checked by check_pst; what they
find is compared with the source messages."""

from __future__ import annotations

import email
import email.policy
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.archives.pst import PstWriter, check_pst
from connectors.archives.pst import props as P
from connectors.archives.pst.reader import PstReader
from connectors.model import Message
from tests.pst_corpus import (
    EMPTY_FOLDERS,
    CorpusMessage,
    Expected,
    ExtractorMessage,
    ReadMessage,
    assert_every_reader_opens,
    big_attachment_message,
    bulk_messages,
    feature_corpus,
    normalize_text,
    peak_rss_of,
    read_pst_with_pst_extractor,
    read_pst_with_pypff,
    run_pffexport,
    run_readpst,
    sha256,
)

pytestmark = pytest.mark.timeout(300)
EMPTY_SHA256 = sha256(b"")


@pytest.fixture(scope="module")
def corpus() -> list[CorpusMessage]:
    return feature_corpus()


@pytest.fixture(scope="module")
def feature_pst(tmp_path_factory, corpus) -> Path:
    path = tmp_path_factory.mktemp("features") / "features.pst"
    with PstWriter(path, display_name="Feature store") as writer:
        for folder in EMPTY_FOLDERS:
            writer.add_folder(folder)
        for item in corpus:
            writer.add_message(item.message)
    return path


def _expected_folders(corpus: list[CorpusMessage]) -> set[str]:
    folders = {""} | {"Deleted Items"}
    for path in [c.folder for c in corpus] + EMPTY_FOLDERS:
        parts = path.split("/")
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return folders


def _by_subject(messages: list[ReadMessage]) -> dict[str, ReadMessage]:
    return {m.subject: m for m in messages}


def _assert_same(read: ReadMessage, item: CorpusMessage) -> None:
    expected = item.expected
    assert read.subject == expected.subject
    assert read.sender_name == expected.sender_name
    assert read.sender_address == expected.sender_address
    want_recipients = sorted(
        [(1, n or a, a) for n, a in expected.to]
        + [(2, n or a, a) for n, a in expected.cc]
        + [(3, n or a, a) for n, a in expected.bcc]
    )
    assert sorted(read.recipients) == want_recipients
    if expected.sent is not None:
        assert read.sent == expected.sent.astimezone(UTC).replace(tzinfo=None)
    internal = item.message.internal_date
    assert read.delivered == internal.astimezone(UTC).replace(tzinfo=None)
    assert read.message_id == expected.message_id
    assert bool(read.flags & P.MSGFLAG_READ) == item.message.seen
    assert bool(read.flags & P.MSGFLAG_HASATTACH) == bool(expected.attachments)
    assert normalize_text(read.body_text or "") == normalize_text(expected.body_text or "")
    assert normalize_text(read.body_html) == normalize_text(expected.body_html)
    headers = read.transport_headers or ""
    if expected.subject:
        assert "Subject:" in headers
    assert len(read.attachments) == len(expected.attachments)
    for got, want in zip(read.attachments, expected.attachments, strict=True):
        assert got.name == want.name
        assert got.mime_type == want.mime_type
        if want.embedded is not None:
            assert got.method == 5
        else:
            assert got.method == 1
            assert got.data is not None and sha256(got.data) == want.sha256


# -- the feature corpus -----------------------------------------------------------------------


def test_feature_pst_passes_the_structural_checker(feature_pst):
    assert check_pst(feature_pst) == []


def test_libpff_finds_every_folder_and_message_as_written(feature_pst, corpus):
    folders = read_pst_with_pypff(feature_pst)
    assert set(folders) == _expected_folders(corpus)
    for folder in EMPTY_FOLDERS:
        assert folders[folder] == []
    for folder in {c.folder for c in corpus}:
        items = [c for c in corpus if c.folder == folder]
        read = _by_subject(folders[folder])
        assert len(folders[folder]) == len(items)
        for item in items:
            _assert_same(read[item.expected.subject], item)


def test_folder_counts_and_tables_match_the_messages(feature_pst, corpus):
    with PstReader(feature_pst) as reader:
        names = {}
        for nid, node in reader.nodes.items():
            if nid & 0x1F == 0x02:
                pc = reader.property_context(nid)
                names[nid] = (node.parent, pc[P.DISPLAY_NAME], pc)

        def path_of(nid: int) -> str:
            parent, name, _ = names[nid]
            if parent in (0x8022,):
                return name.decode("utf-16-le")
            if nid == 0x8022:
                return ""
            return path_of(parent) + "/" + name.decode("utf-16-le")

        by_path = {path_of(nid): pc for nid, (parent, _, pc) in names.items()
                   if nid not in (0x122, 0x8042, 0x8082)}  # fmt: skip
        for folder in {c.folder for c in corpus}:
            items = [c for c in corpus if c.folder == folder]
            pc = by_path[folder]
            assert pc[P.CONTENT_COUNT] == len(items)
            assert pc[P.CONTENT_UNREAD_COUNT] == sum(not c.message.seen for c in items)
        assert by_path["Level1"][P.SUBFOLDERS] == 1
        assert by_path["Empty"][P.SUBFOLDERS] == 0


def test_pst_extractor_finds_every_folder_and_message_as_written(feature_pst, corpus):
    folders = read_pst_with_pst_extractor(feature_pst)
    assert set(folders) == _expected_folders(corpus)
    for folder in {c.folder for c in corpus}:
        items = [c for c in corpus if c.folder == folder]
        assert len(folders[folder]) == len(items)
        read = {m.subject: m for m in folders[folder]}
        for item in items:
            _assert_extractor_same(read[item.expected.subject], item.expected, item.message)


def _assert_extractor_same(read: ExtractorMessage, expected: Expected, source: Message | None) -> None:
    assert read.subject == expected.subject
    assert read.sender_name == expected.sender_name
    assert read.sender_address == expected.sender_address
    want_recipients = sorted(
        [(1, n or a, a) for n, a in expected.to]
        + [(2, n or a, a) for n, a in expected.cc]
        + [(3, n or a, a) for n, a in expected.bcc]
    )
    assert sorted(read.recipients) == want_recipients
    if expected.sent is not None:
        assert read.sent == expected.sent.astimezone(UTC)
    if source is not None:
        assert read.delivered == source.internal_date.astimezone(UTC)
        assert read.read == source.seen
    assert read.message_id == (expected.message_id or "")
    assert normalize_text(read.body_text) == normalize_text(expected.body_text or "")
    assert normalize_text(read.body_html) == normalize_text(expected.body_html or "")
    assert len(read.attachments) == len(expected.attachments)
    for got, want in zip(read.attachments, expected.attachments, strict=True):
        assert (got.name, got.mime_type) == (want.name, want.mime_type)
        if want.embedded is not None:
            assert got.method == 5 and got.embedded is not None
            _assert_extractor_same(got.embedded, want.embedded, None)
        else:
            assert (got.method, got.size, got.sha256) == (1, want.size, want.sha256)


def test_readpst_exports_every_message_with_its_attachments(feature_pst, corpus, tmp_path):
    result = run_readpst(feature_pst, tmp_path / "readpst")
    assert result.returncode == 0, result.output
    assert result.skipped == 0, result.output
    assert sum(len(v) for v in result.emls.values()) == len(corpus)
    assert result.done >= len(corpus)
    for folder in {c.folder for c in corpus}:
        items = [c for c in corpus if c.folder == folder]
        emls = [_parse_readpst_eml(p) for p in result.emls[folder]]
        assert len(emls) == len(items)
        by_subject = {eml.subject: eml for eml in emls}
        for item in items:
            want = item.expected
            assert want.subject in by_subject, (folder, want.subject, list(by_subject))
            eml = by_subject[want.subject]
            # readpst leaves out attachments of zero bytes; libpff and pffexport keep them.
            non_empty = [a for a in _flat_attachment_hashes(want) if a[1] != EMPTY_SHA256]
            assert sorted(eml.attachments) == sorted(non_empty)
            if want.sender_address:  # readpst invents MAILER-DAEMON when there is none
                assert eml.sender_address == want.sender_address
            if want.sent is not None:
                assert eml.date == want.sent
            if want.body_text:
                assert normalize_text(eml.body_text) == normalize_text(want.body_text)


def _flat_attachment_hashes(expected: Expected) -> list[tuple[str, str]]:
    out = []
    for attachment in expected.attachments:
        if attachment.embedded is not None:
            out.extend(_flat_attachment_hashes(attachment.embedded))
        else:
            out.append((attachment.name, attachment.sha256))
    return out


@dataclass
class _Eml:
    subject: str
    sender_address: str
    date: datetime | None
    body_text: str | None
    attachments: list[tuple[str, str]]  # (file name, sha256), embedded messages' included


def _parse_readpst_eml(path: Path) -> _Eml:
    raw = path.read_bytes()
    # readpst starts embedded messages with an mbox "From " line; drop it to parse them.
    raw = re.sub(rb"(Content-Type: message/rfc822\r?\n\r?\n)>From [^\n]*\n", rb"\1", raw)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    attachments = []
    for part in message.walk():
        if part.get_content_maintype() == "multipart" or part.get_content_type() == "message/rfc822":
            continue
        name = part.get_filename()
        if name:
            attachments.append((name, sha256(part.get_payload(decode=True) or b"")))
    body = message.get_body(("plain",))
    sender = message["from"].addresses[0].addr_spec if message["from"] else ""
    date = message["date"].datetime if message["date"] else None
    return _Eml(str(message["subject"] or ""), sender, date,
                body.get_content() if body is not None else None, attachments)  # fmt: skip


def test_pffexport_exports_every_folder_message_and_attachment(feature_pst, corpus, tmp_path):
    result = run_pffexport(feature_pst, tmp_path)
    assert result.returncode == 0, result.output
    assert "Export completed" in result.output
    assert result.folders() >= _expected_folders(corpus) - {"Deleted Items"}
    for folder in {c.folder for c in corpus}:
        items = [c for c in corpus if c.folder == folder]
        dirs = result.message_dirs(folder)
        assert len(dirs) == len(items)
        exported = {}
        for message_dir in dirs:
            headers = (message_dir / "OutlookHeaders.txt").read_text("utf-8", "replace")
            subject = re.search(r"^Subject:\t+(.*)$", headers, re.M)
            exported[_bmp_only(subject.group(1) if subject else "")] = message_dir
        for item in items:
            message_dir = exported[_bmp_only(item.expected.subject)]
            found = sorted(
                (p.name.split("_", 1)[1], sha256(p.read_bytes()))
                for p in message_dir.rglob("*")
                if p.is_file() and p.parent.name == "Attachments"
            )
            assert found == sorted(_flat_attachment_hashes(item.expected))
            body_file = message_dir / "Message.txt"
            if item.expected.body_text:
                exported_text = body_file.read_bytes().decode("utf-8")
                assert _bmp_only(normalize_text(exported_text)) == _bmp_only(
                    normalize_text(item.expected.body_text))  # fmt: skip
            elif item.expected.body_html:
                exported_html = (message_dir / "Message.html").read_bytes().decode("utf-8")
                assert normalize_text(exported_html) == normalize_text(item.expected.body_html)


def _bmp_only(text: str) -> str:
    """pffexport 20180714 garbles characters beyond U+FFFF (emoji) in its text files."""
    return "".join(c for c in text if ord(c) <= 0xFFFF)


def test_embedded_messages_keep_their_properties_and_attachments(feature_pst, corpus, tmp_path):
    result = run_pffexport(feature_pst, tmp_path)
    forwarded = next(
        d for d in result.message_dirs("INBOX")
        if "Fwd: Original message" in (d / "OutlookHeaders.txt").read_text()
    )  # fmt: skip
    inner = forwarded / "Attachments" / "Attachment00001" / "Message00001"
    headers = (inner / "OutlookHeaders.txt").read_text()
    assert "Subject:\t\t\t\tOriginal message" in headers
    assert "Sender email address:\t\t\torig@example.com" in headers
    assert "target@example.com" in (inner / "Recipients.txt").read_text()
    assert (inner / "Message.txt").read_text().strip() == "The original text."
    innermost = inner / "Attachments" / "Attachment00002" / "Message00001"
    assert "Innermost" in (innermost / "OutlookHeaders.txt").read_text()
    assert (innermost / "Attachments" / "1_deep.txt").read_bytes() == b"deep attachment\n"


def test_message_sizes_and_attachment_properties(feature_pst):
    with PstReader(feature_pst) as reader:
        for nid, node in reader.nodes.items():
            if nid & 0x1F != 0x04:
                continue
            heap = reader.heap(node.bid_data, node.bid_sub)
            values = heap.property_context()
            assert values[P.MESSAGE_CLASS] == "IPM.Note".encode("utf-16-le")
            assert isinstance(values[P.MESSAGE_SIZE], int) and values[P.MESSAGE_SIZE] > 0
            assert P.RTF_COMPRESSED not in values
            for sub_nid, entry in heap.subnode_entries().items():
                if sub_nid & 0x1F != 0x05:
                    continue
                attachment = reader.heap(entry.bid_data, entry.bid_sub).property_context()
                assert attachment[P.RENDERING_POSITION] == 0xFFFFFFFF
                assert attachment[P.ATTACH_SIZE] > 0
                short = attachment[P.ATTACH_FILENAME].decode("utf-16-le")
                assert short.isascii() and len(short) <= 12
                if attachment[P.ATTACH_METHOD] == P.ATTACH_BY_VALUE:
                    assert P.ATTACH_DATA_BINARY in attachment
                    assert attachment[P.ATTACH_LONG_FILENAME]


def test_inline_image_keeps_its_content_id(feature_pst):
    with PstReader(feature_pst) as reader:
        content_ids = []
        for nid, node in reader.nodes.items():
            if nid & 0x1F != 0x04:
                continue
            heap = reader.heap(node.bid_data, node.bid_sub)
            for sub_nid, entry in heap.subnode_entries().items():
                if sub_nid & 0x1F == 0x05:
                    values = reader.heap(entry.bid_data, entry.bid_sub).property_context()
                    if P.ATTACH_CONTENT_ID in values:
                        content_ids.append(values[P.ATTACH_CONTENT_ID].decode("utf-16-le"))
                        assert values[P.ATTACHMENT_HIDDEN] == 1
        assert content_ids == ["logo123"]


def test_transport_headers_are_the_source_headers(feature_pst, corpus):
    folders = read_pst_with_pypff(feature_pst)
    item = next(c for c in corpus if c.expected.subject == "Smörgåsbord ünd 8-bit headers")
    read = _by_subject(folders["INBOX"])[item.expected.subject]
    source_headers = item.message.raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    assert read.transport_headers.replace("\r\n", "\n").strip() == source_headers.replace(
        "\r\n", "\n"
    )


# -- sizes, encodings, special cases ------------------------------------------------------------


def _write(path: Path, messages: list[Message], folders=(), **options) -> Path:
    with PstWriter(path, **options) as writer:
        for folder in folders:
            writer.add_folder(folder)
        for message in messages:
            writer.add_message(message)
    return path


_assert_all_readers_accept = assert_every_reader_opens


def test_empty_store_is_valid_for_every_reader(tmp_path):
    path = _write(tmp_path / "empty.pst", [])
    assert path.stat().st_size == 0x4400 + 253_952
    _assert_all_readers_accept(path, tmp_path, 0)
    with PstReader(path) as reader:
        store = reader.property_context(0x21)
        assert store[P.DISPLAY_NAME] == "LegacyFlo archive".encode("utf-16-le")
        assert reader.header.crypt_method == 1


def test_unencoded_store(tmp_path, corpus):
    path = _write(tmp_path / "plain.pst", [c.message for c in corpus[:5]], crypt="none")
    with PstReader(path) as reader:
        assert reader.header.crypt_method == 0
    _assert_all_readers_accept(path, tmp_path, 5)
    raw = path.read_bytes()
    assert "Plain message".encode("utf-16-le") in raw  # stored as is, not permuted


def test_a_thousand_messages_in_one_folder(tmp_path):
    messages = bulk_messages(1200, "INBOX/Bulk")
    path = _write(tmp_path / "bulk.pst", messages)
    _assert_all_readers_accept(path, tmp_path, 1200)
    folders = read_pst_with_pypff(path)
    subjects = sorted(m.subject for m in folders["INBOX/Bulk"])
    assert subjects == [f"Bulk message {i:05d}" for i in range(1200)]
    with PstReader(path) as reader:
        folder_nid = next(
            nid for nid, node in reader.nodes.items()
            if nid & 0x1F == 2 and reader.property_context(nid)[P.DISPLAY_NAME] == "Bulk".encode(
                "utf-16-le")
        )  # fmt: skip
        pc = reader.property_context(folder_nid)
        assert pc[P.CONTENT_COUNT] == 1200 and pc[P.CONTENT_UNREAD_COUNT] == 600
        table = reader.table_context(folder_nid | 0x0E)
        assert len(table.rows()) == 1200
        assert [r for r, _ in table.row_index] == sorted(r for r, _ in table.row_index)
        subjects_in_table = {row[P.SUBJECT].decode("utf-16-le") for row in table.rows()}
        assert subjects_in_table == {f"Bulk message {i:05d}" for i in range(1200)}


def test_hundreds_of_recipients_and_attachments(tmp_path):
    from tests.pst_corpus import as_bytes, build_email

    recipients = [(f"Person {i} ü", f"p{i}@example.com") for i in range(520)]
    files = [(f"f{i}.txt", f"file {i}".encode(), "text/plain") for i in range(460)]
    msg, _ = build_email("Crowded", to=recipients[:300], cc=recipients[300:], attachments=files)
    path = _write(tmp_path / "crowded.pst", [Message(folder="INBOX", source_id="1",
                                                     raw=as_bytes(msg))])  # fmt: skip
    assert_every_reader_opens(path, tmp_path, 1)
    read = read_pst_with_pypff(path)["INBOX"][0]
    assert sorted(read.recipients) == sorted(
        [(1, n, a) for n, a in recipients[:300]] + [(2, n, a) for n, a in recipients[300:]]
    )
    assert [(a.name, a.data) for a in read.attachments] == [(n, d) for n, d, _ in files]
    with PstReader(path) as reader:
        node = next(n for nid, n in reader.nodes.items() if nid & 0x1F == 0x04)
        subnodes = reader.subnodes(node.bid_sub)
        table = reader.heap(subnodes[0x692].bid_data, subnodes[0x692].bid_sub)
        assert len(table.table_context().rows()) == 520
        row_index = struct.unpack_from("<I", table.get(table.user_root), 10)[0]
        _type, key_size, entry_size, levels = table.get(row_index)[:4]
        assert (key_size, entry_size, levels) == (4, 4, 1)  # 520 rows: a two-level index
        assert len(table.bth_records(row_index)[2]) == 520
    extracted = read_pst_with_pst_extractor(path)["INBOX"][0]
    assert sorted(extracted.recipients) == sorted(read.recipients)
    assert [(a.name, a.size) for a in extracted.attachments] == [(n, len(d)) for n, d, _ in files]


def test_many_folders(tmp_path):
    folders = [f"Root{i % 7}/Sub {i} ü/日本{i}" for i in range(250)]
    path = _write(tmp_path / "folders.pst", [], folders=folders)
    assert_every_reader_opens(path, tmp_path, 0)
    read = read_pst_with_pypff(path)
    for folder in folders:
        assert read[folder] == []
    assert set(read_pst_with_pst_extractor(path)) >= set(folders)
    pffexport = run_pffexport(path, tmp_path)
    assert pffexport.returncode == 0
    assert pffexport.folders() >= set(folders)


def test_message_without_folder_goes_to_the_top_folder(tmp_path):
    raw = b"Subject: top\r\nFrom: a@b.c\r\n\r\nbody\r\n"
    path = _write(tmp_path / "top.pst", [Message(folder="", source_id="1", raw=raw)])
    assert_every_reader_opens(path, tmp_path, 1)
    assert [m.subject for m in read_pst_with_pypff(path)[""]] == ["top"]


def test_deleted_items_folder_is_reused(tmp_path):
    raw = b"Subject: deleted\r\nFrom: a@b.c\r\n\r\nbody\r\n"
    path = _write(tmp_path / "del.pst", [Message(folder="Deleted Items", source_id="1", raw=raw)])
    assert_every_reader_opens(path, tmp_path, 1)
    folders = read_pst_with_pypff(path)
    assert [m.subject for m in folders["Deleted Items"]] == ["deleted"]
    assert list(folders).count("Deleted Items") == 1


def test_sibling_folders_differing_only_in_case_get_distinct_names(tmp_path):
    raw = b"Subject: s\r\nFrom: a@b.c\r\n\r\nbody\r\n"
    messages = [Message(folder=f, source_id=f, raw=raw) for f in ("INBOX", "Inbox", "inbox/x")]
    path = _write(tmp_path / "case.pst", messages)
    assert_every_reader_opens(path, tmp_path, 3)
    folders = read_pst_with_pypff(path)
    assert {"INBOX", "Inbox (2)", "inbox (3)", "inbox (3)/x"} <= set(folders)
    assert all(len(folders[f]) == 1 for f in ("INBOX", "Inbox (2)", "inbox (3)/x"))


def test_add_message_reports_growth_and_close_is_final(tmp_path):
    path = tmp_path / "api.pst"
    writer = PstWriter(path)
    start = writer.bytes_written
    added = writer.add_message(bulk_messages(1, "A", size=20_000)[0])
    assert added > 20_000 and writer.bytes_written == start + added
    writer.close()
    writer.close()  # idempotent
    assert writer.bytes_written == path.stat().st_size
    assert_every_reader_opens(path, tmp_path, 1)
    with pytest.raises(ValueError):
        writer.add_message(bulk_messages(1, "A")[0])
    with pytest.raises(ValueError):
        PstWriter(tmp_path / "x.pst", crypt="rot13")


def test_unfinished_file_is_flagged_by_the_checker(tmp_path):
    path = tmp_path / "unfinished.pst"
    writer = PstWriter(path)
    writer.add_message(bulk_messages(1, "A")[0])
    writer.abort()
    problems = check_pst(path)
    assert problems  # no B-tree roots, fAMapValid 0
    raw = path.read_bytes()
    assert raw[:4] == b"!BDN" and raw[248] == 0


def test_rgnid_covers_every_nid(tmp_path, corpus):
    path = _write(tmp_path / "nids.pst", [c.message for c in corpus])
    assert_every_reader_opens(path, tmp_path, len(corpus))
    with PstReader(path) as reader:
        for nid in reader.nodes:
            assert nid >> 5 <= reader.header.rgnid[nid & 0x1F]
        assert reader.header.rgnid[4] >= 0x10000 + len(corpus)


def test_huge_bodies_are_streamed_and_read_back(tmp_path, monkeypatch):
    from connectors.archives.pst import mime

    monkeypatch.setattr(mime, "LARGE_BODY", 50_000)  # the streaming path, with small data
    text = "".join(f"Zeile {i}: Größe – 日本語 – 😀\n" for i in range(8000))
    html = f"<html><body><pre>{text}</pre></body></html>\n"
    from tests.pst_corpus import as_bytes, build_email

    msg, _ = build_email("Huge bodies", text=text, html=html, charset="utf-8")
    parsed = mime.parse_message(as_bytes(msg))
    assert parsed.large_body_text is not None and parsed.large_body_html is not None
    path = _write(tmp_path / "bodies.pst", [Message(folder="INBOX", source_id="1",
                                                    raw=as_bytes(msg))])  # fmt: skip
    assert_every_reader_opens(path, tmp_path, 1)
    read = read_pst_with_pypff(path)["INBOX"][0]
    assert normalize_text(read.body_text) == normalize_text(text)
    assert normalize_text(read.body_html) == normalize_text(html)
    extracted = read_pst_with_pst_extractor(path)["INBOX"][0]
    assert normalize_text(extracted.body_text) == normalize_text(text)
    assert normalize_text(extracted.body_html) == normalize_text(html)


@pytest.mark.slow
def test_40_mb_text_body_streams_in_bounded_memory(tmp_path):
    import base64

    line = "Body text with umlauts äöü and a long line of words. " * 3 + "\n"
    text = line * (40 * 1024 * 1024 // len(line))
    source = tmp_path / "body.eml"
    source.write_bytes(
        b"Subject: Huge body\r\nFrom: a@example.com\r\nContent-Type: text/plain; charset=utf-8"
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(text.encode())
    )
    path = tmp_path / "body.pst"
    script = (
        "from pathlib import Path\n"
        "from connectors.model import Message\n"
        "from connectors.archives.pst import PstWriter\n"
        "raw = Path(sys.argv[2]).read_bytes()\n"
        "with PstWriter(Path(sys.argv[1])) as w:\n"
        "    w.add_message(Message(folder='INBOX', source_id='1', raw=raw))\n"
    )
    peak, _output = peak_rss_of(script, str(path), str(source))
    assert peak <= 200 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB"
    assert_every_reader_opens(path, tmp_path, 1)
    read = read_pst_with_pypff(path)["INBOX"][0]
    assert normalize_text(read.body_text) == normalize_text(text)


@pytest.mark.slow
def test_40_mb_attachment_streams_in_bounded_memory(tmp_path):
    size = 40 * 1024 * 1024
    path = tmp_path / "big.pst"
    source = tmp_path / "big.eml"
    raw, digest = big_attachment_message(size)
    source.write_bytes(raw)
    del raw
    # The writer runs in a fresh interpreter so that its peak RSS is its own: it reads the
    # message (about 54 MB of base64) and streams the attachment into the PST.
    script = (
        "from pathlib import Path\n"
        "from datetime import datetime, UTC\n"
        "from connectors.model import Message\n"
        "from connectors.archives.pst import PstWriter\n"
        "raw = Path(sys.argv[2]).read_bytes()\n"
        "with PstWriter(Path(sys.argv[1])) as w:\n"
        "    w.add_message(Message(folder='INBOX', source_id='1', raw=raw,\n"
        "                          internal_date=datetime(2024, 1, 1, tzinfo=UTC)))\n"
    )
    peak, _output = peak_rss_of(script, str(path), str(source))
    assert peak <= 200 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB"
    assert path.stat().st_size > size
    assert check_pst(path) == []
    read = read_pst_with_pypff(path)["INBOX"][0]
    assert read.attachments[0].name == "big.bin"
    assert sha256(read.attachments[0].data) == digest
    with PstReader(path) as reader:
        node = next(n for nid, n in reader.nodes.items() if nid & 0x1F == 0x04)
        attachments = [e for nid, e in reader.subnodes(node.bid_sub).items() if nid & 0x1F == 5]
        data_entry = next(iter(reader.subnodes(attachments[0].bid_sub).values()))
        root = reader.read_block(data_entry.bid_data).data
        assert data_entry.bid_data & 2 and root[1] == 2  # an XXBLOCK: more than 1,021 blocks
        assert struct.unpack_from("<I", root, 4)[0] == size
    pffexport = run_pffexport(path, tmp_path)
    assert pffexport.returncode == 0
    exported = pffexport.message_dirs("INBOX")[0] / "Attachments" / "1_big.bin"
    assert sha256(exported.read_bytes()) == digest
    assert read_pst_with_pst_extractor(path)["INBOX"][0].attachments[0].sha256 == digest
