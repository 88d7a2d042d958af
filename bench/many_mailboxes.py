"""Benchmark: many small mailboxes in one CSV through the whole service, against mbsync.

    python bench/many_mailboxes.py                    # 40 mailboxes × 150 messages, 2 workers
    python bench/many_mailboxes.py -n 10 -m 50 -w 1   # smaller
    python bench/many_mailboxes.py --repeat 3         # best of 3 (each contender)
    python bench/many_mailboxes.py -n 1 -m 3000 -w 1  # one large mailbox (the bench profile) through a worker

What an operator runs: N mailboxes (``tests/mailgen.py``, bench profile, the first M messages,
one seed per user) in one Dovecot; one CSV of N ``IMAP-S3-ZIP`` rows submitted through
``manage.py requests_submit`` (the service's ``requests_submit_many``); W ``manage.py worker
--burst`` processes (the production worker; ``--compare-fork`` runs each run twice, interleaved:
RQ's work horse per job, then the default in-process worker) that share nothing but Redis,
PostgreSQL (database ``legacyflo_perf``, dropped and created afresh; ``--database`` for another
URL) and the S3 store (``rclone serve s3``). Timed from the submission to the last worker's exit.
Against it, in the same invocation: mbsync pulling the same N mailboxes into Maildirs, W
processes at a time (one ``mbsync`` per mailbox, as a script would).

Printed: both wall times, the peak memory of the largest worker's whole process tree (worker, RQ
workers and work horse: PSS summed, and RSS; sampled every 50 ms), the ratio (target ≤ 1.0), the time per mailbox, and where a worker's
time goes per request (the timestamps RQ, the request row and the engine record, median over
the requests): from the job's start in its work horse to the claim, the engine's listing,
transfer and finishing (commit, report.csv, summary.json), and from the finish to the job's end;
"overhead" is all of it but the transfer. Every archive is then checked against its source
(each entry's SHA-256 against the generated messages).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import io
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ACCESS_KEY, ROOT, SECRET_KEY, warm_up_imap, write_mbsyncrc  # noqa: E402

TENANT, BUCKET = "many-bench", "many-bench"
PEAKS: list[tuple[float, float, float]] = []  # per run: TreeRss's peaks (MB)
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/legacyflo_perf"


def user(n: int) -> str:
    return f"user{n:04d}"


def password(n: int) -> str:
    return f"pw-{n:04d}-bench"


def mailbox(n: int, messages: int):
    """Mailbox ``n``: the bench profile's first ``messages`` messages, seeded by ``n``."""
    from tests.mailgen import BENCH_FOLDERS, Mailbox, _bench_messages

    return Mailbox("bench", 1000 + n, list(BENCH_FOLDERS), noselect=["Projects", "Ablage"],
                   _factory=lambda: itertools.islice(_bench_messages(1000 + n, 1), messages))


def recreate_database(url: str) -> None:
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def service_env(args, work: Path, redis_url: str) -> dict:
    return {**os.environ, "DATABASE_URL": args.database, "REDIS_URL": redis_url,
            "DJANGO_SETTINGS_MODULE": "legacyflo.settings",
            "SECRET_KEY": "many-bench-secret-key-not-for-production-0123456789",
            "LEGACYFLO_ENCRYPTION_KEYS": "c2lnbmluZy1rZXktb25lIWVuY3J5cHQta2V5LW9uZSE=",
            "LEGACYFLO_ALLOW_PRIVATE_NETWORKS": "1", "LEGACYFLO_VAR_DIR": str(work / "var"),
            "DEBUG": "0", "LEGACYFLO_HTTPS": "0", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}


