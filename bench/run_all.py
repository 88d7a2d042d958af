"""`make bench`: every benchmark, one after another, each printing its figures side by side with
its reference run in the same invocation.

    python bench/run_all.py            # ZIP vs mbsync (+ PST), 30 MB attachment, Gmail API, Graph, CSV upload, series
    python bench/run_all.py --large    # also the 10x mailbox (5.7 GB: several minutes, ~12 GB disk)

Figures vary with the machine's load; compare the lines of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_MARKERS = ("ratio", "peak RSS", "messages/s", "msg/s", "target", "lost", "concurrency", "MB/s")


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
    args = parser.parse_args()
    plan = [
        # Best of 3: one run moves ±10-30% with the host's load (README → Performance).
        ("IMAP → ZIP → S3 vs mbsync, and PST", ["bench/zip_bench.py", "--pst", "--repeat", "3"]),
        ("30 MB attachment", ["bench/zip_bench.py", "--case", "30mb", "--pst"]),
        ("Gmail API under the per-user quota", ["bench/gmail_bench.py"]),
        ("Graph under injected 429s", ["bench/graph_bench.py"]),
        ("PST writer alone, 1 GB", ["bench/pst_bench.py", "--gigabytes", "1", "--check"]),
        ("CSV upload of 10,000 rows", ["bench/csv_bench.py"]),
        ("Incremental series: unchanged run vs full run", ["bench/series_bench.py"]),
    ]
    if args.large:
        plan.append(("10x mailbox (RSS must stay flat)", ["bench/zip_bench.py", "--scale", "10"]))
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
