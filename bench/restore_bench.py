"""Benchmark: restore (ZIP and PST in S3 → IMAP) through a real worker, against mbsync pushing
the same mailbox from a Maildir, in one invocation.

    python bench/restore_bench.py                    # the bench mailbox (3,000 messages), best of 3
    python bench/restore_bench.py --messages 300     # its first 300 messages (a quick look)
    python bench/restore_bench.py --repeat 1 --no-big

What it does, all on loopback in one Dovecot:
1. builds the bench mailbox (``tests/mailgen.py``, as ``zip_bench.py``) for the user ``src`` and
   backs it up to ZIP and to PST with the service itself (``IMAP-S3-ZIP`` / ``IMAP-S3-PST`` rows of
   one CSV, ``manage.py requests_submit``, one ``manage.py worker --burst``; Redis, PostgreSQL
   ``legacyflo_restore_bench`` created afresh, ``rclone serve s3``), as ``bench/many_mailboxes.py``;
2. mbsync pulls ``src`` once into a local Maildir (not timed): the reference's source;
3. per run: an ``S3-IMAP-ZIP`` request into an empty user, run by a fresh ``manage.py worker
   --burst`` (timed from the submission to the worker's exit; the engine's own time is the
   request's claim → finish); mbsync ``Sync Push`` / ``Create Far`` of the Maildir into another
   empty user; an ``S3-IMAP-PST`` request into a third;
4. a 30 MB message (plus 20 small ones) backed up to ZIP and restored the same way: its worker's
   peak RSS beside the bench mailbox's (memory stays flat);
5. checks every restore: the ZIP restore message for message against ``src`` (SHA-256 of the
   bytes, flags, INTERNALDATE, per folder), the PST restore by Message-ID and Subject per folder,
   mbsync by count.

Memory is the worker's whole process tree (worker, RQ worker, work horse), sampled every 50 ms:
RSS summed as ``many_mailboxes.TreeRss`` does (pages the forked work horse shares with its worker
count twice), PSS summed (shared pages split: what the tree holds) and the largest process's RSS.
``--profile`` then runs one more ZIP restore in this process (RQ's SimpleWorker) under cProfile. Targets: ZIP/mbsync ≤ 1.2, PST/ZIP ≤ 1.5, peak RSS
≤ 150 MB. Figures: README, section Performance.
"""

from __future__ import annotations

import argparse
import csv
import email.policy
import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import many_mailboxes as mm  # noqa: E402
from bench.common import ACCESS_KEY, SECRET_KEY, warm_up_imap  # noqa: E402

SRC, BIG = "src", "bigsrc"
PASSWORD = "restore-bench-pw"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/legacyflo_restore_bench"
CHUNK = 100  # messages per FETCH when reading a mailbox back


