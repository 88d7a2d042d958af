"""The network policy: which addresses are public, and that IMAP and S3 connect to the address
that was checked — never to a second DNS answer (rebinding) — against a real Dovecot and a real
S3 server (rclone) listening on 127.0.0.1, with TLS still verified against the host name.

"Public" hosts are played by servers on 127.0.0.2 / 127.0.0.3, which ``treat_as_public`` makes
the policy accept (tests cannot reach a real public address); 127.0.0.1 stays internal.
"""

from __future__ import annotations

import socket

import pytest
from botocore.exceptions import SSLError

from connectors.model import ConnectionFailed
from connectors.netpolicy import (
    PrivateAddressRefused,
    is_public_address,
    open_connection,
    public_addresses,
)
from connectors.sources.imap.client import ImapSource
from connectors.storage.s3.client import make_client
from connectors.storage.s3.target import S3Target
from tests.fakes.dns import treat_as_public
from tests.fakes.httpserver import Response, ServerThread
from tests.fakes.tls import make_test_certificates
from tests.fixtures_engine import PASSWORD, USER
from tests.mailgen import generate_mailbox, write_maildir
from tests.servers.dovecot import DovecotServer
from tests.servers.faults import Fault, TcpFaultProxy

REFUSED = [
    # IPv4 special-purpose ranges
    "0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.0.9",
    "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.9", "192.0.0.170", "192.0.2.1",
    "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    # IPv6 outside global unicast, or special inside it
    "::", "::1", "fe80::1", "fe80::1%1", "fec0::1", "feff::1", "fc00::1", "fd12:3456::1", "ff02::1",
    "ff0e::1", "100::1", "5f00::1", "4000::1", "2001:db8::1", "3fff::1", "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:2::1", "2001:10::1", "2001:20::1",  # benchmarking, ORCHID
    "64:ff9b:1::1", "64:ff9b:1::808:808",  # NAT64 local-use prefix
    # IPv6 forms that embed an internal IPv4 address
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "::10.0.0.1",
    "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::192.168.0.1",
    "2002:7f00:1::", "2002:7f00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101::1", "2002:a00:1::",
    "2002:6440:1::",  # 6to4 of 100.64.0.1
    "::ffff:0:7f00:1",  # IPv4-translated (RFC 2765)
    "::8.8.8.8",  # IPv4-compatible: deprecated, refused whatever it embeds
]
ACCEPTED = [
    "8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.1", "172.32.0.1", "192.0.1.1",
    "198.17.255.255", "198.20.0.1", "223.255.255.254",
    "2001:4860:4860::8888", "2606:4700:4700::1111", "2a00:1450:4001::1", "2400:cb00::1",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_and_non_global_addresses_are_not_public(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ACCEPTED)
def test_global_unicast_addresses_are_public(address):
    assert is_public_address(address)


def test_a_name_is_refused_if_any_of_its_answers_is_internal(resolver):
    resolver.script("mixed.example.test", ["93.184.215.14", "10.0.0.5"])
    with pytest.raises(PrivateAddressRefused, match="internal address 10.0.0.5"):
        public_addresses("mixed.example.test", 443)
    resolver.script("v6.example.test", ["2606:4700:4700::1111", "2002:7f00:1::1"])
    with pytest.raises(PrivateAddressRefused, match="2002:7f00:1::1"):
        public_addresses("v6.example.test", 443)
    resolver.script("good.example.test", ["93.184.215.14", "2606:4700:4700::1111"])
    assert public_addresses("good.example.test", 443) == ["93.184.215.14", "2606:4700:4700::1111"]
    with pytest.raises(ConnectionFailed, match="cannot be resolved"):
        public_addresses("no-such-host.invalid", 443)


def test_a_connection_tries_the_checked_addresses_in_order_and_resolves_once(resolver, monkeypatch):
    treat_as_public(monkeypatch, "127.0.0.2", "127.0.0.3")
    listener = socket.create_server(("127.0.0.3", 0))
    port = listener.getsockname()[1]
    resolver.script("two.example.test", ["127.0.0.2", "127.0.0.3"], ["127.0.0.1"])
    with listener, open_connection("two.example.test", port, 5, allow_private=False) as sock:
        accepted, peer = listener.accept()
        accepted.close()
        assert sock.getpeername() == ("127.0.0.3", port)  # 127.0.0.2 refused; nothing listens there
    assert resolver.lookups["two.example.test"] == 1


# ---- IMAP --------------------------------------------------------------------------------------

@pytest.fixture
def internal_dovecot():
    """The operator's internal mail server, on 127.0.0.1 (what an attacker wants to reach)."""
    with DovecotServer({USER: PASSWORD}) as server:
        write_maildir(server, USER, generate_mailbox("flat", count=4, folder="Internal-only"))
        yield server


@pytest.fixture
def public_imap(internal_dovecot):
    """The attacker's "public" server: another Dovecot, reached on 127.0.0.2 at the same port."""
    with DovecotServer({USER: PASSWORD}) as server:
        write_maildir(server, USER, generate_mailbox("flat", count=3, folder="Public-only"))
        with TcpFaultProxy(server.port, host="127.0.0.2", port=internal_dovecot.port,
                           faults={0: Fault(cut_after=200, after_marker=b"BODY.PEEK[]")}) as proxy:
            yield proxy


def test_imap_connects_to_the_checked_address_and_a_reconnect_checks_again(
        internal_dovecot, public_imap, resolver, monkeypatch):
    treat_as_public(monkeypatch, "127.0.0.2")
    resolver.script("imap.rebind.test", ["127.0.0.2"], ["127.0.0.1"])
    source = ImapSource("imap.rebind.test", internal_dovecot.port, "none", USER, PASSWORD,
                        backoff=0.01, connect_timeout=5)
    with source:
        folders = {f.path for f in source.list_folders()}
        assert "Public-only" in folders and "Internal-only" not in folders
        assert len(public_imap.connections) == 1  # the connection went to the checked address
        public = next(f for f in source.list_folders() if f.path == "Public-only")
        ids = source.list_message_ids(public)
        # The proxy cuts the first connection mid-FETCH; the reconnect resolves again, gets
        # 127.0.0.1 and is refused: no byte of the internal server's mail is read.
        with pytest.raises(PrivateAddressRefused, match="internal address 127.0.0.1"):
            list(source.fetch_messages(public, ids))
    assert resolver.lookups["imap.rebind.test"] == 2
    assert len(public_imap.connections) == 1


def test_imap_tls_and_starttls_verify_the_certificate_against_the_host_name(resolver, monkeypatch):
    treat_as_public(monkeypatch, "127.0.0.1")  # here the (only) server plays the public one
    resolver.script("localhost", ["127.0.0.1"])  # the test certificate names localhost and 127.0.0.1
    resolver.script("imap.other.test", ["127.0.0.1"])
    with DovecotServer({USER: PASSWORD}, ssl=True) as dc:
        for port, security in ((dc.ssl_port, "ssl"), (dc.port, "starttls")):
            source = ImapSource("localhost", port, security, USER, PASSWORD, ca_file=str(dc.ca_file))
            with source:
                assert [f.path for f in source.list_folders()] == ["INBOX"]
            # Same address, a name the certificate does not carry: refused, so the check is on
            # the name and not on the IP address connected to (which the certificate does carry).
            other = ImapSource("imap.other.test", port, security, USER, PASSWORD, ca_file=str(dc.ca_file),
                               connect_attempts=1)
            with pytest.raises(ConnectionFailed, match="certificate .* could not be verified"):
                other.list_folders()


# ---- S3 ------------------------------------------------------------------------------------------

class RecordingS3:
    """A stand-in "public" S3 endpoint: lists one object and closes each connection after its
    answer, so every request needs a new connection (and a new policy check)."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def handle(self, request) -> Response:
        self.hosts.append(request.headers.get("Host", ""))
        body = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>acme-mail</Name>'
                b"<KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>"
                b"<Contents><Key>public-only.txt</Key><Size>1</Size></Contents></ListBucketResult>")
        return Response(200, body, {"Content-Type": "application/xml", "Connection": "close"})


def keys(listing) -> list[str]:
    return [o["Key"] for o in listing.get("Contents", [])]


def test_s3_connects_to_the_checked_address_and_each_new_connection_checks_again(
        rclone, s3_bucket, resolver, monkeypatch):
    rclone.client().put_object(Bucket=s3_bucket, Key="internal-only.txt", Body=b"internal")
    port = int(rclone.url.rsplit(":", 1)[1])
    app = RecordingS3()
    server = ServerThread(app, host="127.0.0.2", port=port).start()  # same port, "public" address
    try:
        treat_as_public(monkeypatch, "127.0.0.2")
        resolver.script("s3.rebind.test", ["127.0.0.2"], ["127.0.0.1"])
        client = make_client(S3Target(s3_bucket, "us-east-1", f"http://s3.rebind.test:{port}",
                                      rclone.access_key, rclone.secret_key))
        assert keys(client.list_objects_v2(Bucket=s3_bucket)) == ["public-only.txt"]
        assert app.hosts == [f"s3.rebind.test:{port}"]  # the name stays in the Host header
        with pytest.raises(PrivateAddressRefused, match="internal address 127.0.0.1"):
            client.list_objects_v2(Bucket=s3_bucket)
        assert resolver.lookups["s3.rebind.test"] == 2  # refused at once: no retries
    finally:
        server.stop()


def test_s3_over_https_verifies_the_certificate_against_the_endpoint_name(tmp_path, resolver, monkeypatch):
    certificates = make_test_certificates(tmp_path, hostnames=("s3.pinned.test",), addresses=())
    context = certificates.server_context()
    server_names: list[str] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    app = RecordingS3()
    server = ServerThread(app, host="127.0.0.2", ssl_context=context).start()
    try:
        treat_as_public(monkeypatch, "127.0.0.2")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(certificates.ca_path))
        resolver.script("s3.pinned.test", ["127.0.0.2"])
        resolver.script("s3.other.test", ["127.0.0.2"])
        client = make_client(S3Target("acme-mail", "us-east-1", f"https://s3.pinned.test:{server.port}",
                                      "AKIAEXAMPLEKEY000001", "example-secret-0123456789"), max_attempts=1)
        assert keys(client.list_objects_v2(Bucket="acme-mail")) == ["public-only.txt"]
        assert server_names == ["s3.pinned.test"] and app.hosts == [f"s3.pinned.test:{server.port}"]
        other = make_client(S3Target("acme-mail", "us-east-1", f"https://s3.other.test:{server.port}",
                                     "AKIAEXAMPLEKEY000001", "example-secret-0123456789"), max_attempts=1)
        with pytest.raises(SSLError, match="hostname 's3.other.test' doesn't match 's3.pinned.test'"):
            other.list_objects_v2(Bucket="acme-mail")
        assert len(app.hosts) == 1
    finally:
        server.stop()


def test_with_private_networks_allowed_internal_names_still_work(rclone, s3_bucket, resolver):
    resolver.script("s3.local.test", ["127.0.0.1"])
    port = int(rclone.url.rsplit(":", 1)[1])
    client = make_client(S3Target(s3_bucket, "us-east-1", f"http://s3.local.test:{port}",
                                  rclone.access_key, rclone.secret_key), allow_private=True)
    client.put_object(Bucket=s3_bucket, Key="local.txt", Body=b"x")
    assert "local.txt" in keys(client.list_objects_v2(Bucket=s3_bucket))
