"""Benchmark: write a multi-GB PST from generated messages; print throughput and peak RSS.

    .venv/bin/python bench/pst_bench.py --gigabytes 3 --out /var/tmp/bench.pst [--check]

Messages are generated on the fly from a small pool of bodies and attachments (so generation
costs little memory): mostly small text/HTML mails, some with attachments of 100 KB - 2 MB,
spread over a few dozen folders. Throughput counts the raw RFC 5322 bytes fed to the writer.
Peak RSS is the process's VmHWM (resident high-water mark). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.archives.pst import PstWriter, check_pst  # noqa: E402
from connectors.model import Message  # noqa: E402


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def _attachment_pool(rng: random.Random) -> list[tuple[str, bytes]]:
    pool = []
    for size in (100_000, 250_000, 600_000, 1_200_000, 2_000_000):
        data = rng.randbytes(size)
        encoded = base64.encodebytes(data)  # 76-character lines, as mailers write them
        pool.append((f"file-{size}.bin", encoded))
    return pool


def generate(total_bytes: int, seed: int = 1) -> Iterator[Message]:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex()[:rng.randint(2, 9)] for _ in range(2000)]
    bodies = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 3000))) for _ in range(64)]
    attachments = _attachment_pool(rng)
    folders = [f"INBOX/Folder {i:02d}" for i in range(30)] + ["Sent", "Archive/2022", "Archive/2023"]
    produced = 0
    number = 0
    start = datetime(2022, 1, 1, tzinfo=UTC)
    while produced < total_bytes:
        number += 1
        body = bodies[number % len(bodies)]
        head = (
            f"From: Sender {number % 97} <sender{number % 97}@example.com>\r\n"
            f"To: Receiver <rcpt{number % 13}@example.org>\r\n"
            f"Subject: Benchmark message {number}\r\n"
            f"Date: Mon, 03 Jan 2022 10:00:00 +0000\r\n"
            f"Message-ID: <bench{number}@example.com>\r\n"
            "MIME-Version: 1.0\r\n"
        )
        if number % 4 == 0:
            name, encoded = attachments[number % len(attachments)]
            raw = (
                head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
                "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n"
                f'--b1\r\nContent-Type: application/octet-stream\r\n'
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n"
            ).encode() + encoded + b"--b1--\r\n"
        else:
            raw = (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
        produced += len(raw)
        yield Message(
            folder=folders[number % len(folders)], source_id=str(number), raw=raw,
            internal_date=start + timedelta(minutes=number), flags=("\\Seen",) if number % 3 else (),
        )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=3.0, help="raw message bytes to write")
    parser.add_argument("--out", type=Path, default=Path("/var/tmp/pst-bench.pst"))
    parser.add_argument("--crypt", default="permute", choices=("permute", "none"))
    parser.add_argument("--check", action="store_true", help="run check_pst on the result")
    args = parser.parse_args()

    total = int(args.gigabytes * 1024**3)
    fed = 0
    messages = 0
    started = time.perf_counter()
    last_report = started
    with PstWriter(args.out, crypt=args.crypt) as writer:
        for message in generate(total):
            writer.add_message(message)
            fed += len(message.raw)
            messages += 1
            now = time.perf_counter()
            if now - last_report > 10:
                last_report = now
                print(f"  {fed / 2**20:,.0f} MiB in, {writer.bytes_written / 2**20:,.0f} MiB "
                      f"written, {fed / 2**20 / (now - started):.1f} MiB/s", flush=True)
        closing = time.perf_counter()
    finished = time.perf_counter()
    size = args.out.stat().st_size
    elapsed = finished - started
    print(f"messages:        {messages:,}")
    print(f"raw input:       {fed / 2**20:,.1f} MiB")
    print(f"PST size:        {size / 2**20:,.1f} MiB")
    print(f"elapsed:         {elapsed:,.1f} s (close: {finished - closing:.1f} s)")
    print(f"throughput:      {fed / 2**20 / elapsed:.1f} MiB/s raw in, "
          f"{size / 2**20 / elapsed:.1f} MiB/s PST out")
    print(f"peak RSS:        {peak_rss_mib():.0f} MiB (VmHWM)")
    if args.check:
        checked = time.perf_counter()
        problems = check_pst(args.out, messages=False)
        print(f"check_pst:       {len(problems)} problems in {time.perf_counter() - checked:.0f} s")
        for problem in problems[:20]:
            print("  ", problem)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
