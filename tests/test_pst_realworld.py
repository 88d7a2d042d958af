"""Real-world MIME converted to PST without losing structure: for every message of a corpus
nobody here wrote (CPython's email test messages, where installed) and of hand-written shapes
real mailers produce (``tests/mime_corpus``), what each reader finds in the PST (subject,
sender, recipients, date, plain and HTML body, attachment names, types, sizes and bytes,
attached messages recursively) equals what Python's ``email`` package (policy ``default``)
sees in the source (``tests/stdlib_view``). Where the PST must differ, the message's
``differences`` say so, and the export report carries them.

Reader bugs are excepted narrowly, by name: readpst leaves out attachments of zero bytes;
pffexport garbles characters beyond U+FFFF in its text files and drops the first character of
a subject that starts with a non-ASCII one; pypff (libpff's Python binding)
gives no access to attached messages (``number_of_sub_items`` is 0 for every item attachment),
so libpff's view of them is checked through pffexport, which exports them.
"""

from __future__ import annotations

import email
import email.policy
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.archives.pst import PstWriter, check_pst
from connectors.archives.pst.mime import parse_message
from connectors.model import Message
from tests.fixtures_engine import *  # noqa: F403 - the dovecot and s3 fixtures
from tests.mime_corpus import CASES, cpython_corpus
from tests.pst_corpus import (
    ExtractorMessage,
    ReadMessage,
    read_pst_with_pst_extractor,
    read_pst_with_pypff,
    read_pst_with_reader,
    run_pffexport,
    run_readpst,
    sha256,
)
from tests.stdlib_view import View, ViewAttachment, normalize, stdlib_view

pytestmark = pytest.mark.timeout(300)
RECEIVED = datetime(2024, 2, 1, 12, 0, tzinfo=UTC)
CORPUS: dict[str, bytes] = {
    **{f"shapes/{name}": raw for name, (raw, _differs) in CASES.items()},
    **{f"cpython/{name}": raw for name, raw in cpython_corpus().items()},
}
MUST_DIFFER = {f"shapes/{name}" for name, (_raw, differs) in CASES.items() if differs}


@pytest.fixture(scope="module")
def realworld_pst(tmp_path_factory) -> Path:
    """One folder per message, named after it."""
    path = tmp_path_factory.mktemp("realworld") / "realworld.pst"
    with PstWriter(path) as writer:
        for name, raw in CORPUS.items():
            writer.add_message(Message(folder=name, source_id=name, raw=raw,
                                       internal_date=RECEIVED, flags=("\\Seen",)))  # fmt: skip
    return path


def _expected(name: str) -> View:
    view = stdlib_view(CORPUS[name])
    if view.date is None:  # a message without a (valid) date is dated by its arrival
        view.date = RECEIVED
    return view


def _assert_same(got: View, want: View, where: str, *, attached_messages: bool = True) -> None:
    assert got.subject == want.subject, where
    assert got.sender == want.sender, where
    assert (got.to, got.cc, got.bcc) == (want.to, want.cc, want.bcc), where
    if want.date is not None:  # (an attached message without one gets the conversion's time)
        assert got.date == want.date, where
    assert got.body_text == want.body_text, where
    assert got.body_html == want.body_html, where
    assert [(a.name, a.mime_type) for a in got.attachments] == [
        (a.name, a.mime_type) for a in want.attachments], where  # fmt: skip
    for number, (mine, theirs) in enumerate(zip(got.attachments, want.attachments, strict=True)):
        at = f"{where}, attachment {number + 1} ({theirs.name})"
        if theirs.embedded is not None:
            if attached_messages:
                assert mine.embedded is not None, at
                _assert_same(mine.embedded, theirs.embedded, at)
        elif theirs.size is not None:  # None: a message/* part Python keeps as header blocks
            assert (mine.size, mine.sha256) == (theirs.size, theirs.sha256), at


# -- the parse ----------------------------------------------------------------------------------


