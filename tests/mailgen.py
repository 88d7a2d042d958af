"""Reproducible mailboxes for the engine's tests and the benchmark.

Everything is derived from a seed, so two runs produce the same bytes. Messages are generated
lazily (the bench profile at ``scale=10`` is ~6 GB) and every line ends in CRLF, so Dovecot
serves each message byte for byte as generated whether it was APPENDed or written into a
Maildir.

Profiles:
- ``"test"``: the awkward cases — Unicode and nested folders, an empty folder, a \\Noselect
  parent, 8-bit and encoded-word headers, broken multipart, duplicate Message-IDs (and one
  byte-identical duplicate), no Date / no From, header-only, path characters in subjects,
  and with ``big=True`` one message with a 30 MB attachment.
- ``"bench"``: ~3,000 messages, ~580 MB over 8 folders, ~2% with 3–8 MB attachments.
- ``"flat"``: ``count`` small messages in one folder (Yahoo ranges, kill tests).

Loaders: ``write_maildir`` (fast: files straight into Dovecot's Maildirs) and ``append_imap``
(through IMAP APPEND, any server).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

CRLF = b"\r\n"
_WORDS = (
    "archive mailbox message folder report budget meeting project invoice quarterly review "
    "draft schedule customer server backup migration storage policy contract holiday team "
    "update release notes agenda minutes summary deadline proposal travel expense office "
    "network security audit ledger export import tenant bucket region partner vendor "
    "Grüße Überblick café naïve façade résumé Ångström żółw 日本語 テスト データ 中文 邮件"
).split()


@dataclass
class GeneratedMessage:
    folder: str  # logical path, '/' separated ("INBOX", "Projekte/日本語")
    raw: bytes
    internal_date: dt.datetime
    flags: tuple[str, ...] = ()
    note: str = ""  # which awkward case it is


@dataclass
class Mailbox:
    """A generated mailbox: its folders (parents before children) and a fresh message iterator."""

    profile: str
    seed: int
    folders: list[str]
    noselect: list[str] = field(default_factory=list)  # parents that exist only as hierarchy
    empty: list[str] = field(default_factory=list)
    _factory: object = None

    def messages(self) -> Iterator[GeneratedMessage]:
        return self._factory()  # type: ignore[misc]

    def by_folder(self) -> dict[str, list[GeneratedMessage]]:
        out: dict[str, list[GeneratedMessage]] = {f: [] for f in self.folders}
        for msg in self.messages():
            out[msg.folder].append(msg)
        return out


def _text(rng: random.Random, n_words: int) -> bytes:
    words = rng.choices(_WORDS, k=n_words)
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    return "\r\n".join(lines).encode("utf-8") + CRLF


_POOL_LINES = 300_000  # 76-character base64 lines: ~23 MB of attachment material
_pool: list[bytes] = []


def _b64_pool() -> bytes:
    """Base64 lines (CRLF) of fixed-seed random bytes; attachments are slices of it (fast to build)."""
    if not _pool:
        raw = random.Random(0x5EED).randbytes(_POOL_LINES * 57)
        _pool.append(base64.encodebytes(raw).replace(b"\n", CRLF))
    return _pool[0]


def _b64_lines(rng: random.Random, n_bytes: int) -> bytes:
    """Base64 of ``n_bytes`` random-looking bytes, line-wrapped like a mail client would."""
    pool = _b64_pool()
    lines_needed = -(-n_bytes // 57)
    out = []
    while lines_needed:
        take = min(lines_needed, _POOL_LINES // 2)
        start = rng.randrange(0, _POOL_LINES - take)
        out.append(pool[start * 78:(start + take) * 78])
        lines_needed -= take
    return b"".join(out)


def _date(rng: random.Random) -> dt.datetime:
    start = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    return start + dt.timedelta(seconds=rng.randrange(0, 6 * 365 * 86400))


def _fmt_date(when: dt.datetime) -> bytes:
    return when.strftime("%a, %d %b %Y %H:%M:%S +0000").encode()


def build_message(rng: random.Random, n: int, *, subject: bytes | None = None,
                  when: dt.datetime | None = None, attachment_bytes: int = 0,
                  body_words: int = 200, message_id: bytes | None = None,
                  headers: list[bytes] | None = None) -> tuple[bytes, dt.datetime]:
    """One well-formed message (CRLF), optionally with a random binary attachment."""
    when = when or _date(rng)
    subject = subject if subject is not None else (
        f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} #{n}".encode())
    message_id = message_id or f"<{n}.{rng.getrandbits(48):x}@mailgen.example>".encode()
    head = headers if headers is not None else [
        b"From: Sender " + str(n % 17).encode() + b" <sender" + str(n % 17).encode() + b"@example.com>",
        b"To: Recipient <rcpt@example.org>",
        b"Subject: " + subject,
        b"Date: " + _fmt_date(when),
        b"Message-ID: " + message_id,
    ]
    head = list(head) + [b"MIME-Version: 1.0"]
    body = _text(rng, body_words)
    if not attachment_bytes:
        head.append(b"Content-Type: text/plain; charset=utf-8")
        head.append(b"Content-Transfer-Encoding: 8bit")
        return CRLF.join(head) + CRLF + CRLF + body, when
    boundary = f"=_b{rng.getrandbits(64):016x}".encode()
    head.append(b'Content-Type: multipart/mixed; boundary="' + boundary + b'"')
    parts = [
        b"--" + boundary + CRLF + b"Content-Type: text/plain; charset=utf-8" + CRLF
        + b"Content-Transfer-Encoding: 8bit" + CRLF + CRLF + body,
        b"--" + boundary + CRLF + b"Content-Type: application/octet-stream" + CRLF
        + b'Content-Disposition: attachment; filename="data' + str(n).encode() + b'.bin"' + CRLF
        + b"Content-Transfer-Encoding: base64" + CRLF + CRLF + _b64_lines(rng, attachment_bytes),
        b"--" + boundary + b"--" + CRLF,
    ]
    return CRLF.join(head) + CRLF + CRLF + b"".join(parts), when


# ---- profiles ---------------------------------------------------------------------------------

TEST_FOLDERS = ["INBOX", "Sent", "Projekte/日本語", "Projekte/Ünïcødé & Co", "Archive",
                "Archive/2023", "Archive/2023/Q1 ½", "Leer"]


def _test_messages(seed: int, big: bool) -> Iterator[GeneratedMessage]:
    rng = random.Random(seed)
    n = 0

    def nxt() -> int:
        nonlocal n
        n += 1
        return n

    # ordinary messages spread over the non-empty folders
    for folder in ["INBOX", "Sent", "Projekte/日本語", "Projekte/Ünïcødé & Co", "Archive",
                   "Archive/2023", "Archive/2023/Q1 ½"]:
        for _ in range(4):
            raw, when = build_message(rng, nxt(), attachment_bytes=rng.choice([0, 0, 20_000]))
            yield GeneratedMessage(folder, raw, when, ("\\Seen",) if rng.random() < .5 else ())

    def special(note: str, raw: bytes, folder: str = "INBOX", when: dt.datetime | None = None):
        return GeneratedMessage(folder, raw, when or _date(rng), (), note)

    yield special("encoded-words", build_message(rng, nxt(), headers=[
        b"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <jm@example.de>",
        b"To: =?UTF-8?B?5bGx55Sw5aSq6YOO?= <taro@example.jp>",
        b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g8J+Nug==?= =?UTF-8?Q?_und_mehr?=",
        b"Date: Mon, 3 Jun 2024 10:00:00 +0200", b"Message-ID: <ew1@example.de>"])[0])
    yield special("8-bit headers", build_message(rng, nxt(), headers=[
        "From: Jörg Müller <jm@example.de>".encode(),
        b"To: Fran\xe7ois <f@example.fr>",  # latin-1 byte: not valid UTF-8
        "Subject: Überweisung für März — 日本語 ✓".encode(),
        b"Date: Tue, 4 Jun 2024 11:00:00 +0000", b"Message-ID: <8bit@example.de>"])[0])
    yield special("broken multipart", CRLF.join([
        b"From: broken@example.com", b"To: x@example.com", b"Subject: broken multipart",
        b"Date: Wed, 5 Jun 2024 12:00:00 +0000", b"Message-ID: <broken@example.com>",
        b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="never-closed"', b"",
        b"--never-closed", b"Content-Type: text/plain", b"", b"first part",
        b"--wrong-boundary", b"Content-Type: application/octet-stream",
        b"Content-Transfer-Encoding: base64", b"", b"!!!not base64!!!", b""]))
    yield special("no Date no From", CRLF.join([
        b"To: x@example.com", b"Subject: no date and no sender", b"", b"body", b""]))
    yield special("header only", CRLF.join([b"Subject: only headers", b"From: h@example.com", b""]))
    yield special("no headers at all", CRLF + b"just a body line" + CRLF)
    dup_a, when = build_message(rng, nxt(), message_id=b"<duplicate@example.com>", subject=b"dup A")
    dup_b, _ = build_message(rng, nxt(), message_id=b"<duplicate@example.com>", subject=b"dup B")
    yield special("duplicate Message-ID A", dup_a)
    yield special("duplicate Message-ID B", dup_b)
    yield special("duplicate Message-ID, other folder", dup_a, "Sent", when)
    yield special("byte-identical twin 1", dup_a, "Archive", when)
    yield special("byte-identical twin 2", dup_a, "Archive", when)
    yield special("path characters", build_message(
        rng, nxt(), subject=b'../../etc/passwd: a/b\\c *?"<>| \x01 tab\there')[0])
    yield special("long subject", build_message(rng, nxt(), subject=("Sehr lang " * 40).encode())[0])
    yield special("empty subject", build_message(rng, nxt(), subject=b"")[0])
    yield special("latin-1 body", CRLF.join([
        b"From: l@example.com", b"Subject: caf\xe9", b"Date: Thu, 6 Jun 2024 08:00:00 +0000",
        b"Content-Type: text/plain; charset=iso-8859-1", b"Content-Transfer-Encoding: 8bit", b"",
        b"na\xefve fa\xe7ade", b""]))
    yield special("unparseable date", CRLF.join([
        b"From: d@example.com", b"Subject: bad date", b"Date: the day after tomorrow",
        b"Message-ID: no-angle-brackets", b"", b"x", b""]))
    if big:
        raw, when = build_message(rng, nxt(), subject=b"30 MB attachment",
                                  attachment_bytes=30 * 1024 * 1024)
        yield GeneratedMessage("Projekte/日本語", raw, when, ("\\Seen",), "30 MB attachment")


BENCH_FOLDERS = ["INBOX", "Sent", "Archive", "Archive/2022", "Projects/Alpha", "Projects/Beta",
                 "Newsletters", "Ablage/Überweisungen"]


def _bench_messages(seed: int, scale: int) -> Iterator[GeneratedMessage]:
    rng = random.Random(seed)
    weights = [30, 15, 15, 10, 10, 8, 7, 5]
    for n in range(1, 3000 * scale + 1):
        folder = rng.choices(BENCH_FOLDERS, weights)[0]
        roll = rng.random()
        if n % 50 == 7:  # exactly 2%: 3-8 MB once base64-encoded
            att = rng.randint(3_000_000, 8_000_000) * 3 // 4
        elif roll < 0.43:
            att = rng.randint(60_000, 190_000)
        else:
            att = 0
        raw, when = build_message(rng, n, attachment_bytes=att, body_words=rng.randint(80, 1500))
        yield GeneratedMessage(folder, raw, when, ("\\Seen",) if rng.random() < .7 else ())


def _flat_messages(seed: int, count: int, folder: str, size: int) -> Iterator[GeneratedMessage]:
    rng = random.Random(seed)
    for n in range(1, count + 1):
        raw, when = build_message(rng, n, body_words=max(10, size // 7),
                                  attachment_bytes=size if size > 4000 else 0)
        yield GeneratedMessage(folder, raw, when)


def generate_mailbox(profile: str = "test", *, seed: int = 1, big: bool = False, scale: int = 1,
                     count: int = 100, folder: str = "INBOX", size: int = 2000) -> Mailbox:
    if profile == "test":
        return Mailbox("test", seed, list(TEST_FOLDERS), noselect=["Projekte"], empty=["Leer"],
                       _factory=lambda: _test_messages(seed, big))
    if profile == "bench":
        return Mailbox("bench", seed, list(BENCH_FOLDERS), noselect=["Projects", "Ablage"],
                       _factory=lambda: _bench_messages(seed, scale))
    if profile == "flat":
        return Mailbox("flat", seed, [folder], _factory=lambda: _flat_messages(seed, count, folder, size))
    raise ValueError(f"unknown profile {profile!r}")


# ---- loaders ----------------------------------------------------------------------------------

_file_counter = itertools.count()


def write_maildir(server, user: str, mailbox: Mailbox) -> int:
    """Write the mailbox straight into ``server``'s Maildirs (a tests.servers.dovecot.DovecotServer).

    Returns the number of bytes written. Maildir file names carry S=/W= sizes so Dovecot need
    not read a file to answer RFC822.SIZE. Files get the message's internal date as mtime.
    """
    for folder in mailbox.folders:
        for sub in ("cur", "new", "tmp"):
            (server.maildir(user, folder) / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("/", "_").replace(":", "_")
    total = 0
    for msg in mailbox.messages():
        i = next(_file_counter)
        flags = "".join(sorted({"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R"}[f]
                               for f in msg.flags if f in ("\\Seen", "\\Flagged", "\\Answered")))
        ts = int(msg.internal_date.timestamp())
        name = f"{ts}.M{i}P{os.getpid()}.{host},S={len(msg.raw)},W={len(msg.raw)}:2,{flags}"
        path = server.maildir(user, msg.folder) / "cur" / name
        with open(path, "wb") as fh:
            fh.write(msg.raw)
        os.utime(path, (ts, ts))
        total += len(msg.raw)
    server.fix_ownership()
    return total


def append_imap(client, mailbox: Mailbox, *, imap_name=lambda folder: folder) -> int:
    """APPEND every message through an IMAPClient logged in to the target mailbox."""
    existing = {name for _flags, _sep, name in client.list_folders()}
    for folder in mailbox.folders:
        name = imap_name(folder)
        if name not in existing and folder != "INBOX":
            client.create_folder(name)
    total = 0
    for msg in mailbox.messages():
        client.append(imap_name(msg.folder), msg.raw, msg.flags, msg.internal_date)
        total += len(msg.raw)
    return total


def main() -> None:  # pragma: no cover - by hand
    import argparse

    parser = argparse.ArgumentParser(description="print a profile's size")
    parser.add_argument("profile", nargs="?", default="bench")
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    mb = generate_mailbox(args.profile, scale=args.scale, big=True)
    count = size = 0
    for msg in mb.messages():
        count += 1
        size += len(msg.raw)
    print(f"{args.profile}: {count} messages, {size / 1e6:.1f} MB, {len(mb.folders)} folders")


if __name__ == "__main__":  # pragma: no cover
    main()
