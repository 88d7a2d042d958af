"""Shared pieces of the benchmarks: timed child processes, mbsync, warm-up.

Each measured program runs as a child of a tiny launcher process, which reaps it with
``os.wait4`` and reports its wall time and peak RSS (``ru_maxrss``). The launcher matters:
Linux counts a process's memory from before its exec() in ``ru_maxrss``, so a program
spawned directly by the (large) benchmark process would inherit the benchmark's footprint.
The launcher is a fresh small interpreter, so the floor is ~10 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ACCESS_KEY = "benchaccesskey0001"
SECRET_KEY = "benchsecretkey00000001"


@dataclass
class Measured:
    name: str
    wall: float
    peak_rss_mb: float
    returncode: int
    output: str = ""
    cpu: float = 0.0  # user + system seconds of the measured program (and its children)
    servers_cpu: dict[str, float] | None = None  # CPU the servers used meanwhile (``busy``)


_LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": time.perf_counter() - start, "maxrss_kb": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime, "rc": os.waitstatus_to_exitcode(status)}, fh)
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its reaped children (Dovecot's imap processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_measured(name: str, argv: list[str], *, env: dict | None = None,
                 cwd: str | None = None, servers: dict[str, int] | None = None) -> Measured:
    """Run ``argv`` under the launcher; return its wall time, its own peak RSS and CPU, and
    the CPU the ``servers`` (name → pid) used meanwhile: on 2 cores the S3 server and Dovecot
    compete with the program for the same cores."""
    before = {name: cpu_seconds(pid) for name, pid in (servers or {}).items()}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        out = Path(tmp) / "output"
        with open(out, "wb") as fh:
            subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), *argv], stdout=fh,
                           stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
        text = out.read_bytes().decode(errors="replace")
        data = json.loads(result.read_text())
    used = {name: round(cpu_seconds(pid) - before[name], 2) for name, pid in (servers or {}).items()}
    return Measured(name, data["wall"], data["maxrss_kb"] / 1024, data["rc"], text,
                    round(data["cpu"], 2), used)


def write_mbsyncrc(directory: Path, *, port: int, user: str, password: str) -> Path:
    """An mbsyncrc that pulls every folder of the account into ``directory/mail`` (Maildir)."""
    mail = directory / "mail"
    mail.mkdir(parents=True, exist_ok=True)
    rc = directory / "mbsyncrc"
    rc.write_text(f"""IMAPAccount bench
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel bench
Far :bench-far:
Near :bench-near:
Patterns *
Create Near
Sync Pull
SyncState *
""")
    return rc


def warm_up_imap(port: int, user: str, password: str) -> int:
    """Select every folder and ask for all sizes once, so neither contender pays for Dovecot
    building its indexes. Returns the number of messages seen."""
    from imapclient import IMAPClient

    seen = 0
    with IMAPClient("127.0.0.1", port, ssl=False) as client:
        client._imap.debug = 0
        client.login(user, password)
        for flags, _sep, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            info = client.select_folder(name, readonly=True)
            if info[b"EXISTS"]:
                typ, data = client._imap.fetch("1:*", "(RFC822.SIZE)")
                seen += len(data)
    return seen


def dump_json(data) -> str:
    return json.dumps(data, indent=2, default=str)