def test_the_corpus_holds_the_real_world_shapes():
    assert len(CASES) >= 12
    if cpython_corpus():
        assert len(CORPUS) >= 60


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_parse_notes_a_difference_exactly_where_the_pst_must_differ(name):
    parsed = parse_message(CORPUS[name])
    assert bool(parsed.differences) == (name in MUST_DIFFER), parsed.differences


def test_a_base64_attached_message_is_shown_decoded_and_the_difference_noted():
    parsed = parse_message(CORPUS["shapes/encoded_attached_message"])
    (attached,) = parsed.attachments
    assert attached.embedded.subject == "Encoded inside"
    assert attached.embedded.body_text.strip() == "Inner text."
    assert parsed.differences == ["an attached message is base64-encoded (RFC 2046 forbids it): decoded"]


def _view_of_parse(parsed) -> View:
    """The writer's parse (``connectors.archives.pst.mime``) in the same terms, before any PST."""
    sender = (parsed.sender.name, parsed.sender.address) if parsed.sender else None
    view = View(subject=parsed.subject, sender=sender,
                to=[(a.name, a.address) for a in parsed.to],
                cc=[(a.name, a.address) for a in parsed.cc],
                bcc=[(a.name, a.address) for a in parsed.bcc],
                date=parsed.sent.astimezone(UTC) if parsed.sent else None,
                body_text=normalize(parsed.body_text), body_html=normalize(parsed.body_html))  # fmt: skip
    for attachment in parsed.attachments:
        if attachment.embedded is not None:
            view.attachments.append(ViewAttachment(attachment.filename, attachment.mime_type,
                                                   embedded=_view_of_parse(attachment.embedded)))  # fmt: skip
        else:
            data = attachment.content.decode()
            view.attachments.append(ViewAttachment(attachment.filename, attachment.mime_type,
                                                   len(data), sha256(data)))  # fmt: skip
    return view


def _assert_parse_matches(raw: bytes, where: str) -> None:
    parsed = parse_message(raw)
    if parsed.differences:
        return
    want = stdlib_view(raw)
    _assert_same(_view_of_parse(parsed), want, where)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_writer_parses_each_message_as_pythons_email_package_does(name):
    if name in MUST_DIFFER:
        assert _view_of_parse(parse_message(CORPUS[name])) != stdlib_view(CORPUS[name])
    else:
        _assert_parse_matches(CORPUS[name], name)


def test_damaged_messages_parse_as_pythons_email_package_parses_them():
    """The corpus with bytes cut, doubled line breaks, stray colons, boundaries and binary
    noise put in: the parse never raises, and equals Python's unless it notes why not."""
    rng = random.Random(17)
    seeds = list(CORPUS.values())
    for number in range(400):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(raw) + 1)
            roll = rng.random()
            if roll < 0.3 and raw:
                del raw[at : at + rng.randint(1, 20)]
            elif roll < 0.6:
                raw[at:at] = rng.choice([b"\r", b"\n", b"\r\n", b"--", b":", b" ", b"\x00", b"=?"])
            else:
                raw[at:at] = rng.randbytes(rng.randint(1, 5))
        try:
            stdlib_view(bytes(raw))
        except Exception:  # noqa: BLE001, S112 - the standard parser itself fails on some
            continue
        _assert_parse_matches(bytes(raw), f"damaged message {number}")


# -- what the readers find ----------------------------------------------------------------------


def _from_pst_message(read: ReadMessage | ExtractorMessage) -> View:
    recipients = {1: [], 2: [], 3: []}
    for kind, name, address in read.recipients:
        recipients[kind].append((name or "", address or ""))
    sender = (read.sender_name, read.sender_address) if read.sender_name or read.sender_address else None
    sent = read.sent
    if sent is not None and sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    view = View(subject=read.subject or "", sender=sender, to=recipients[1], cc=recipients[2],
                bcc=recipients[3], date=sent, body_text=normalize(read.body_text),
                body_html=normalize(read.body_html))  # fmt: skip
    for attachment in read.attachments:
        if attachment.method == 5:
            inner = _from_pst_message(attachment.embedded) if attachment.embedded else None
            view.attachments.append(ViewAttachment(attachment.name, attachment.mime_type,
                                                   embedded=inner))  # fmt: skip
        elif isinstance(read, ExtractorMessage):
            view.attachments.append(ViewAttachment(attachment.name, attachment.mime_type,
                                                   attachment.size, attachment.sha256))  # fmt: skip
        else:
            data = attachment.data or b""
            view.attachments.append(ViewAttachment(attachment.name, attachment.mime_type,
                                                   len(data), sha256(data)))  # fmt: skip
    return view


