"""A real Dovecot IMAP server on a free loopback port, for tests, the benchmark and by hand.

    with DovecotServer(users={"alice": "secret"}, ssl=True) as dc:
        IMAPClient("127.0.0.1", dc.ssl_port, ssl_context=dc.client_ssl_context())
        dc.maildir("alice", "INBOX")  # where mailgen's fast loader writes

By hand: ``python -m tests.servers.dovecot --user alice:secret --ssl`` prints the ports and waits.

Layouts:
- ``"fs"`` (default): one namespace, separator ``/``, no prefix, ``LAYOUT=fs`` Maildirs.
- ``"mithi"``: Mithi SkyConnect's shape, namespace prefix ``INBOX.`` and separator ``.``
  (Maildir++ on disk), so every folder is ``INBOX.Something``.

Dovecot refuses to serve mail as root, so when the tests run as root the mail files belong to
``nobody`` and the server's directory lives in its own world-traversable directory under /tmp
(pytest's tmp_path is 0700). Call ``fix_ownership()`` after writing Maildir files directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import imap_utf7

from legacyflo.localservices import free_ports, wait_for_port

DOVECOT = "/usr/sbin/dovecot"
# The IMAP service Dovecot starts for each login (package dovecot-imapd, not dovecot-core).
DOVECOT_IMAP = Path(os.environ.get("DOVECOT_LIBEXEC", "/usr/lib/dovecot")) / "imap"


def make_test_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """Write a throwaway CA and a server certificate for 127.0.0.1/localhost; return (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "LegacyFlo test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class DovecotServer:
    """One Dovecot master process with its own config, users, Maildirs and logs.

    ``port`` is the plain listener (STARTTLS offered when ``ssl`` is on); ``ssl_port`` the
    implicit-TLS one (None without ``ssl``). Users can be added while it runs.
    """

    def __init__(self, users: dict[str, str] | None = None, *, ssl: bool = False,
                 layout: str = "fs", root: Path | None = None, extra_config: str = "",
                 oauth2_introspection_url: str | None = None, rawlog: bool = False) -> None:
        """``oauth2_introspection_url``: also accept XOAUTH2/OAUTHBEARER, checking each token
        with an RFC 7662 introspection endpoint (answer ``{"active": true, "username": ...}``).
        ``rawlog``: Dovecot writes every IMAP session's traffic under ``rawlog_dir``
        (``TIMESTAMP-PID.in`` holds what the client sent): ``client_commands`` reads it."""
        if layout not in ("fs", "mithi"):
            raise ValueError("layout must be 'fs' or 'mithi'")
        self.users = dict(users or {"user": "password"})
        self.ssl = ssl
        self.layout = layout
        self.extra_config = extra_config
        self.rawlog_dir: Path | None = None
        self.oauth2_introspection_url = oauth2_introspection_url
        self._own_root = root is None
        # Short and world-traversable: unix socket paths are limited to ~108 bytes and the
        # unprivileged mail processes must reach the Maildirs.
        self.root = Path(root or tempfile.mkdtemp(prefix="lfdc-", dir="/tmp"))
        self.root.chmod(0o755)
        self._rawlog = rawlog
        self.host = "127.0.0.1"
        self.port = 0
        self.ssl_port: int | None = None
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._as_root = os.geteuid() == 0
        if self._as_root:
            mail_user = pwd.getpwnam("nobody")
        else:
            mail_user = pwd.getpwuid(os.geteuid())
        self.mail_uid, self.mail_gid, self.mail_user = mail_user.pw_uid, mail_user.pw_gid, mail_user.pw_name

    # ---- paths -----------------------------------------------------------------------------
    def home(self, user: str) -> Path:
        return self.root / "home" / user

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir directory of ``folder`` ('/'-separated logical path, e.g. 'Projekte/日本語').

        With the mithi layout a logical path 'Sent' is the IMAP folder 'INBOX.Sent'.
        """
        base = self.home(user) / "Maildir"
        if self.layout == "fs":
            if folder == "INBOX":
                return base / "INBOX"
            parts = [imap_utf7.encode(p).decode("ascii") for p in folder.split("/")]
            return base.joinpath(*parts)
        if folder == "INBOX":
            return base
        parts = [imap_utf7.encode(p).decode("ascii") for p in folder.split("/")]
        return base / ("." + ".".join(parts))

    def imap_name(self, folder: str) -> str:
        """The IMAP (decoded) name of a logical folder path."""
        if folder == "INBOX" or self.layout == "fs":
            return folder
        return "INBOX." + folder.replace("/", ".")

    # ---- lifecycle -------------------------------------------------------------------------
    def _write_passwd(self) -> None:
        lines = [f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()]
        passwd = self.root / "passwd"
        before = passwd.stat().st_mtime if passwd.exists() else 0
        passwd.write_text("".join(lines))
        # Dovecot re-reads a passwd-file when its mtime (whole seconds) or size changes: a
        # password of the same length changed within the same second would go unnoticed.
        stamp = max(time.time(), int(before) + 1)
        os.utime(passwd, (stamp, stamp))
        for name in self.users:
            home = self.home(name)
            home.mkdir(parents=True, exist_ok=True)
            self.maildir(name, "INBOX").mkdir(parents=True, exist_ok=True)
            for sub in ("cur", "new", "tmp"):
                (self.maildir(name, "INBOX") / sub).mkdir(exist_ok=True)
        self.fix_ownership()

    def add_user(self, name: str, password: str) -> None:
        self.users[name] = password
        self._write_passwd()
        # Dovecot's auth process looks at the passwd-file's stat at most once per second of its
        # event loop: a login in the same second as the previous lookup still sees the old file
        # (refused as a wrong password). Let that second pass so the new user can log in at once.
        time.sleep(1.05)

    def fix_ownership(self) -> None:
        """Give the mail tree to the mail user (needed after writing Maildir files as root)."""
        if not self._as_root:
            return
        home_root = self.root / "home"
        os.chown(home_root, self.mail_uid, self.mail_gid)
        for dirpath, dirnames, filenames in os.walk(home_root):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), self.mail_uid, self.mail_gid)

    def _config(self) -> str:
        root = self.root
        if self.layout == "fs":
            mail_location = "maildir:~/Maildir:LAYOUT=fs:INBOX=~/Maildir/INBOX"
            namespace = "namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =\n}\n"
        else:
            mail_location = "maildir:~/Maildir"
            namespace = "namespace inbox {\n  inbox = yes\n  separator = .\n  prefix = INBOX.\n}\n"
        if self._as_root:
            users = "default_login_user = dovenull\ndefault_internal_user = dovecot\n"
        else:
            users = (f"default_login_user = {self.mail_user}\n"
                     f"default_internal_user = {self.mail_user}\n")
        ssl_block = "ssl = no\n"
        imaps = ""
        if self.ssl:
            ssl_block = (f"ssl = yes\nssl_cert = <{root}/tls/cert.pem\nssl_key = <{root}/tls/key.pem\n"
                         "ssl_min_protocol = TLSv1.2\n")
            imaps = (f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.ssl_port}\n"
                     "    ssl = yes\n  }\n")
        mechanisms, oauth2 = "plain login", ""
        if self.oauth2_introspection_url:
            (root / "oauth2.conf").write_text(
                f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n")
            mechanisms = "plain login xoauth2 oauthbearer"
            oauth2 = (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                      f"  args = {root}/oauth2.conf\n}}\n")
        return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log/dovecot.log
info_log_path = {root}/log/dovecot.log
protocols = imap
listen = 127.0.0.1
{users}
{ssl_block}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_cache_size = 0
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
mail_location = {mail_location}
mail_fsync = never
mail_plugins =
mail_max_userip_connections = 100
{namespace}
{oauth2}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
{imaps}  chroot =
  process_min_avail = 1
  service_count = 0
}}
service anvil {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
{self._rawlog_config()}{self.extra_config}
"""

    def _rawlog_config(self) -> str:
        if not self._rawlog:
            return ""
        self.rawlog_dir = self.root / "rawlog"
        self.rawlog_dir.mkdir(exist_ok=True)
        os.chown(self.rawlog_dir, self.mail_uid, self.mail_gid)
        return f"protocol imap {{\n  rawlog_dir = {self.rawlog_dir}\n}}\n"

    def rawlog_sessions(self) -> set[Path]:
        """The rawlog files written so far (``rawlog=True``)."""
        return set(self.rawlog_dir.iterdir()) if self.rawlog_dir else set()

    def client_commands(self, since: set[Path] = frozenset()) -> bytes:
        """Everything clients sent in the sessions logged after ``since`` (``rawlog_sessions()``)."""
        return b"".join(p.read_bytes() for p in sorted(self.rawlog_sessions() - set(since)) if p.name.endswith(".in"))

    def start(self) -> DovecotServer:
        for sub in ("run", "state", "log", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "run").chmod(0o755)
        self.port, = free_ports(1)
        if self.ssl:
            self.port, self.ssl_port = free_ports(2)
            self.ca_file, _, _ = make_test_certificate(self.root / "tls")
        self._write_passwd()
        conf = self.root / "dovecot.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, proc=self.proc)
            if self.ssl_port:
                wait_for_port(self.ssl_port, proc=self.proc)
        except Exception as exc:
            why = self.log_text()  # Dovecot's own words, before stop() closes its stderr and removes its log
            self.stop()
            if not os.access(DOVECOT_IMAP, os.X_OK):
                why += (f"\n{DOVECOT_IMAP} is missing: install dovecot-imapd (as root, `make test` "
                        "does it through scripts/system-deps.sh).")
            raise RuntimeError(f"dovecot did not start: {exc}\n{why}") from exc
        return self

    def log_text(self) -> str:
        """Dovecot's log file, then what it wrote on stderr if it has exited (its config errors)."""
        log = self.root / "log" / "dovecot.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if self.proc and self.proc.stderr and not self.proc.stderr.closed and self.proc.poll() is not None:
            text += self.proc.stderr.read().decode(errors="replace")
        return text

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- helpers for clients -----------------------------------------------------------------
    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server's test CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


def main() -> None:  # pragma: no cover - by hand
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", action="append", default=[], help="name:password (repeatable)")
    parser.add_argument("--ssl", action="store_true")
    parser.add_argument("--layout", default="fs", choices=["fs", "mithi"])
    args = parser.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    users = dict(u.split(":", 1) for u in args.user) or {"user": "password"}
    with DovecotServer(users, ssl=args.ssl, layout=args.layout) as dc:
        print(f"dovecot on 127.0.0.1:{dc.port} (plain/STARTTLS)"
              + (f", {dc.ssl_port} (SSL, CA {dc.ca_file})" if dc.ssl_port else ""))
        print(f"root {dc.root}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