def bench_mailbox(messages: int, seed: int):
    from tests.mailgen import BENCH_FOLDERS, Mailbox, _bench_messages

    return Mailbox("bench", seed, list(BENCH_FOLDERS), noselect=["Projects", "Ablage"],
                   _factory=lambda: itertools.islice(_bench_messages(seed, max(1, -(-messages // 3000))), messages))


def big_mailbox():
    import random

    from tests.mailgen import GeneratedMessage, Mailbox, _flat_messages, build_message

    def messages():
        yield from _flat_messages(7, 20, "INBOX", 3000)
        raw, when = build_message(random.Random(30), 999, subject=b"30 MB", attachment_bytes=30 * 1024 * 1024)
        yield GeneratedMessage("INBOX", raw, when, ("\\Seen",))

    return Mailbox("30mb", 7, ["INBOX"], _factory=messages)


def csv_rows(header: list[str], rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def backup_csv(port: int, user: str, names: dict[str, str]) -> bytes:
    """One backup row per format: ``names`` maps request type → file name."""
    return csv_rows(["request_type", "title", "source_server", "source_port", "source_security", "source_user",
                     "source_password", "bucket", "s3_prefix", "file_name"],
                    [[code, f"Backup {name}", "127.0.0.1", port, "none", user, PASSWORD, mm.BUCKET, "bench", name]
                     for code, name in names.items()])


def restore_csv(code: str, archive_key: str, port: int, target: str) -> bytes:
    return csv_rows(["request_type", "title", "bucket", "archive_key", "target_server", "target_port",
                     "target_security", "target_user", "target_password"],
                    [[code, f"Restore into {target}", mm.BUCKET, archive_key, "127.0.0.1", port, "none", target,
                      PASSWORD]])


def request_of(target: str, code: str):
    from requests_app.models import MigrationRequest

    return MigrationRequest.objects.filter(tenant__slug=mm.TENANT, request_type=code, source_user=target).latest("pk")


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeMemory(mm.TreeRss):
    """``many_mailboxes.TreeRss`` (the tree's RSS summed, which counts the pages a forked work
    horse shares with its worker twice) plus the tree's PSS (shared pages split between their
    processes: what the tree really holds) and the largest single process's RSS."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(pids)
        self.pss = self.single = 0.0

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for pid in self.pids:
                tree = mm._tree(pid)
                rss = [mm._rss_mb(p) for p in tree]
                self.peak = max(self.peak, sum(rss))
                self.single = max(self.single, max(rss, default=0.0))
                self.pss = max(self.pss, sum(_pss_mb(p) for p in tree))


def through_worker(work: Path, env: dict, body: bytes, tag: str) -> tuple[float, TreeMemory]:
    """Submit ``body`` (``manage.py requests_submit``) and run one ``manage.py worker --burst`` to
    its end: (wall seconds from the submission to the worker's exit, its memory peaks)."""
    path = work / f"{tag}.csv"
    path.write_bytes(body)
    manage = [sys.executable, str(mm.ROOT / "manage.py")]
    started = time.perf_counter()
    submit = subprocess.run([*manage, "requests_submit", str(path), "--tenant", mm.TENANT], env=env, cwd=mm.ROOT,
                            capture_output=True, text=True)
    if submit.returncode:
        sys.exit(f"FAILED: requests_submit exited {submit.returncode}: {submit.stderr[-2000:]}")
    proc = subprocess.Popen([*manage, "worker", "--burst"], env=env, cwd=mm.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    sampler = TreeMemory([proc.pid])
    sampler.start()
    out = proc.communicate()[0]
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    if proc.returncode:
        sys.exit(f"FAILED: the worker exited {proc.returncode}: {out.decode(errors='replace')[-3000:]}")
    return wall, sampler


def memory(m: TreeMemory) -> str:
    return f"tree RSS {m.peak:.0f} MB, tree PSS {m.pss:.0f} MB, largest process RSS {m.single:.0f} MB"


def engine_seconds(req) -> float:
    return (req.finished_at - req.started_at).total_seconds()


# ---- mbsync ------------------------------------------------------------------------------------
def mbsyncrc(path: Path, *, port: int, user: str, maildir: Path, state: Path, push: bool, depth: int) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""IMAPAccount far
Host 127.0.0.1
Port {port}
User {user}
Pass {PASSWORD}
SSLType None
AuthMechs LOGIN
PipelineDepth {depth}

IMAPStore far
Account far

MaildirStore near
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel bench
Far :far:
Near :near:
Patterns *
{"Create Far" if push else "Create Near"}
{"Sync Push" if push else "Sync Pull"}
SyncState {state}/
""")
    return path


def run_mbsync(rc: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(["mbsync", "-q", "-c", str(rc), "bench"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"FAILED: mbsync exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall


# ---- reading a mailbox back (independent of the code under test) -------------------------------
def _folders(client) -> list[str]:
    return [name for flags, _sep, name in client.list_folders() if b"\\Noselect" not in flags]


def full_contents(port: int, user: str) -> Counter:
    """(folder, SHA-256 of the bytes, flags, INTERNALDATE) of every message, as a multiset."""
    from imapclient import IMAPClient

    out: Counter = Counter()
    with IMAPClient("127.0.0.1", port, ssl=False) as client:
        client.login(user, PASSWORD)
        client.normalise_times = False
        for name in _folders(client):
            client.select_folder(name, readonly=True)
            uids = client.search()
            for i in range(0, len(uids), CHUNK):
                for m in client.fetch(uids[i:i + CHUNK], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).values():
                    flags = frozenset(f.decode() for f in m[b"FLAGS"]) - {"\\Recent"}
                    out[(name, hashlib.sha256(m[b"BODY[]"]).hexdigest(), flags, m[b"INTERNALDATE"])] += 1
    return out


def header_contents(port: int, user: str) -> tuple[Counter, Counter]:
    """Per folder: the Message-IDs and the (decoded) Subjects, as multisets."""
    from email.parser import BytesHeaderParser

    from imapclient import IMAPClient

    ids: Counter = Counter()
    subjects: Counter = Counter()
    with IMAPClient("127.0.0.1", port, ssl=False) as client:
        client.login(user, PASSWORD)
        for name in _folders(client):
            client.select_folder(name, readonly=True)
            uids = client.search()
            for i in range(0, len(uids), CHUNK):
                for m in client.fetch(uids[i:i + CHUNK], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]"]).values():
                    raw = next(v for k, v in m.items() if k.startswith(b"BODY["))
                    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
                    ids[(name, str(headers.get("Message-ID", "")).strip())] += 1
                    subjects[(name, " ".join(str(headers.get("Subject", "")).split()))] += 1
    return ids, subjects


def count(port: int, user: str) -> int:
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port, ssl=False) as client:
        client.login(user, PASSWORD)
        return sum(client.folder_status(name, ["MESSAGES"])[b"MESSAGES"] for name in _folders(client))


def diff(expected: Counter, got: Counter) -> str:
    missing, extra = expected - got, got - expected
    if not missing and not extra:
        return ""
    return (f"{sum(missing.values())} missing (e.g. {list(missing)[:2]}), "
            f"{sum(extra.values())} unexpected (e.g. {list(extra)[:2]})")


def check_zip(port: int, target: str, source: Counter, req) -> str:
    if req.state != "completed":
        return f"FAILED: request {req.state}: {req.error}"
    problem = diff(source, full_contents(port, target))
    if problem:
        return f"FAILED: {problem}"
    return f"OK ({sum(source.values())} messages byte-identical, flags and INTERNALDATE as in the source)"


def check_pst(port: int, target: str, source: tuple[Counter, Counter], req) -> str:
    if req.state != "completed":
        return f"FAILED: request {req.state}: {req.error}"
    ids, subjects = header_contents(port, target)
    problems = [f"Message-ID: {p}" for p in [diff(source[0], ids)] if p]
    problems += [f"Subject: {p}" for p in [diff(source[1], subjects)] if p]
    if problems:
        return "FAILED: " + "; ".join(problems)
    return f"OK ({sum(ids.values())} messages, Message-IDs and Subjects per folder as in the source)"


def profile_restore(work: Path, port: int, top: int = 30) -> None:
    """One ZIP restore (into the user ``profiled``) in this process after the worker's preload,
    under cProfile: where the job's own time goes, call by call."""
    import cProfile
    import pstats

    import django_rq
    from django.core.management import call_command
    from rq import SimpleWorker

    from requests_app.workerboot import preload

    preload()
    path = work / "profiled.csv"
    path.write_bytes(restore_csv("S3-IMAP-ZIP", "bench/src-zip.zip", port, "profiled"))
    call_command("requests_submit", str(path), "--tenant", mm.TENANT, stdout=io.StringIO())
    queue = django_rq.get_queue("default")
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    profiler.disable()
    print(f"one ZIP restore in process (profiled): {time.perf_counter() - started:.2f}s, "
          f"state {request_of('profiled', 'S3-IMAP-ZIP').state}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


# ---- the run -----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages of the bench mailbox (its first N)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (best counts)")
    parser.add_argument("--pipeline-depth", type=int, default=32, help="mbsync's PipelineDepth")
    parser.add_argument("--no-pst", action="store_true")
    parser.add_argument("--no-big", action="store_true", help="skip the 30 MB message")
    parser.add_argument("--profile", action="store_true", help="then cProfile one ZIP restore in this process")
    parser.add_argument("--database", default=os.environ.get("RESTORE_BENCH_DATABASE_URL", DEFAULT_DB))
    args = parser.parse_args()
    args.workers = 1

    from legacyflo.localservices import start_rclone_s3, start_redis
    from tests.mailgen import write_maildir
    from tests.servers.dovecot import DovecotServer

    targets = [f"{kind}{r}" for r in range(args.repeat) for kind in ("zip", "mbs", "pst")] + ["bigzip", "profiled"]
    work = Path(tempfile.mkdtemp(prefix="restorebench-"))
    (work / "s3" / mm.BUCKET).mkdir(parents=True)
    dovecot = DovecotServer({name: PASSWORD for name in [SRC, BIG, *targets]}).start()
    s3 = start_rclone_s3(work / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    redis = start_redis(work / "redis")
    port = dovecot.port
    try:
        t = time.perf_counter()
        total = write_maildir(dovecot, SRC, bench_mailbox(args.messages, args.seed))
        if not args.no_big:
            write_maildir(dovecot, BIG, big_mailbox())
        seen = warm_up_imap(port, SRC, PASSWORD)
        print(f"mailbox: {seen} messages, {total / 1e6:.1f} MB (built in {time.perf_counter() - t:.0f}s)", flush=True)
        mm.recreate_database(args.database)
        env = mm.service_env(args, work, redis.url)
        os.environ.update(env)
        mm.setup_portal(s3.url)
        from buckets.models import Bucket

        Bucket.objects.filter(name=mm.BUCKET).update(purpose="both")  # backups write, restores read

        names = {"IMAP-S3-ZIP": "src-zip"} | ({} if args.no_pst else {"IMAP-S3-PST": "src-pst"})
        wall, _peak = through_worker(work, env, backup_csv(port, SRC, names), "backup")
        for code in names:
            req = request_of(SRC, code)
            if req.state != "completed":
                print(f"FAILED: backup {code} {req.state}: {req.error}")
                return 1
        print(f"backups ({', '.join(names)}) through a worker: {wall:.1f}s", flush=True)

        maildir = work / "maildir"
        maildir.mkdir()
        pull = run_mbsync(mbsyncrc(work / "pull.rc", port=port, user=SRC, maildir=maildir, state=work / "pull-state",
                                   push=False, depth=args.pipeline_depth))
        print(f"mbsync pulled the source into a Maildir (reference's source, not timed: {pull:.1f}s)", flush=True)

        t = time.perf_counter()
        source_full = full_contents(port, SRC)
        source_headers = None if args.no_pst else header_contents(port, SRC)
        print(f"source read back for the checks ({time.perf_counter() - t:.0f}s)", flush=True)

        results: dict[str, list[tuple[float, float, float]]] = {"zip": [], "mbsync": [], "pst": []}
        for r in range(args.repeat):
            wall, peak = through_worker(work, env, restore_csv("S3-IMAP-ZIP", "bench/src-zip.zip", port, f"zip{r}"),
                                        f"zip{r}")
            req = request_of(f"zip{r}", "S3-IMAP-ZIP")
            results["zip"].append((wall, engine_seconds(req), peak))
            print(f"ZIP restore run {r + 1}: {wall:.2f}s (job {engine_seconds(req):.2f}s), worker peak "
                  f"{memory(peak)}", flush=True)
            check = check_zip(port, f"zip{r}", source_full, req)
            print("  check:", check, flush=True)
            if check.startswith("FAILED"):
                return 1

            wall = run_mbsync(mbsyncrc(work / f"push{r}.rc", port=port, user=f"mbs{r}", maildir=maildir,
                                       state=work / f"push-state{r}", push=True, depth=args.pipeline_depth))
            results["mbsync"].append((wall, wall, None))
            pushed = count(port, f"mbs{r}")
            print(f"mbsync push run {r + 1}: {wall:.2f}s ({pushed} messages)", flush=True)
            if pushed != seen:
                print(f"FAILED: mbsync pushed {pushed} of {seen}")
                return 1

            if not args.no_pst:
                wall, peak = through_worker(work, env, restore_csv("S3-IMAP-PST", "bench/src-pst.pst", port,
                                                                   f"pst{r}"), f"pst{r}")
                req = request_of(f"pst{r}", "S3-IMAP-PST")
                results["pst"].append((wall, engine_seconds(req), peak))
                print(f"PST restore run {r + 1}: {wall:.2f}s (job {engine_seconds(req):.2f}s), worker peak "
                      f"{memory(peak)}", flush=True)
                check = check_pst(port, f"pst{r}", source_headers, req)
                print("  check:", check, flush=True)
                if check.startswith("FAILED"):
                    return 1

        big = None
        if not args.no_big:
            through_worker(work, env, backup_csv(port, BIG, {"IMAP-S3-ZIP": "big"}), "bigbackup")
            wall, peak = through_worker(work, env, restore_csv("S3-IMAP-ZIP", "bench/big.zip", port, "bigzip"),
                                        "bigzip")
            req = request_of("bigzip", "S3-IMAP-ZIP")
            check = check_zip(port, "bigzip", full_contents(port, BIG), req)
            print(f"30 MB message restore: {wall:.2f}s, worker peak {memory(peak)}; check: {check}", flush=True)
            if check.startswith("FAILED"):
                return 1
            big = (wall, peak)

        if args.profile:
            profile_restore(work, port)
        # Best wall and best job of the N runs (not necessarily the same run's).
        best = {k: (min(x[0] for x in v), min(x[1] for x in v)) for k, v in results.items() if v}
        print()
        print(f"restore of {seen} messages ({total / 1e6:.0f} MB), best of {args.repeat}; the restores run in a real "
              f"worker (manage.py worker --burst, request from Redis), wall = submission → worker exit:")
        print(f"  ZIP restore   {best['zip'][0]:7.2f} s (job {best['zip'][1]:.2f} s)")
        print(f"  mbsync push   {best['mbsync'][0]:7.2f} s (PipelineDepth {args.pipeline_depth})")
        print(f"ratio ZIP restore/mbsync push: {best['zip'][0] / best['mbsync'][0]:.2f} "
              f"(job only {best['zip'][1] / best['mbsync'][0]:.2f}; target ≤ 1.2)")
        if "pst" in best:
            print(f"  PST restore   {best['pst'][0]:7.2f} s (job {best['pst'][1]:.2f} s)")
            print(f"ratio PST/ZIP restore: {best['pst'][0] / best['zip'][0]:.2f} "
                  f"(job only {best['pst'][1] / best['zip'][1]:.2f}; target ≤ 1.5)")
        for kind in ("zip", "pst"):
            if results[kind]:
                worst = TreeMemory([])
                for *_, m in results[kind]:
                    worst.peak, worst.pss, worst.single = (max(worst.peak, m.peak), max(worst.pss, m.pss),
                                                           max(worst.single, m.single))
                print(f"{kind.upper()} restore worker peak RSS: {memory(worst)} (target ≤ 150)")
        if big:
            print(f"30 MB message ZIP restore: {big[0]:.2f} s, worker peak RSS: {memory(big[1])} (target ≤ 150, flat)")
        return 0
    finally:
        redis.stop()
        s3.stop()
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