def _check_reader(folders: dict, reader: str, *, attached_messages: bool = True) -> None:
    for name in CORPUS:
        assert len(folders[name]) == 1, (reader, name)
        got = _from_pst_message(folders[name][0])
        want = _expected(name)
        if name in MUST_DIFFER:
            assert got != want, f"{name} was declared to differ"
            continue
        _assert_same(got, want, f"{reader}: {name}", attached_messages=attached_messages)


def test_the_pst_passes_the_structural_checker(realworld_pst):
    assert check_pst(realworld_pst) == []


def test_libpff_shows_every_message_as_pythons_email_package_parses_it(realworld_pst):
    _check_reader(read_pst_with_pypff(realworld_pst), "libpff", attached_messages=False)


def test_our_reader_shows_every_message_as_pythons_email_package_parses_it(realworld_pst):
    _check_reader(read_pst_with_reader(realworld_pst), "connectors.archives.pst.reader")


def test_pst_extractor_shows_every_message_as_pythons_email_package_parses_it(realworld_pst):
    _check_reader(read_pst_with_pst_extractor(realworld_pst), "pst-extractor")


def _flat_attachments(view: View) -> list[tuple[str, str | None]]:
    out = []
    for attachment in view.attachments:
        if attachment.embedded is not None:
            out += _flat_attachments(attachment.embedded)
        else:
            out.append((attachment.name, attachment.sha256))
    return out


EMPTY_SHA256 = sha256(b"")


def test_readpst_exports_every_message_with_its_text_and_attachments(realworld_pst, tmp_path):
    result = run_readpst(realworld_pst, tmp_path / "readpst")
    assert result.returncode == 0 and result.skipped == 0, result.output
    for name in sorted(CORPUS):
        (eml,) = result.emls[name]
        exported = email.message_from_bytes(_without_mbox_from(eml.read_bytes()),
                                            policy=email.policy.default)  # fmt: skip
        want = _expected(name)
        if name in MUST_DIFFER:
            continue
        assert str(exported["subject"] or "") == want.subject, name
        if want.sender and want.sender[1]:  # readpst invents MAILER-DAEMON when there is none
            assert exported["from"].addresses[0].addr_spec == want.sender[1], name
        body = exported.get_body(("plain",))
        assert normalize(body.get_content() if body is not None else None) == want.body_text, name
        found = sorted((part.get_filename(), sha256(part.get_payload(decode=True) or b""))
                       for part in exported.walk()
                       if part.get_filename() and part.get_content_maintype() != "multipart"
                       and part.get_content_type() != "message/rfc822")  # fmt: skip
        # readpst leaves out attachments of zero bytes (libpff and pst-extractor keep them);
        # a message/* part Python keeps as header blocks is compared by name only.
        wanted = [(n, h) for n, h in _flat_attachments(want) if h != EMPTY_SHA256]
        assert [n for n, _ in found] == sorted(n for n, _ in wanted), name
        assert [h for (_, h), (_, w) in zip(found, sorted(wanted), strict=True) if w is not None] == [
            w for _, w in sorted(wanted) if w is not None], name  # fmt: skip


def _without_mbox_from(raw: bytes) -> bytes:
    """readpst starts attached messages with an mbox "From " line; drop it to parse them."""
    return re.sub(rb"(Content-Type: message/rfc822\r?\n\r?\n)>?From [^\n]*\n", rb"\1", raw)


