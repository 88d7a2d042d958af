"""Benchmark: IMAP → ZIP → S3 with our engine against mbsync IMAP → Maildir, same mailbox.

    python bench/zip_bench.py              # ~3,000 messages, ~575 MB, some 3-8 MB attachments
    python bench/zip_bench.py --scale 10   # 10x the mailbox: peak RSS must stay flat
    python bench/zip_bench.py --case 30mb  # one message with a 30 MB attachment (+ a few small)

Builds the seeded mailbox (tests/mailgen.py) straight into a fresh Dovecot's Maildirs, starts
``rclone serve s3``, warms Dovecot's indexes, then runs each contender as a child process
(wall time from our clock, peak RSS from wait4): ``mbsync`` pulling every folder into a local
Maildir, and the engine (``--child``) backing the account up into a ZIP with a SQLite ledger.
Both talk plain IMAP to the same Dovecot on loopback. Prints both times, the ratio and peak
RSS, and checks the archive (entry count and sizes; ``--verify`` also compares every entry's
sha256 with the generated messages).

Targets: ratio ≤ 1.0 and peak RSS ≤ 150 MB, flat as the mailbox grows.

The run prints each contender's CPU seconds and those of Dovecot and the S3 server, which
share the same two cores. Figures: README, section Performance; the measurements behind the
engine's defaults: bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ACCESS_KEY,
    ROOT,
    SECRET_KEY,
    Measured,
    run_measured,
    warm_up_imap,
    write_mbsyncrc,
)

USER, PASSWORD = "bench", "bench-password"


def child(config_path: str) -> int:
    """The measured engine process: one export, prints its result as JSON."""
    import logging

    from connectors.pipeline.ledger import SqliteLedger
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import ExportSpec, Tuning
    from connectors.sources.imap.client import ImapSource
    from connectors.storage.s3.client import make_client
    from connectors.storage.s3.target import S3Target

    logging.basicConfig(level=logging.WARNING)
    cfg = json.loads(Path(config_path).read_text())
    if cfg.get("mmap_kb"):
        from connectors import memtune

        memtune.MMAP_THRESHOLD = cfg["mmap_kb"] * 1024
    client = make_client(S3Target("bench", "us-east-1", cfg["s3_url"], ACCESS_KEY, SECRET_KEY),
                         allow_private=True)
    source = ImapSource("127.0.0.1", cfg["imap_port"], "none", USER, PASSWORD, allow_private=True,
                        batch_bytes=cfg["batch_mb"] * 1024 * 1024)
    tuning = Tuning(compress_threads=cfg["compress_threads"], upload_threads=cfg["upload_threads"],
                    queue_bytes=cfg["queue_mb"] * 1024 * 1024, part_bytes=cfg["part_mb"] * 1024 * 1024,
                    deflate_level=cfg["level"], content_md5=cfg["md5"], tmp_dir=cfg["tmp"],
                    max_ahead_bytes=cfg["max_ahead_mb"] * 1024 * 1024)
    ledger = SqliteLedger(Path(cfg["tmp"]) / "ledger.sqlite")
    with source:
        result = run_backup(source, client, ExportSpec(bucket="bench", prefix="bench", file_name=cfg["file"],
                                                       format=cfg.get("format", "zip")), ledger, tuning)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"state": result.state, "error": result.error, "parts": result.parts,
                      "cpu": round(usage.ru_utime + usage.ru_stime, 2), "sys": round(usage.ru_stime, 2),
                      "main_cpu": round(time.thread_time(), 2),  # the GIL-bound thread's share
                      "exported": result.totals.exported, "bytes": result.totals.bytes,
                      "archive": result.archives[0].size if result.archives else 0,
                      "timings": result.timings, "reconnects": source.reconnects}))
    return 0 if result.state == "completed" else 1


def cpu_line(m: Measured) -> str:
    """CPU seconds of the program and of the servers it kept busy (2 cores in all)."""
    servers = ", ".join(f"{name} {cpu:.2f}" for name, cpu in (m.servers_cpu or {}).items())
    return f"CPU {m.cpu:.2f}s ({servers})"


def build_mailbox(args, dovecot) -> tuple[int, int, dict]:
    from tests.mailgen import generate_mailbox, write_maildir

    if args.case == "30mb":
        import random

        from tests.mailgen import GeneratedMessage, Mailbox, _flat_messages, build_message

        def messages():
            yield from _flat_messages(7, 20, "INBOX", 3000)
            rng = random.Random(30)
            raw, when = build_message(rng, 999, subject=b"30 MB", attachment_bytes=30 * 1024 * 1024)
            yield GeneratedMessage("INBOX", raw, when)

        mailbox = Mailbox("30mb", 7, ["INBOX"], _factory=messages)
    else:
        mailbox = generate_mailbox("bench", seed=args.seed, scale=args.scale)
    total = write_maildir(dovecot, USER, mailbox)
    expected: dict = {}
    count = 0
    for msg in mailbox.messages():
        count += 1
        if args.verify:
            expected.setdefault(msg.folder, []).append(hashlib.sha256(msg.raw).hexdigest())
    return count, total, expected


def check_archive(path: Path, count: int, total: int, expected: dict) -> str:
    with zipfile.ZipFile(path) as archive:
        files = [i for i in archive.infolist() if not i.is_dir()]
        size = sum(i.file_size for i in files)
        problems = []
        if len(files) != count:
            problems.append(f"{len(files)} entries for {count} messages")
        if size != total:
            problems.append(f"{size} bytes in entries for {total} generated")
        if expected:
            got: dict = {}
            for info in files:
                digest = hashlib.sha256(archive.read(info)).hexdigest()
                got.setdefault(info.filename.rsplit("/", 1)[0], []).append(digest)
            for folder, digests in expected.items():
                if sorted(got.get(folder, [])) != sorted(digests):
                    problems.append(f"folder {folder}: content differs")
        return "; ".join(problems) or f"OK ({len(files)} entries, {size / 1e6:.1f} MB)"


def check_pst(path: Path, count: int) -> str:
    """Open the PST with libpff and count its messages (and run our structural checker)."""
    import pypff

    from connectors.archives.pst import check_pst as structural_problems

    pst = pypff.file()
    pst.open(str(path))

    def messages(folder) -> int:
        return folder.number_of_sub_messages + sum(
            messages(folder.get_sub_folder(i)) for i in range(folder.number_of_sub_folders))

    found = messages(pst.get_root_folder())
    pst.close()
    problems = structural_problems(path)
    if found != count or problems:
        return f"{found} messages for {count}; checker: {problems[:3]}"
    return f"OK ({found} messages in libpff, checker clean, {path.stat().st_size / 1e6:.1f} MB)"


def main() -> int:
    from connectors.storage.s3.growing import IN_ORDER_SAFE_AHEAD  # the rclone-safe default

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", choices=["bench", "30mb"], default="bench")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender (best counts)")
    parser.add_argument("--no-mbsync", action="store_true")
    parser.add_argument("--verify", action="store_true", help="compare every entry's sha256")
    parser.add_argument("--compress-threads", type=int, default=2)
    parser.add_argument("--upload-threads", type=int, default=3)
    parser.add_argument("--queue-mb", type=int, default=16)
    parser.add_argument("--part-mb", type=int, default=8)
    parser.add_argument("--batch-mb", type=int, default=8)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--md5", action="store_true", help="send Content-MD5 with every part")
    parser.add_argument("--max-ahead-mb", type=int, default=IN_ORDER_SAFE_AHEAD >> 20,
                        help="PST: bytes sent before part 1 (LEGACYFLO_S3_MAX_AHEAD_BYTES)")
    parser.add_argument("--mmap-kb", type=int, default=0, help="malloc mmap threshold (tuning)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument("--pst", action="store_true", help="also export the same mailbox as PST (target ≤ 1.5x ZIP)")
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    from legacyflo.localservices import start_rclone_s3
    from tests.servers.dovecot import DovecotServer

    work = Path(tempfile.mkdtemp(prefix="zipbench-"))
    (work / "s3" / "bench").mkdir(parents=True)
    dovecot = DovecotServer({USER: PASSWORD}).start()
    s3 = start_rclone_s3(work / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        t = time.perf_counter()
        count, total, expected = build_mailbox(args, dovecot)
        print(f"mailbox: {count} messages, {total / 1e6:.1f} MB "
              f"(generated in {time.perf_counter() - t:.1f}s); warming Dovecot up...", flush=True)
        warm_up_imap(dovecot.port, USER, PASSWORD)
        servers = {"dovecot": dovecot.proc.pid, "s3": s3.proc.pid}
        results: dict[str, list[Measured]] = {"mbsync": [], "engine": [], "pst": []}
        for run in range(args.repeat):
            if not args.no_mbsync:
                rc = write_mbsyncrc(work / f"mbsync{run}", port=dovecot.port, user=USER,
                                    password=PASSWORD)
                m = run_measured("mbsync", ["mbsync", "-q", "-c", str(rc), "bench"], servers=servers)
                results["mbsync"].append(m)
                print(f"mbsync run {run + 1}: {m.wall:.2f}s, peak RSS {m.peak_rss_mb:.0f} MB, {cpu_line(m)}"
                      + (f", exit {m.returncode}: {m.output[-500:]}" if m.returncode else ""), flush=True)
                shutil.rmtree(work / f"mbsync{run}", ignore_errors=True)
            tmp = work / f"engine{run}"
            tmp.mkdir()
            cfg = {"s3_url": s3.url, "imap_port": dovecot.port, "file": f"run{run}",
                   "compress_threads": args.compress_threads, "upload_threads": args.upload_threads,
                   "queue_mb": args.queue_mb, "part_mb": args.part_mb, "batch_mb": args.batch_mb,
                   "level": args.level, "md5": args.md5, "tmp": str(tmp),
                   "mmap_kb": args.mmap_kb, "max_ahead_mb": args.max_ahead_mb}
            (tmp / "config.json").write_text(json.dumps(cfg))
            child_argv = ([sys.executable, os.environ["ZIP_BENCH_CHILD"], str(tmp / "config.json")]
                          if os.environ.get("ZIP_BENCH_CHILD") else
                          [sys.executable, str(Path(__file__).resolve()), "--child", str(tmp / "config.json")])
            m = run_measured("engine", child_argv, cwd=str(ROOT),
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, servers=servers)
            results["engine"].append(m)
            last = m.output.strip().splitlines()[-1] if m.output.strip() else ""
            print(f"engine run {run + 1}: {m.wall:.2f}s, peak RSS {m.peak_rss_mb:.0f} MB, {cpu_line(m)}, {last}",
                  flush=True)
            if m.returncode:
                print(m.output[-3000:])
                return 1
            archive = work / "s3" / "bench" / "bench" / f"run{run}.zip"
            print("archive check:", check_archive(archive, count, total, expected), flush=True)
            archive.unlink()
            if args.pst:
                tmp = work / f"pst{run}"
                tmp.mkdir()
                (tmp / "config.json").write_text(json.dumps({**cfg, "file": f"pst{run}", "format": "pst",
                                                             "tmp": str(tmp)}))
                argv = child_argv[:-1] + [str(tmp / "config.json")]
                m = run_measured("pst", argv, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
                                 servers=servers)
                results["pst"].append(m)
                last = m.output.strip().splitlines()[-1] if m.output.strip() else ""
                print(f"PST run {run + 1}: {m.wall:.2f}s, peak RSS {m.peak_rss_mb:.0f} MB, {cpu_line(m)}, {last}",
                      flush=True)
                if m.returncode:
                    print(m.output[-3000:])
                    return 1
                pst_file = work / "s3" / "bench" / "bench" / f"pst{run}.pst"
                print("PST check:", check_pst(pst_file, count), flush=True)
                pst_file.unlink()
        best_engine = min(results["engine"], key=lambda m: m.wall)
        print()
        print(f"{'':10}{'wall s':>10}{'peak RSS MB':>14}{'CPU s':>8}{'Dovecot CPU':>13}{'S3 CPU':>8}")

        def row(name: str, m: Measured) -> None:
            servers = m.servers_cpu or {}
            print(f"{name:10}{m.wall:>10.2f}{m.peak_rss_mb:>14.0f}{m.cpu:>8.2f}"
                  f"{servers.get('dovecot', 0):>13.2f}{servers.get('s3', 0):>8.2f}")

        if results["mbsync"]:
            best_mbsync = min(results["mbsync"], key=lambda m: m.wall)
            row("mbsync", best_mbsync)
        row("engine", best_engine)
        if results["pst"]:
            best_pst = min(results["pst"], key=lambda m: m.wall)
            row("PST", best_pst)
        if results["mbsync"]:
            ratio = best_engine.wall / best_mbsync.wall
            print(f"ratio engine/mbsync: {ratio:.2f} (target ≤ 1.0)")
        peak = max(m.peak_rss_mb for m in results["engine"])
        print(f"engine peak RSS: {peak:.0f} MB (target ≤ 150)")
        if results["pst"]:
            print(f"ratio PST/ZIP: {best_pst.wall / best_engine.wall:.2f} (target ≤ 1.5); "
                  f"PST peak RSS {max(m.peak_rss_mb for m in results['pst']):.0f} MB (target ≤ 200)")
        return 0
    finally:
        s3.stop()
        dovecot.stop()
        if args.keep:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
