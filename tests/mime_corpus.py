"""Real-world MIME shapes, as mailers and list servers write them, for the converter tests.

Hand-written bytes (no generator tidies them up): each case is one way real mail departs from
the textbook, named after what it does. ``cpython_corpus`` adds CPython's own email test
messages (``test/test_email/data/msg_*.txt``) where the interpreter ships its test package.
"""

from __future__ import annotations

import base64
from pathlib import Path


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


_HEAD = "From: List <list@example.org>\nTo: reader@example.com\nDate: Tue, 02 Jan 2024 10:00:00 +0100\n"


def mailman_digest() -> bytes:
    """A Mailman digest: a text/plain masthead, a multipart/digest whose parts carry no
    Content-Type (so they are messages, RFC 2046 §5.1.5), one that says text/plain, a footer."""
    messages = "".join(
        f"--DIGEST\n\nFrom: Poster {i} <p{i}@example.net>\nSubject: [List] Topic {i}\n"
        f"Date: Tue, 02 Jan 2024 0{i}:00:00 +0000\nMessage-ID: <t{i}@example.net>\n\n"
        f"Message {i} of the digest.\n\n"
        for i in range(1, 6)
    )
    return _crlf(
        _HEAD + "Subject: List Digest, Vol 1, Issue 2\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="MASTER"\n\n'
        "--MASTER\nContent-Type: text/plain; charset=us-ascii\n\nToday's topics:\n  1. Topic 1\n\n"
        '--MASTER\nContent-Type: multipart/digest; boundary="DIGEST"\n\n'
        + messages
        + "--DIGEST\nContent-Type: text/plain\n\nNot a message: a note in the digest.\n\n"
        "--DIGEST--\n\n"
        "--MASTER\nContent-Type: text/plain; charset=us-ascii\nContent-Description: footer\n\n"
        "_______________________________________________\nList mailing list\n\n"
        "--MASTER--\n"
    )


def rfc2231_boundary() -> bytes:
    """The boundary as an RFC 2231 parameter, split in two continuations with a charset."""
    return _crlf(
        _HEAD + "Subject: RFC 2231 boundary\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed;\n boundary*0*=us-ascii'en'%3D%3Dpart;\n boundary*1=42\n\n"
        "preamble\n--==part42\nContent-Type: text/plain; charset*=us-ascii''utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\nGrüße, encoded the 2231 way.\n"
        "--==part42\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\n"
        "Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"%PDF-1.4 fake").decode()
        + "--==part42--\nepilogue\n"
    )


def nested_same_boundary() -> bytes:
    """Outlook Express for Mac: an inner multipart/alternative reusing the outer boundary."""
    return _crlf(
        _HEAD + "Subject: Same boundary inside\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="OE_PART"\n\n'
        "> This message is in MIME format.\n\n"
        '--OE_PART\nContent-Type: multipart/alternative; boundary="OE_PART"\n\n\n'
        "--OE_PART\nContent-Type: text/plain; charset=ISO-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n\nCaf=E9 au lait.\n\n"
        "--OE_PART\nContent-Type: text/html; charset=ISO-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n\n<p>Caf=E9 <b>au lait</b></p>\n\n"
        "--OE_PART--\n\n\n"
        '--OE_PART\nContent-Type: image/gif; name="dot.gif"\nContent-Disposition: attachment\n'
        "Content-Transfer-Encoding: base64\n\nR0lGODlhAQABAAAAACw=\n\n--OE_PART--\n"
    )


def part_without_blank_line() -> bytes:
    """Parts whose body starts right after the headers, and a message whose headers run
    straight into its text (no blank line either)."""
    return _crlf(
        _HEAD + "Subject: No blank lines\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="nb"\n\n'
        "--nb\nContent-Type: text/plain\nThe text starts at once, no separating line.\n"
        "--nb\nContent-Type: text/csv; name=\"data.csv\"\nContent-Disposition: attachment; "
        'filename="data.csv"\na,b,c\n1,2,3\n--nb--\n'
    )


def headers_into_text() -> bytes:
    return _crlf(_HEAD + "Subject: Headers run into the text\n"
                 "this line is text, not a header (no colon in the first word)\nand more text\n")  # fmt: skip


def empty_parts() -> bytes:
    """Empty parts, doubled boundary lines, a headers-only part and one whose base64 decodes
    to white space: nothing to show, nothing to attach; the real text and the real attachment
    survive."""
    return _crlf(
        _HEAD + "Subject: Empty MIME parts\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="EMPTY"\n\n'
        "--EMPTY\n\n--EMPTY\n--EMPTY\nContent-Type: text/plain\n\n\n"
        "--EMPTY\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nIA0K\n"
        "--EMPTY\nContent-Type: text/plain\n\nThe only real text.\n"
        "--EMPTY\nContent-Type: text/html\n\n"
        "--EMPTY\nContent-Type: application/octet-stream\nContent-Disposition: attachment; "
        'filename="empty.bin"\n\n'
        "--EMPTY\nContent-Type: application/octet-stream\nContent-Disposition: attachment; "
        'filename="real.bin"\nContent-Transfer-Encoding: base64\n\nAAECAwQ=\n'
        "--EMPTY--\n"
    )