def test_pffexport_exports_every_message_and_attachment_without_an_error(realworld_pst, tmp_path):
    result = run_pffexport(realworld_pst, tmp_path)
    assert result.returncode == 0 and "Export completed" in result.output, result.output
    assert not result.errors(), result.output
    for name in sorted(CORPUS):
        (message_dir,) = result.message_dirs(name)
        if name in MUST_DIFFER:
            continue
        want = _expected(name)
        assert _pffexport_subject(message_dir) == _as_pffexport_shows(want.subject), name
        found = sorted((p.name.split("_", 1)[1], sha256(p.read_bytes()))
                       for p in message_dir.rglob("*")
                       if p.is_file() and p.parent.name == "Attachments")  # fmt: skip
        wanted = sorted(_flat_attachments(want))
        assert [n for n, _ in found] == [n for n, _ in wanted], name
        assert [h for (_, h), (_, w) in zip(found, wanted, strict=True) if w is not None] == [
            w for _, w in wanted if w is not None], name  # fmt: skip
        if want.body_text:
            text = (message_dir / "Message.txt").read_bytes().decode("utf-8")
            assert _bmp_only(normalize(text)) == _bmp_only(want.body_text), name
        attached = [a for a in want.attachments if a.embedded is not None]
        for number, attachment in enumerate(want.attachments, start=1):
            if attachment.embedded is None:
                continue
            inner = message_dir / "Attachments" / f"Attachment{number:05d}" / "Message00001"
            assert _pffexport_subject(inner) == _as_pffexport_shows(attachment.embedded.subject), (
                name, number)  # fmt: skip
        assert len(attached) == len(list(message_dir.glob("Attachments/Attachment*/Message00001")))


def _pffexport_subject(message_dir: Path) -> str:
    headers = (message_dir / "OutlookHeaders.txt").read_bytes().decode("utf-8", "replace")
    subject = re.search(r"^Subject:\t+(.*)$", headers, re.M)
    return _bmp_only(subject.group(1) if subject else "").lstrip("\ufffd")


def _as_pffexport_shows(subject: str) -> str:
    """pffexport 20180714 drops the first character of a subject that starts with a non-ASCII
    one (leaving garbage for one beyond U+FFFF), and garbles those beyond U+FFFF elsewhere."""
    if subject[:1] and not subject[:1].isascii():
        subject = subject[1:]
    return _bmp_only(subject)


def _bmp_only(text: str | None) -> str | None:
    """pffexport 20180714 garbles characters beyond U+FFFF (emoji) in its text files."""
    return None if text is None else "".join(c for c in text if ord(c) <= 0xFFFF)


# -- the export report --------------------------------------------------------------------------


def test_the_export_report_says_where_the_pst_shows_a_message_otherwise(dovecot, s3):
    """A message the PST must show otherwise than Python reads it is exported, and its report
    row says how; the others' rows say nothing."""
    from connectors.pipeline.ledger import MemoryLedger
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import COMPLETED, ExportSpec
    from tests.fixtures_engine import USER, fast_tuning, imap_source, read_report
    from tests.mailgen import GeneratedMessage, Mailbox, write_maildir

    names = ["shapes/encoded_attached_message", "shapes/mailman_digest", "shapes/bare_cr_lines"]
    mailbox = Mailbox("realworld", 0, ["INBOX"], _factory=lambda: iter(
        [GeneratedMessage("INBOX", CORPUS[name], RECEIVED, ("\\Seen",)) for name in names]))
    write_maildir(dovecot, USER, mailbox)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="rw", format="pst"),
                            MemoryLedger(), fast_tuning())  # fmt: skip
    assert result.state == COMPLETED, result.error
    rows = {row["sha256"]: row for row in read_report(s3, "rw.report.csv")}
    errors = {name: rows[sha256(CORPUS[name])]["error"] for name in names}
    assert {row["status"] for row in rows.values()} == {"exported"}
    assert errors == {
        "shapes/encoded_attached_message":
            "an attached message is base64-encoded (RFC 2046 forbids it): decoded",
        "shapes/mailman_digest": "",
        "shapes/bare_cr_lines": "",
    }  # fmt: skip
    extracted = read_pst_with_pst_extractor(s3.path("rw.pst"))["INBOX"]
    assert sorted(m.subject for m in extracted) == sorted(_expected(n).subject for n in names)
