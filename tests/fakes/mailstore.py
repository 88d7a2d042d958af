"""Raw RFC 5322 messages for the fakes to serve, generated deterministically.

The fakes hand out exactly these bytes (Gmail ``raw``, Graph ``$value``) so that tests can check
that an archive holds byte-identical copies. Messages vary on purpose: Unicode subjects (RFC 2047),
8-bit bodies, multipart with attachments, CRLF line endings, and one message of several MB.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from dataclasses import dataclass, field
from email.header import Header

SUBJECTS = (
    "Quarterly report", "Réunion de lundi", "Angebot für Projekte", "日本語の件名", "Re: invoice #{n}",
    "Ünïcödé ✓ subject", "Lunch?", "Fwd: contract draft", "Привет из Москвы", "Status update {n}",
)
PEOPLE = ("alice@example.com", "bob@example.org", "chloé@exemple.fr", "dieter@beispiel.de",
          "eve@example.net")


@dataclass
class StoredMessage:
    """One message of a fake mailbox; ``raw`` is what the provider serves, byte for byte."""

    key: str
    raw: bytes
    date: dt.datetime  # the provider's internal / received date, UTC
    folder: str = "Inbox"  # Graph folder path ('/'-separated) the message lives in
    labels: set[str] = field(default_factory=set)  # Gmail label ids
    seen: bool = False
    flagged: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def _encoded(text: str) -> str:
    return text if text.isascii() else Header(text, "utf-8").encode()


def build_raw_message(n: int, *, date: dt.datetime, to: str, rng: random.Random,
                      attachment_bytes: int = 0) -> bytes:
    """An RFC 5322 message, CRLF line endings; multipart with a base64 attachment when asked."""
    subject = rng.choice(SUBJECTS).format(n=n)
    sender = rng.choice(PEOPLE)
    sender_header = sender if sender.isascii() else f"{_encoded('Chloé')} <chloe@exemple.fr>"
    body_lines = [f"Message {n}: héllo wörld, こんにちは.", ""]
    body_lines += [f"line {i} " + "x" * rng.randint(10, 70) for i in range(rng.randint(3, 40))]
    body = "\r\n".join(body_lines).encode("utf-8")
    headers = [
        f"From: {sender_header}",
        f"To: {to}",
        f"Subject: {_encoded(subject)}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <fake-{n}-{rng.getrandbits(48):012x}@legacyflo.test>",
        "MIME-Version: 1.0",
    ]
    if not attachment_bytes:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body + b"\r\n"
    boundary = f"=_legacyflo_{n}_{rng.getrandbits(32):08x}"
    payload = rng.randbytes(attachment_bytes)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    parts = [
        ("\r\n".join(headers) + "\r\n\r\nThis is a multi-part message in MIME format.\r\n").encode(),
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n".encode() + body + b"\r\n",
        f"--{boundary}\r\nContent-Type: application/octet-stream; name=\"data-{n}.bin\"\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename=\"data-{n}.bin\"\r\n\r\n".encode() + encoded,
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def generate_messages(owner: str, count: int, *, seed: int = 1, big_message_bytes: int = 0,
                      start: dt.datetime = dt.datetime(2023, 1, 1, tzinfo=dt.UTC),
                      spacing: dt.timedelta = dt.timedelta(hours=7)) -> list[StoredMessage]:
    """``count`` messages to ``owner`` with increasing dates; message 3 (if any) gets a big attachment."""
    rng = random.Random(f"{seed}:{owner}")
    messages = []
    for n in range(count):
        date = start + spacing * n
        attachment = big_message_bytes if (n == 3 and big_message_bytes) else (
            rng.randint(2_000, 40_000) if n % 9 == 0 else 0)
        raw = build_raw_message(n, date=date, to=owner, rng=rng, attachment_bytes=attachment)
        messages.append(StoredMessage(key=f"{n:06d}", raw=raw, date=date, seen=rng.random() < 0.6,
                                      flagged=rng.random() < 0.1))
    return messages
