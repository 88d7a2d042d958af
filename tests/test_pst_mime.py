"""The writer's MIME parser: what it extracts from well-formed, odd and broken messages."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import random
from datetime import UTC, datetime

import pytest

from connectors.archives.pst import mime
from connectors.archives.pst.mime import EncodedContent, decode_header_value, parse_message


def stdlib_parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def _content(data: bytes, encoding: str) -> bytes:
    return EncodedContent(data, 0, len(data), encoding).decode()


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_base64_decodes_across_chunk_boundaries(monkeypatch, chunk):
    monkeypatch.setattr(mime, "CHUNK", chunk)
    data = random.Random(1).randbytes(5000)
    for encoded in (base64.encodebytes(data), base64.b64encode(data),
                    base64.encodebytes(data).replace(b"\n", b"\r\n")):  # fmt: skip
        assert _content(encoded, "base64") == data


def test_damaged_base64_decodes_as_pythons_email_package_decodes_it():
    def stdlib(encoded: bytes) -> bytes:
        part = stdlib_parse(b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded)
        return part.get_payload(decode=True)

    cases = {
        b"YW Jj!!ZGVm": b"abcdef",  # stray characters are skipped
        b"YWJjZA": b"abcd",  # missing padding is added
        b"YWJjZ": b"YWJjZ",  # one character too many: Python keeps the text
        b"YQ==\r\nYg==\r\n": b"a",  # the first padding ends the decoding
        b"YW=Jj": b"abc",  # padding that completes nothing is skipped
        b"": b"",
    }
    for encoded, decoded in cases.items():
        assert _content(encoded, "base64") == decoded == stdlib(encoded), encoded


@pytest.mark.parametrize("chunk", [5, 1 << 20])
def test_quoted_printable_decodes_across_chunk_boundaries(monkeypatch, chunk):
    monkeypatch.setattr(mime, "CHUNK", chunk)
    text = "Grüße, soft line breaks and =3D signs. " * 40
    encoded = binascii.b2a_qp(text.encode(), istext=True)
    assert _content(encoded, "quoted-printable") == text.encode()


def test_encoded_words_and_8bit_header_values():
    assert decode_header_value(b"=?utf-8?b?SGVsbG8g8J+Ygg==?=") == "Hello 😂"
    assert decode_header_value(b"=?ISO-8859-1?Q?caf=E9?= =?utf-8?q?_ok?=") == "café ok"
    assert decode_header_value("Größe".encode()) == "Größe"
    assert decode_header_value("Größe".encode("latin-1")) == "Größe"
    assert decode_header_value(b"=?x-unknown-cs?q?abc?=") == "abc"
    assert decode_header_value(b"=?utf-8?b?!!!?=") in ("", "=?utf-8?b?!!!?=")


def test_envelope_fields():
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\n"
        b"To: a@example.com, B <b@example.com>\r\nCc: c@example.com\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Date: Tue, 03 Jan 2023 10:00:00 +0100\r\nMessage-ID: <id@x>\r\n"
        b"Importance: high\r\n\r\nbody"
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße"
    assert (parsed.sender.name, parsed.sender.address) == ("Jürgen", "j@example.de")
    assert [(a.name, a.address) for a in parsed.to] == [
        ("a@example.com", "a@example.com"), ("B", "b@example.com")]  # fmt: skip
    assert [a.address for a in parsed.cc] == ["c@example.com"]
    assert parsed.sent == datetime(2023, 1, 3, 9, 0, tzinfo=UTC)
    assert parsed.message_id == "<id@x>"
    assert parsed.importance == 2
    assert parsed.body_text == "body"
    assert parsed.headers.startswith("From:") and parsed.headers.endswith("Importance: high")


def test_bad_dates_are_ignored():
    assert parse_message(b"Date: yesterday\r\n\r\nx").sent is None
    assert parse_message(b"Date: Tue, 03 Jan 2023 10:00:00\r\n\r\nx").sent.tzinfo is not None


def test_charsets_of_text_parts():
    def text_message(charset: str, body: bytes) -> bytes:
        return (f"Content-Type: text/plain; charset={charset}\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body  # fmt: skip

    assert parse_message(text_message("iso-8859-1", "café".encode("latin-1"))).body_text == "café"
    assert parse_message(text_message("shift_jis", "日本語".encode("shift_jis"))).body_text == "日本語"
    assert parse_message(text_message("gb2312", "中文".encode("gb2312"))).body_text == "中文"
    assert parse_message(text_message("bogus", "naïve".encode())).body_text == "naïve"


def test_rfc2231_and_rfc2047_file_names():
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''R%C3%A9sum;"
        b" filename*1*=%C3%A9.pdf\r\n\r\nPDF\r\n"
        b'--b\r\nContent-Type: image/png; name="=?utf-8?b?5pel5pys?=.png"\r\n\r\nPNG\r\n'
        b"--b\r\nContent-Type: application/x-custom\r\n\r\nraw\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    names = [a.filename for a in parsed.attachments]
    assert names[:2] == ["Résumé.pdf", "日本.png"]
    assert names[2].startswith("attachment3")
    assert [a.content.decode() for a in parsed.attachments] == [b"PDF", b"PNG", b"raw"]


def test_multipart_alternative_related_and_unclosed_last_part():
    raw = (
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
        b'--outer\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        b"--alt\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--alt--\r\n"
        b"--outer\r\nContent-Type: text/plain\r\nContent-Disposition: inline\r\n\r\nmore text\r\n"
        b"--outer\r\nContent-Type: application/octet-stream\r\n\r\nno closing boundary"
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "plain"
    assert parsed.body_html == "<b>html</b>"
    assert [a.content.decode() for a in parsed.attachments] == [b"more text",
                                                                 b"no closing boundary"]  # fmt: skip
    assert not parsed.defects


def test_embedded_messages_plain_and_base64():
    inner = b"Subject: inner\r\nFrom: i@x\r\n\r\ninner body\r\n"
    for encoding, payload in (("7bit", inner), ("base64", base64.encodebytes(inner))):
        raw = (
            b'Subject: outer\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nouter body\r\n"
            b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: "
            + encoding.encode() + b"\r\n\r\n" + payload + b"\r\n--b--\r\n"
        )
        parsed = parse_message(raw)
        assert parsed.body_text == "outer body"
        (attachment,) = parsed.attachments
        assert attachment.embedded.subject == "inner"
        assert attachment.embedded.body_text.strip() == "inner body"
        assert attachment.filename == "inner.eml"


def test_broken_structures_still_give_a_message():
    no_boundary = b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nthe text\r\n"
    parsed = parse_message(no_boundary)
    assert parsed.subject == "x" and parsed.body_text == "the text\r\n" and parsed.defects
    assert parse_message(b"").body_text in (None, "")
    assert parse_message(b"\r\n\r\njust body").body_text == "\r\njust body"
    garbage = parse_message(random.Random(3).randbytes(4000))
    assert isinstance(garbage.headers, str)
    nested = b"".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
        for i in range(40)
    ) + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    assert parse_message(nested).body_text is not None


def test_header_only_message_and_folded_headers():
    raw = b"Subject: folded\r\n  subject line\r\nFrom: a@b.c\r\n"
    parsed = parse_message(raw)
    # Unfolding removes the line break only (RFC 5322 §2.2.3), as Python's parser does.
    assert parsed.subject == "folded  subject line" == str(stdlib_parse(raw)["subject"])
    assert parsed.body_text is None  # an empty body is no body


def test_subject_prefix_split():
    from connectors.archives.pst.messages import split_subject

    assert split_subject("RE: Hello") == ("RE: ", "Hello")
    assert split_subject("Fwd: Original message") == ("Fwd: ", "Original message")
    assert split_subject("AW:Antwort") == ("AW:", "Antwort")
    assert split_subject("Meeting: 10:30") == ("", "Meeting: 10:30")
    assert split_subject("123: numbers") == ("", "123: numbers")
    assert split_subject("") == ("", "")


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"], ids=["CRLF", "LF", "CR"])
def test_header_fields_and_body_whatever_the_line_endings(ending):
    raw = ending.join([b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", b" aus Rom", b"Message-ID: <cr@example.com>",
                       b"From: Ann <ann@example.com>", b"Content-Type: text/plain; charset=utf-8", b"",
                       b"Subject: in the body", b""])
    parsed = parse_message(raw)
    assert (parsed.subject, parsed.message_id) == ("Grüße aus Rom", "<cr@example.com>")
    assert parsed.sender is not None and "ann@example.com" in str(parsed.sender)
    assert parsed.body_text.startswith("Subject: in the body")


def test_encoded_words_decode_as_pythons_header_parser_decodes_them():
    """Subjects of encoded words in many charsets, well-formed or not, mislabelled or not, as
    mailers write them: the writer's subject is the one Python's email package reads."""
    rng = random.Random(11)

    def encoded_word() -> str:
        charset = rng.choice(["utf-8", "UTF-8", "iso-8859-1", "windows-1252", "iso-2022-jp",
                              "gb2312", "koi8-r", "us-ascii", "x-unknown", "utf-8*en"])  # fmt: skip
        text = rng.choice(["Grüße", "日本語", "Привет", "a b", "_x_", "=3D", "?", "", "😀"])
        try:
            data = text.encode(charset.split("*")[0])
        except (LookupError, UnicodeEncodeError):
            data = text.encode("utf-8")
        if rng.random() < 0.5:
            payload = base64.b64encode(data).decode()
            payload = payload[:-1] if rng.random() < 0.1 else payload
            return f"=?{charset}?{rng.choice('bB')}?{payload}?="
        payload = binascii.b2a_qp(data, header=True).decode().replace("=\n", "")
        return f"=?{charset}?{rng.choice('qQ')}?{payload}?="

    for _ in range(600):
        words = [encoded_word() if rng.random() < 0.6 else rng.choice(["Re:", "plain", "(c)", "a=?b"])
                 for _ in range(rng.randint(1, 4))]  # fmt: skip
        subject = "".join(w + rng.choice([" ", "", "  ", "\t"]) for w in words).strip()
        raw = f"Subject: {subject}\r\n\r\nbody\r\n".encode()
        assert parse_message(raw).subject == str(stdlib_parse(raw)["subject"]).strip(), subject