def setup_portal(s3_url: str) -> None:
    """Migrated database, a tenant and its verified bucket on the local S3 store."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.models import Tenant
    from buckets.models import Bucket

    tenant = Tenant.objects.create(slug=TENANT, name="Many mailboxes")
    Bucket.objects.create(tenant=tenant, name=BUCKET, region="us-east-1", endpoint_url=s3_url,
                          purpose="destination", auth_mode="keys", access_key_id=ACCESS_KEY,
                          secret_access_key=SECRET_KEY, status="verified")


def make_csv(count: int, port: int, run: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["request_type", "title", "source_server", "source_port", "source_security", "source_user",
                     "source_password", "bucket", "s3_prefix", "file_name"])
    for n in range(count):
        writer.writerow(["IMAP-S3-ZIP", f"Mailbox {n}", "127.0.0.1", port, "none", user(n), password(n), BUCKET,
                         f"run{run}", user(n)])
    return out.getvalue().encode()


def run_mbsync(work: Path, port: int, count: int, workers: int) -> float:
    rcs = [write_mbsyncrc(work / f"mbsync-{n}", port=port, user=user(n), password=password(n)) for n in range(count)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(lambda rc: subprocess.run(["mbsync", "-q", "-c", str(rc), "bench"],
                                                        capture_output=True).returncode, rcs))
    wall = time.perf_counter() - started
    if any(codes):
        sys.exit(f"FAILED: mbsync exited {codes}")
    for n in range(count):
        shutil.rmtree(work / f"mbsync-{n}", ignore_errors=True)
    return wall


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the worker, its RQ workers, their work horses)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _memory_mb(pid: int, field: str) -> float:
    """``field`` ("Pss:" or "Rss:") of ``pid`` from smaps_rollup, in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TreeRss(threading.Thread):
    """Samples, every 50 ms, each worker's whole process tree (the worker and its work horse
    together) and keeps the peaks: the sum of PSS (pages shared between the worker and the horse
    it forked counted once: the tree's real footprint), the sum of RSS (shared pages counted in
    each process) and the largest single process's RSS."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.stop = pids, threading.Event()
        self.pss = self.rss = self.single = 0.0

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for pid in self.pids:
                tree = _tree(pid)
                rss = [_memory_mb(p, "Rss:") for p in tree]
                self.pss = max(self.pss, sum(_memory_mb(p, "Pss:") for p in tree))
                self.rss, self.single = max(self.rss, sum(rss)), max(self.single, max(rss, default=0.0))


def run_ours(work: Path, env: dict, body: bytes, workers: int, run: int, concurrency: int = 1,
             fork: bool | None = None) -> float:
    csv_path = work / f"run{run}.csv"
    csv_path.write_bytes(body)
    manage = [sys.executable, str(ROOT / "manage.py")]
    started = time.perf_counter()
    submit = subprocess.run([*manage, "requests_submit", str(csv_path), "--tenant", TENANT], env=env, cwd=ROOT,
                            capture_output=True, text=True)
    if submit.returncode:
        sys.exit(f"FAILED: requests_submit exited {submit.returncode}: {submit.stderr[-2000:]}")
    submitted = time.perf_counter()
    mode = [] if fork is None else ["--fork" if fork else "--no-fork"]
    procs = [subprocess.Popen([*manage, "worker", "--burst", "--concurrency", str(concurrency), *mode], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(workers)]
    sampler = TreeRss([p.pid for p in procs])
    sampler.start()
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    sampler.stop.set()
    PEAKS.append((sampler.pss, sampler.rss, sampler.single))
    print(f"  submission {submitted - started:.2f}s, workers {wall - (submitted - started):.2f}s", flush=True)
    for p, out in zip(procs, outputs, strict=True):
        if p.returncode:
            sys.exit(f"FAILED: a worker exited {p.returncode}: {out.decode(errors='replace')[-3000:]}")
    return wall


def _ts(value) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


def phases(run: int) -> list[dict]:
    """Per request of run ``run``: its worker and where its job's time went (seconds)."""
    import django_rq
    from rq.job import Job

    from requests_app.models import MigrationRequest

    connection = django_rq.get_connection("default")
    out = []
    for req in MigrationRequest.objects.filter(tenant__slug=TENANT, s3_prefix=f"run{run}"):
        job = Job.fetch(req.job_id, connection=connection)
        timings = req.result.get("timings", {})
        started, ended = _ts(job.started_at), _ts(job.ended_at)
        claimed, finished = _ts(req.started_at), _ts(req.finished_at)
        row = {"worker": job.worker_name or "", "job": ended - started, "to claim": claimed - started,
               "listing": timings.get("listing", 0.0), "transfer": timings.get("transfer", 0.0),
               "finishing": timings.get("finishing", 0.0), "enqueued": _ts(job.enqueued_at), "start": started,
               "end": ended}
        row["to finish"] = max(0.0, finished - claimed - timings.get("total", 0.0))
        row["after finish"] = ended - finished
        row["overhead"] = row["job"] - row["transfer"]
        out.append(row)
    return out