def bare_cr_lines() -> bytes:
    """Classic Mac OS line endings: CR alone, headers and MIME structure included."""
    return (
        b"From: Mac User <mac@example.com>\rTo: reader@example.com\rSubject: Bare CR endings\r"
        b"Date: Mon, 01 Jan 2024 12:00:00 +0000\rMIME-Version: 1.0\r"
        b'Content-Type: multipart/mixed; boundary="CR"\r\r'
        b"--CR\rContent-Type: text/plain; charset=us-ascii\r\rLine one.\rLine two.\r"
        b'--CR\rContent-Type: text/plain; name="notes.txt"\rContent-Disposition: attachment; '
        b'filename="notes.txt"\r\rattached\rtext\r--CR--\r'
    )


def lf_only_with_attachment() -> bytes:
    data = base64.encodebytes(bytes(range(256))).decode()
    return (
        _HEAD + "Subject: LF only\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=lf\n\n"
        "--lf\nContent-Type: text/plain\n\nUnix line endings.\n"
        "--lf\nContent-Type: application/octet-stream; name=bytes.bin\n"
        "Content-Transfer-Encoding: base64\n\n" + data + "--lf--\n"
    ).encode()


def boundary_lookalikes() -> bytes:
    """Lines that start like the boundary but are not boundary lines, and a boundary line with
    trailing white space, which is one."""
    return _crlf(
        _HEAD + "Subject: Boundary look-alikes\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="alt"\n\n'
        "--alt   \nContent-Type: text/plain\n\n--altogether not a boundary\n"
        "text -- alt -- in the middle\n--alt--but not closing either\n"
        "--alt\t\nContent-Type: text/html\n\n<p>html</p>\n--alt--  \n"
    )


def forwarded_message() -> bytes:
    """An attached message that is itself multipart, with a boundary its parent uses too."""
    inner = (
        "From: Original <orig@example.com>\nTo: fwd@example.com\nSubject: The original\n"
        "Date: Sun, 31 Dec 2023 23:59:00 -0500\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="inner"\n\n'
        "--inner\nContent-Type: text/plain\n\nOriginal text.\n"
        '--inner\nContent-Type: text/plain; name="o.txt"\nContent-Disposition: attachment\n\n'
        "original attachment\n--inner--\n"
    )
    return _crlf(
        _HEAD + "Subject: Fwd: The original\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="outer"\n\n'
        "--outer\nContent-Type: text/plain\n\nSee the attached message.\n"
        "--outer\nContent-Type: message/rfc822\n\n" + inner + "\n--outer--\n"
    )


def tricky_addresses() -> bytes:
    return _crlf(
        "From: bob@example.com (Bob Comment)\n"
        'To: "Doe, Jane" <jane@example.com>, =?utf-8?q?M=C3=BCller=2C_Hans?= <hans@example.de>,\n'
        " team: one@example.com, two@example.com;, undisclosed-recipients:;\n"
        "Cc: Zoë Ærø <zoe@example.dk>\nSubject: =?utf-8?b?8J+OiQ==?= Tricky addresses\n"
        "Date: Wed, 03 Jan 2024 08:00:00 +0000\n\nBody.\n"
    )


def encoded_attached_message() -> bytes:
    """An attached message sent base64-encoded (RFC 2046 forbids it; mailers do it): the PST
    shows the decoded message, Python's parser does not decode it; the report says so."""
    inner = _crlf("From: a@example.com\nSubject: Encoded inside\n\nInner text.\n")
    return _crlf(
        _HEAD + "Subject: Base64 message/rfc822\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b64"\n\n'
        "--b64\nContent-Type: text/plain\n\nOuter text.\n"
        "--b64\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(inner).decode() + "--b64--\n"
    )


# name -> (raw bytes, whether the PST must differ from Python's parse, which the report says)
CASES: dict[str, tuple[bytes, bool]] = {
    "mailman_digest": (mailman_digest(), False),
    "rfc2231_boundary": (rfc2231_boundary(), False),
    "nested_same_boundary": (nested_same_boundary(), False),
    "part_without_blank_line": (part_without_blank_line(), False),
    "headers_into_text": (headers_into_text(), False),
    "empty_parts": (empty_parts(), False),
    "bare_cr_lines": (bare_cr_lines(), False),
    "lf_only_with_attachment": (lf_only_with_attachment(), False),
    "boundary_lookalikes": (boundary_lookalikes(), False),
    "forwarded_message": (forwarded_message(), False),
    "tricky_addresses": (tricky_addresses(), False),
    "encoded_attached_message": (encoded_attached_message(), True),
}


def cpython_corpus() -> dict[str, bytes]:
    """CPython's email test messages, when its test package is installed (else empty)."""
    try:
        import test.test_email as package
    except ImportError:
        return {}
    data = Path(package.__file__).resolve().parent / "data"
    return {path.stem: path.read_bytes() for path in sorted(data.glob("msg_*.txt"))}
