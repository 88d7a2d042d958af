"""Header extraction for the report: tolerant of everything real mailboxes contain."""

from __future__ import annotations

import pytest

from connectors.mimeinfo import decode_header_value, extract, header_block, header_end


def test_encoded_words_in_several_charsets_and_whitespace_between_them():
    raw = (b"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <jm@example.de>\r\n"
           b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n =?UTF-8?Q?_aus_M=C3=BCnchen?=\r\n"
           b"Date: Mon, 3 Jun 2024 10:00:00 +0200\r\nMessage-ID: <a@b>\r\n\r\nbody")
    info = extract(raw)
    assert info.from_ == "Jörg Müller <jm@example.de>"
    assert info.subject == "Grüße aus München"
    assert info.date == "2024-06-03T10:00:00+02:00" and info.message_id == "<a@b>"


def test_raw_8bit_headers_utf8_or_windows_1252():
    info = extract("Subject: Überweisung ✓\r\n".encode() + b"To: Fran\xe7ois <f@x>\r\n\r\n")
    assert info.subject == "Überweisung ✓" and info.to == "François <f@x>"


def test_broken_and_missing_headers_never_raise():
    assert extract(b"") == extract(b"\r\nbody only\r\n")
    assert extract(b"\r\nbody only\r\n").subject == ""
    info = extract(b"Subject: =?bogus-charset?B?SGVsbG8=?= =?UTF-8?B?!!!?=\r\nDate: someday\r\n\r\n")
    assert info.subject.startswith("Hello") and info.date == "someday"
    assert extract(b"Subject: no body and no blank line").subject == "no body and no blank line"
    assert extract(b"Subject: bare LF\n\nSubject: in the body\n").subject == "bare LF"


def test_control_characters_and_folding_are_cleaned():
    assert decode_header_value(b"a\x00b\r\n\tc  \x07d") == "ab c d"


def test_only_the_header_block_is_scanned():
    big = b"Subject: s\r\n\r\n" + b"Subject: not me\r\n" * 100_000
    assert header_block(big) == b"Subject: s"
    assert extract(big).subject == "s"


HEADERS = [b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", b"\t=?ISO-8859-1?Q?_aus_K=F6ln?= und mehr",
           b"Message-ID:", b" <folded.id@example.com>", b"From: =?UTF-8?B?SsO2cmc=?= <j@example.de>",
           b"To: a@example.com,", b"  b@example.com", b"Date: Mon, 3 Jun 2024 10:00:00 +0200"]
EXPECTED = dict(subject="Grüße aus Köln und mehr", message_id="<folded.id@example.com>",
                from_="Jörg <j@example.de>", to="a@example.com, b@example.com",
                date="2024-06-03T10:00:00+02:00")


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"], ids=["CRLF", "LF", "CR"])
def test_headers_are_read_whatever_the_line_endings(ending):
    raw = ending.join([*HEADERS, b"", b"Subject: in the body", b""])
    assert vars(extract(raw)) == EXPECTED


def test_headers_with_mixed_line_endings_and_the_blank_line_in_any_of_them():
    endings = [b"\r", b"\n", b"\r\n"]
    for blank in (b"\r\r", b"\n\n", b"\r\n\r\n", b"\r\n\n", b"\n\r\n", b"\r\n\r", b"\n\r"):
        lines = [h + endings[i % 3] for i, h in enumerate(HEADERS)]
        raw = b"".join(lines)[:-len(endings[(len(HEADERS) - 1) % 3])] + blank + b"Subject: in the body\r\n"
        assert vars(extract(raw)) == EXPECTED, blank


def test_a_crlf_line_end_is_never_taken_for_an_empty_line():
    assert header_block(b"Subject: a\r\nTo: b\r\n\r\nbody") == b"Subject: a\nTo: b"
    assert header_end(b"Subject: a\r\nTo: b") == (17, 17)  # no blank line: all header
    assert header_end(b"\rbody") == (0, 1) and header_end(b"\r\nbody") == (0, 2)