def print_phases(rows: list[dict]) -> None:
    by_worker: dict[str, list[dict]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append(row)
    name, mine = max(by_worker.items(), key=lambda kv: len(kv[1]))
    mine.sort(key=lambda r: r["start"])
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(mine)]
    keys = ["to claim", "listing", "transfer", "finishing", "to finish", "after finish", "job", "overhead"]
    print(f"one worker ({len(mine)} requests), ms per request, median [min-max]:")
    for key in keys:
        values = [1000 * r[key] for r in mine]
        print(f"  {key:13}{statistics.median(values):8.0f}  [{min(values):.0f}-{max(values):.0f}]")
    if gaps:
        print(f"  {'between jobs':13}{1000 * statistics.median(gaps):8.0f}  [{1000 * min(gaps):.0f}-"
              f"{1000 * max(gaps):.0f}]  (dequeue, fork of the work horse)")
    first, last = min(r["start"] for r in rows), max(r["end"] for r in rows)
    print(f"  first job started {first - min(r['enqueued'] for r in rows):.2f}s after the enqueue; "
          f"jobs ran for {last - first:.2f}s in all")
    overhead = statistics.median([r["overhead"] for r in mine]) + (statistics.median(gaps) if gaps else 0)
    print(f"per-request overhead (worker time besides the transfer): {1000 * overhead:.0f} ms (target ≤ 100)")


