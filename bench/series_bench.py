"""Incremental series: the full first run of a 3,000-message mailbox next to an unchanged
incremental run of it, and a run with a few new messages, in the same invocation.

    python bench/series_bench.py            # the benchmark mailbox (3,000 messages, ~570 MB)
    python bench/series_bench.py --quick    # 3,000 small messages (a minute)

The unchanged run must cost one STATUS per folder and no body fetch: Dovecot's rawlog of that
run is checked for FETCH/SELECT, and the line "unchanged/full ratio" is the figure (target: well
under 1/3).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ACCESS_KEY, SECRET_KEY  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 small messages instead of the bench mailbox")
    parser.add_argument("--new", type=int, default=20, help="messages added before the third run")
    args = parser.parse_args()

    from imapclient import IMAPClient

    from connectors.pipeline.ledger import EXPORTED, MESSAGE, MemoryLedger
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.series import Archived, SeriesContext
    from connectors.pipeline.spec import ExportSpec, Tuning
    from connectors.sources.imap.client import ImapSource
    from connectors.storage.s3.client import make_client
    from connectors.storage.s3.target import S3Target
    from legacyflo.localservices import start_rclone_s3
    from tests.mailgen import generate_mailbox, write_maildir
    from tests.servers.dovecot import DovecotServer

    work = Path(tempfile.mkdtemp(prefix="seriesbench-"))
    (work / "s3" / "bench").mkdir(parents=True)
    dovecot = DovecotServer({USER: PASSWORD}, rawlog=True).start()
    s3 = start_rclone_s3(work / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        mailbox = (generate_mailbox("flat", count=3000, size=2000) if args.quick
                   else generate_mailbox("bench", seed=1))
        total = write_maildir(dovecot, USER, mailbox)
        print(f"mailbox: {sum(1 for _ in mailbox.messages())} messages, {total / 1e6:.1f} MB", flush=True)
        client = make_client(S3Target("bench", "us-east-1", s3.url, ACCESS_KEY, SECRET_KEY), allow_private=True)
        runs: list[tuple[MemoryLedger, object]] = []

        def archived(folder):
            for ledger, _ in runs:
                for r in ledger.records:
                    if r.kind == MESSAGE and r.status == EXPORTED and r.folder == folder:
                        yield Archived(r.source_id, r.message_id, r.size, date=r.date, from_=r.from_, subject=r.subject)

        def run(number: int):
            cursors = runs[-1][1].series["cursor"] if runs else {}
            context = SeriesContext("bench", run=number, cursors=cursors, archived=archived)
            ledger = MemoryLedger()
            before = dovecot.rawlog_sessions()
            source = ImapSource("127.0.0.1", dovecot.port, "none", USER, PASSWORD, allow_private=True)
            t = time.perf_counter()
            with source:
                result = run_backup(source, client, ExportSpec(
                    bucket="bench", prefix="series", file_name="bench" if number == 1 else f"bench.r{number:04d}",
                    series=context), ledger, Tuning(tmp_dir=str(work)))
            wall = time.perf_counter() - t
            commands = dovecot.client_commands(since=before)
            if result.state != "completed":
                raise SystemExit(f"run {number} ended {result.state}: {result.error}")
            runs.append((ledger, result))
            return wall, result, commands.upper()

        full, first, _ = run(1)
        print(f"full run: {full:.2f}s, {first.totals.exported} messages", flush=True)
        unchanged, second, commands = run(2)
        body_read = b"FETCH" in commands or b"SELECT" in commands
        print(f"unchanged incremental run: {unchanged:.2f}s, {second.totals.exported} new, "
              f"{commands.count(b' STATUS ')} STATUS, body fetched: {'YES' if body_read else 'no'}", flush=True)
        with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as imap:
            imap.login(USER, PASSWORD)
            for n in range(args.new):
                imap.append("INBOX", f"Subject: new {n}\r\nMessage-ID: <new-{n}@bench>\r\n\r\nnew\r\n".encode())
        new, third, _ = run(3)
        print(f"incremental run with {args.new} new: {new:.2f}s, {third.totals.exported} new", flush=True)
        print(f"unchanged/full ratio: {unchanged / full:.3f} (target < 0.333); "
              f"+{args.new} new/full ratio: {new / full:.3f}")
        return 1 if body_read or unchanged * 3 >= full else 0
    finally:
        s3.stop()
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
