"""`make bench`: every benchmark, one after another, each printing its figures side by side with
its reference run in the same invocation.

    python bench/run_all.py            # ZIP vs mbsync (+ PST), 30 MB attachment, restores, Gmail API, Graph, CSV upload, series
    python bench/run_all.py --large    # also the 10x mailbox (5.7 GB: several minutes, ~12 GB disk)
    python bench/run_all.py --only mailboxes --mailboxes 20 --workers 2   # one benchmark, its N and W

Figures vary with the machine's load; compare the lines of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_MARKERS = ("ratio", "peak RSS", "messages/s", "msg/s", "target", "lost", "concurrency", "MB/s",
                   "per mailbox")


def run(title: str, argv: list[str]) -> tuple[int, list[str]]:
    print(f"\n=== {title}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip())
    proc.wait()
    print(f"=== {title}: exit {proc.returncode} after {time.perf_counter() - started:.0f}s", flush=True)
    return proc.returncode, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also run the 10x mailbox")
    parser.add_argument("--mailboxes", type=int, default=40, help="many-mailboxes benchmark: N mailboxes")
    parser.add_argument("--messages", type=int, default=150, help="many-mailboxes benchmark: messages each")
    parser.add_argument("--workers", type=int, default=2, help="many-mailboxes benchmark: W workers (and mbsyncs)")
    parser.add_argument("--only", help="run only the benchmarks whose title contains this")
    args = parser.parse_args()
    plan = [
        # Best of 3: one run moves ±10-30% with the host's load (README → Performance).
        ("IMAP → ZIP → S3 vs mbsync, and PST", ["bench/zip_bench.py", "--pst", "--repeat", "3"]),
        ("30 MB attachment", ["bench/zip_bench.py", "--case", "30mb", "--pst"]),
        ("Restore ZIP and PST → IMAP through a worker vs mbsync push", ["bench/restore_bench.py", "--repeat", "3"]),
        ("Gmail API under the per-user quota", ["bench/gmail_bench.py"]),
        ("Graph under injected 429s", ["bench/graph_bench.py"]),
        ("PST writer alone, 1 GB", ["bench/pst_bench.py", "--gigabytes", "1", "--check"]),
        ("CSV upload of 10,000 rows", ["bench/csv_bench.py"]),
        ("Incremental series: unchanged run vs full run", ["bench/series_bench.py"]),
        # The single large mailbox through the whole path: a real worker, Redis, PostgreSQL.
        ("One large mailbox through a worker", ["bench/many_mailboxes.py", "-n", "1", "-m", "3000", "-w", "1",
                                                "--repeat", "3"]),
        # The whole service: one CSV of small mailboxes, W real workers, PostgreSQL, vs W mbsyncs.
        (f"{args.mailboxes} mailboxes × {args.messages} messages in one CSV, {args.workers} workers",
         ["bench/many_mailboxes.py", "-n", str(args.mailboxes), "-m", str(args.messages), "-w", str(args.workers),
          "--repeat", "3"]),
    ]
    if args.large:
        plan.append(("10x mailbox (RSS must stay flat)", ["bench/zip_bench.py", "--scale", "10"]))
    if args.only:
        plan = [(title, argv) for title, argv in plan if args.only.lower() in title.lower()]
    summary, failed = [], []
    for title, argv in plan:
        code, lines = run(title, argv)
        if code:
            failed.append(title)
        summary.append((title, [line for line in lines if any(m in line for m in SUMMARY_MARKERS)][-8:]))
    print("\n=== Summary")
    for title, lines in summary:
        print(f"{title}:")
        for line in lines:
            print(f"    {line}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