def profile_in_process(port: int, runs: int = 2, top: int = 35) -> None:
    """Run ``runs`` more requests in this process with RQ's SimpleWorker after the worker's
    preload, the last under cProfile: the job's own time, call by call (no fork, no imports)."""
    import cProfile
    import pstats

    import django_rq
    from django.core.management import call_command
    from rq import SimpleWorker

    from requests_app.workerboot import preload

    preload()
    queue = django_rq.get_queue("default")
    for n in range(runs):
        body = make_csv(1, port, 100 + n)
        path = Path(tempfile.mkstemp(suffix=".csv")[1])
        path.write_bytes(body)
        call_command("requests_submit", str(path), "--tenant", TENANT, stdout=io.StringIO())
        path.unlink()
        profiler = cProfile.Profile() if n == runs - 1 else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        SimpleWorker([queue], connection=queue.connection).work(burst=True)
        if profiler:
            profiler.disable()
            print(f"one request in process (profiled): {1000 * (time.perf_counter() - started):.0f} ms")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def verify(s3_root: Path, run: int, count: int, messages: int) -> str:
    from requests_app.models import MigrationRequest

    states = list(MigrationRequest.objects.filter(tenant__slug=TENANT, s3_prefix=f"run{run}")
                  .values_list("state", flat=True))
    if len(states) != count or set(states) != {"completed"}:
        return f"FAILED: {len(states)} requests, states {sorted(set(states))}"
    entries = 0
    for n in range(count):
        expected: dict[str, list[str]] = {}
        for msg in mailbox(n, messages).messages():
            expected.setdefault(msg.folder, []).append(hashlib.sha256(msg.raw).hexdigest())
        path = s3_root / BUCKET / f"run{run}" / f"{user(n)}.zip"
        got: dict[str, list[str]] = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.endswith(".eml"):
                    continue
                got.setdefault(info.filename.rsplit("/", 1)[0], []).append(
                    hashlib.sha256(archive.read(info)).hexdigest())
        if sorted(sorted(v) for v in got.values()) != sorted(sorted(v) for v in expected.values()):
            return f"FAILED: {path.name} differs from its source"
        entries += sum(len(v) for v in got.values())
        if not (s3_root / BUCKET / f"run{run}" / f"{user(n)}.report.csv").exists():
            return f"FAILED: {user(n)} has no report.csv"
    return f"OK ({count} archives, {entries} entries, every SHA-256 as generated)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--mailboxes", type=int, default=40)
    parser.add_argument("-m", "--messages", type=int, default=150, help="messages per mailbox")
    parser.add_argument("-w", "--workers", type=int, default=2, help="worker processes (and mbsync processes)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="RQ workers per worker process (manage.py worker --concurrency)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender (best counts)")
    parser.add_argument("--database", default=os.environ.get("PERF_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--no-mbsync", action="store_true")
    parser.add_argument("--profile", action="store_true", help="then cProfile one request's job in this process")
    parser.add_argument("--compare-fork", action="store_true",
                        help="each run twice, interleaved: RQ's forking worker (--fork), then the in-process one")
    args = parser.parse_args()

    from legacyflo.localservices import start_rclone_s3, start_redis
    from tests.mailgen import write_maildir
    from tests.servers.dovecot import DovecotServer

    work = Path(tempfile.mkdtemp(prefix="manybench-"))
    (work / "s3" / BUCKET).mkdir(parents=True)
    dovecot = DovecotServer({user(n): password(n) for n in range(args.mailboxes)}).start()
    s3 = start_rclone_s3(work / "s3", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    redis = start_redis(work / "redis")
    try:
        t = time.perf_counter()
        total = sum(write_maildir(dovecot, user(n), mailbox(n, args.messages)) for n in range(args.mailboxes))
        for n in range(args.mailboxes):
            warm_up_imap(dovecot.port, user(n), password(n))
        print(f"{args.mailboxes} mailboxes × {args.messages} messages, {total / 1e6:.0f} MB "
              f"({total / 1e6 / args.mailboxes:.1f} MB each; built in {time.perf_counter() - t:.0f}s), "
              f"{args.workers} workers, database {args.database.rsplit('/', 1)[-1]}", flush=True)
        recreate_database(args.database)
        env = service_env(args, work, redis.url)
        os.environ.update(env)
        setup_portal(s3.url)
        ours, theirs = [], []
        modes = [True, False] if args.compare_fork else [None]
        by_mode: dict = {mode: [] for mode in modes}
        rows_of: dict = {}
        run = 0
        for attempt in range(args.repeat):
            if not args.no_mbsync:
                theirs.append(run_mbsync(work, dovecot.port, args.mailboxes, args.workers))
                print(f"mbsync run {attempt + 1}: {theirs[-1]:.2f}s", flush=True)
            for mode in modes:
                label = {None: "ours", True: "ours (fork per job)", False: "ours (in process)"}[mode]
                wall = run_ours(work, env, make_csv(args.mailboxes, dovecot.port, run), args.workers, run,
                                args.concurrency, mode)
                ours.append(wall)
                by_mode[mode].append(wall)
                print(f"{label} run {attempt + 1}: {wall:.2f}s ({1000 * wall / args.mailboxes:.0f} ms per mailbox)",
                      flush=True)
                result = verify(work / "s3", run, args.mailboxes, args.messages)
                print("archive check:", result, flush=True)
                if result.startswith("FAILED"):
                    return 1
                if wall == min(by_mode[mode]):
                    rows_of[mode] = phases(run)
                run += 1
        for mode in modes:
            if mode is not None:
                print(f"{'fork per job' if mode else 'in process'}: best {min(by_mode[mode]):.2f} s; runs "
                      + ", ".join(f"{w:.2f}" for w in by_mode[mode]))
            print_phases(rows_of[mode])
        if args.profile:
            profile_in_process(dovecot.port)
        best = min(ours)
        print(f"many mailboxes ({args.mailboxes} × {args.messages} msgs, {args.workers} workers): ours {best:.2f} s, "
              f"{1000 * best / args.mailboxes:.0f} ms per mailbox" +
              (f"; mbsync {min(theirs):.2f} s: ratio {best / min(theirs):.2f} (target ≤ 1.0)" if theirs else ""))
        pss, rss, single = (max(p[i] for p in PEAKS) for i in range(3))
        print(f"worker peak RSS (whole process tree, PSS summed, sampled every 50 ms): {pss:.0f} MB"
              + (" (target ≤ 150)" if args.mailboxes == 1 else "")
              + f"; RSS summed {rss:.0f} MB, largest single process {single:.0f} MB")
        return 0
    finally:
        redis.stop()
        s3.stop()
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
