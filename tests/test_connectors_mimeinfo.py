"""Header extraction for the report: tolerant of everything real mailboxes contain."""

from __future__ import annotations

from connectors.mimeinfo import decode_header_value, extract, header_block


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
