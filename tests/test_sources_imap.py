"""The IMAP source against a real Dovecot (plain, SSL, STARTTLS, Mithi namespace), through fault
and command-recording proxies where the test needs them."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest
from imapclient import IMAPClient

from connectors.model import AuthenticationFailed, ConnectionFailed, Folder, Message, MessageFailure
from connectors.netpolicy import PrivateAddressRefused
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import COMPLETED, ExportSpec
from connectors.sources.imap.client import (
    ImapSource,
    _FolderWithFlags,
    folder_path,
    sequence_set,
)
from connectors.sources.imap.presets import PRESETS
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import PASSWORD, USER, fast_tuning, imap_source, truth_of, verify_export
from tests.mailgen import generate_mailbox, write_maildir
from tests.servers.dovecot import DovecotServer
from tests.servers.faults import Fault, TcpFaultProxy


def fetch_all(source: ImapSource) -> dict[tuple[str, str], Message | MessageFailure]:
    out = {}
    for folder in source.list_folders():
        ids = source.list_message_ids(folder)
        got = list(source.fetch_messages(folder, ids))
        assert [g.source_id for g in got] == ids  # one result per id, in order
        out.update({(folder.path, g.source_id): g for g in got})
    return out


# ---- pure helpers ---------------------------------------------------------------------------------

def test_sequence_set_compresses_runs_of_listed_uids_only():
    assert sequence_set([1, 2, 3, 7, 9, 10, 12]) == "1:3,7,9:10,12"
    assert sequence_set([5]) == "5"
    assert sequence_set([]) == ""


@pytest.mark.parametrize("name,sep,prefix,path", [
    ("INBOX", "/", "", "INBOX"),
    ("inbox", ".", "INBOX.", "INBOX"),
    ("INBOX.Sent", ".", "INBOX.", "Sent"),
    ("INBOX.Projekte.日本語", ".", "INBOX.", "Projekte/日本語"),
    ("INBOX.a/b", ".", "INBOX.", "a_b"),
    ("../../etc", "/", "", "_../_../etc"),
    ("Archiv//2024", "/", "", "Archiv/_/2024"),
    ("INBOX/Sub", "/", "", "INBOX/Sub"),
    ("Flat", None, "", "Flat"),
])
def test_folder_paths_are_unicode_slash_separated_and_cannot_escape(name, sep, prefix, path):
    assert folder_path(name, sep, prefix) == path


def test_presets_for_the_request_form():
    assert (PRESETS["gmail"].host, PRESETS["gmail"].port, PRESETS["gmail"].security) == ("imap.gmail.com", 993, "ssl")
    assert PRESETS["o365"].host == "outlook.office365.com"
    assert PRESETS["yahoo"].host == "imap.mail.yahoo.com" and PRESETS["yahoo"].window == 1000


def test_gmail_flavour_backs_up_all_mail_trash_and_spam_only():
    class Listed(ImapSource):
        def list_all_folders(self):
            def f(path, *flags):
                return _FolderWithFlags(path, path, None, True, frozenset(flags))
            return [f("INBOX"), f("Work"), f("[Gmail]/All Mail", "\\all"), f("[Gmail]/Sent Mail", "\\sent"),
                    f("[Gmail]/Spam", "\\junk"), f("[Gmail]/Trash", "\\trash")]

    paths = [f.path for f in Listed("imap.gmail.com", flavour="gmail").list_folders()]
    assert paths == ["[Gmail]/All Mail", "[Gmail]/Spam", "[Gmail]/Trash"]


# ---- Dovecot ----------------------------------------------------------------------------------------

def test_folders_messages_and_counts(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("test", big=True))
    truth = truth_of(dovecot)
    with imap_source(dovecot) as source:
        folders = {f.path: f for f in source.test_connection()}
        got = fetch_all(source)
    assert set(folders) == {"INBOX", "Sent", "Projekte", "Projekte/日本語", "Projekte/Ünïcødé & Co",
                            "Archive", "Archive/2023", "Archive/2023/Q1 ½", "Leer"}
    assert folders["Projekte"].selectable is False and folders["Projekte"].message_count is None
    assert folders["Leer"].message_count == 0 and folders["INBOX"].message_count == 17
    assert set(got) == set(truth.messages)
    for key, message in got.items():
        assert isinstance(message, Message)
        assert message.raw == truth.messages[key]  # exactly the bytes served, 30 MB one included
        assert re.fullmatch(r"\d+:\d+", message.source_id) and message.internal_date is not None


def test_date_window_uses_uid_search_since_before(dovecot):
    mailbox = generate_mailbox("test")
    write_maildir(dovecot, USER, mailbox)
    since, before = dt.date(2021, 1, 1), dt.date(2024, 6, 5)
    with imap_source(dovecot) as source:
        inbox = next(f for f in source.list_folders() if f.path == "INBOX")
        ids = source.list_message_ids(inbox, since=since, before=before)
    expected = [m for m in mailbox.messages() if m.folder == "INBOX" and since <= m.internal_date.date() < before]
    assert len(ids) == len(expected) > 0


def test_ssl_and_starttls_with_the_test_ca():
    with DovecotServer({USER: PASSWORD}, ssl=True) as dc:
        write_maildir(dc, USER, generate_mailbox("flat", count=5))
        for port, security in ((dc.ssl_port, "ssl"), (dc.port, "starttls")):
            with imap_source(dc, port=port, security=security, ca_file=str(dc.ca_file)) as source:
                assert len(fetch_all(source)) == 5
        with pytest.raises(ConnectionFailed, match="certificate .* could not be verified"):
            imap_source(dc, port=dc.ssl_port, security="ssl").list_folders()
        with pytest.raises(ConnectionFailed, match="certificate .* could not be verified"):
            imap_source(dc, port=dc.port, security="starttls").list_folders()
        with pytest.raises(ConnectionFailed, match="answered in plain text, not TLS: choose STARTTLS or None"):
            imap_source(dc, port=dc.port, security="ssl", ca_file=str(dc.ca_file)).list_folders()
        with imap_source(dc, port=dc.ssl_port, security="ssl", ssl_verify=False) as source:
            assert [f.path for f in source.list_folders()] == ["INBOX"]


def test_wrong_password_unreachable_host_and_private_addresses(dovecot):
    with pytest.raises(AuthenticationFailed) as err:
        imap_source(dovecot, password="not-the-password").list_folders()
    assert "refused the login of 'alice'" in str(err.value) and "not-the-password" not in str(err.value)
    with pytest.raises(ConnectionFailed, match="refused the connection"):
        imap_source(dovecot, port=1, connect_attempts=1).list_folders()
    with pytest.raises(PrivateAddressRefused):
        ImapSource("127.0.0.1", dovecot.port, "none", USER, PASSWORD).list_folders()
    assert "not-the-password" not in repr(imap_source(dovecot, password="not-the-password"))


def test_mithi_namespace_prefix_and_dot_separator():
    with DovecotServer({USER: PASSWORD}, layout="mithi") as dc:
        write_maildir(dc, USER, generate_mailbox("test"))
        truth = truth_of(dc)
        with imap_source(dc, flavour="mithi") as source:
            folders = {f.path: f for f in source.list_folders()}
            got = fetch_all(source)
        assert "Projekte/日本語" in folders and folders["Projekte/日本語"].ref == "INBOX.Projekte.&ZeVnLIqe-"
        assert "INBOX" in folders and not any(p.startswith("INBOX/") for p in folders)
        assert {k: v.raw for k, v in got.items()} == truth.messages


@pytest.fixture(scope="module", params=["fs", "mithi"], ids=["slash-separator", "dot-separator-INBOX-prefix"])
def layout_dovecot(request):
    """Dovecot with '/' and no prefix, or with '.' and the INBOX. prefix (Mithi's shape)."""
    with DovecotServer({USER: PASSWORD}, layout=request.param) as dc:
        dc.mailbox = generate_mailbox("test")
        write_maildir(dc, USER, dc.mailbox)
        yield dc


@pytest.mark.parametrize("flavour", ["imap", "mithi"])
def test_every_flavour_names_folders_with_the_separator_and_namespace_the_server_reports(layout_dovecot, flavour):
    dc = layout_dovecot
    with imap_source(dc, flavour=flavour) as source:
        folders = {f.path: f for f in source.list_folders()}
        got = fetch_all(source)
    # The generator's own folder tree, '/' between levels, whatever the server's separator.
    assert set(folders) == set(dc.mailbox.folders) | set(dc.mailbox.noselect)
    assert folders["Archive/2023/Q1 ½"].ref == dc.imap_name("Archive/2023/Q1 ½").replace("½", "&AL0-")
    assert not folders["Projekte"].selectable
    assert {k: v.raw for k, v in got.items()} == truth_of(dc).messages


def test_mithi_export_end_to_end(s3):
    with DovecotServer({USER: PASSWORD}, layout="mithi") as dc:
        write_maildir(dc, USER, generate_mailbox("test"))
        truth = truth_of(dc)
        with imap_source(dc, flavour="mithi") as source:
            result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="m"),
                                MemoryLedger(), fast_tuning())
        assert result.state == COMPLETED, result.error
        verify_export(s3, "m", truth)


def test_yahoo_flavour_keeps_every_search_and_fetch_within_1000_messages(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=2500, size=300))
    with TcpFaultProxy(dovecot.port) as proxy:
        source = ImapSource("127.0.0.1", proxy.port, "none", USER, PASSWORD, flavour="yahoo",
                            allow_private=True, batch_bytes=64 * 1024 * 1024)
        with source:
            inbox = source.list_folders()[0]
            ids = source.list_message_ids(inbox)
            got = list(source.fetch_messages(inbox, ids))
        commands = [c for conn in proxy.connections for c in conn.commands()]
    assert len(ids) == 2500 and all(isinstance(m, Message) for m in got)
    assert len({m.source_id for m in got}) == 2500
    counted = 0
    for command in commands:
        words = command.split()
        if len(words) < 3:
            continue
        verb = " ".join(words[1:3]).upper()
        if verb == "UID FETCH":
            n = _set_size(words[3], top=2500)
        elif verb == "UID SEARCH":
            n = _set_size(words[4], top=2500)  # UID SEARCH UID lo:hi
        elif words[1].upper() == "FETCH":
            n = _set_size(words[2], top=2500)
        else:
            continue
        counted += 1
        assert n <= 1000, command
    assert counted >= 2 + 3 + 3 + 3  # boundaries, 3 searches, 3 size fetches, ≥3 body fetches


def _set_size(seqset: str, top: int) -> int:
    total = 0
    for item in seqset.split(","):
        lo, _, hi = item.partition(":")
        lo_n = top if lo == "*" else int(lo)
        hi_n = lo_n if not hi else (top if hi == "*" else int(hi))
        total += abs(hi_n - lo_n) + 1
    return total


def test_connection_dropped_mid_fetch_is_resumed_without_gaps_or_repeats(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=60, size=40_000))
    truth = truth_of(dovecot)
    faults = {0: Fault(cut_after=700_000, after_marker=b"BODY.PEEK[]"),
              1: Fault(cut_after=100_000, after_marker=b"BODY.PEEK[]")}
    with TcpFaultProxy(dovecot.port, faults=faults) as proxy:
        with imap_source(dovecot, port=proxy.port, batch_bytes=1024 * 1024) as source:
            got = fetch_all(source)
            assert source.reconnects == 2
    assert proxy.faults_triggered == 2
    assert {k: v.raw for k, v in got.items()} == truth.messages


def test_stalled_server_times_out_and_is_resumed(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=20, size=20_000))
    truth = truth_of(dovecot)
    with TcpFaultProxy(dovecot.port, faults={0: Fault(stall_after=50_000, after_marker=b"BODY.PEEK[]")}) as proxy:
        with imap_source(dovecot, port=proxy.port, read_timeout=1.0) as source:
            got = fetch_all(source)
    assert proxy.faults_triggered == 1
    assert {k: v.raw for k, v in got.items()} == truth.messages


def test_a_message_that_never_arrives_becomes_a_reported_failure(dovecot):
    from tests.mailgen import GeneratedMessage, Mailbox, build_message

    def messages():
        rng = random.Random(3)
        for n, size in enumerate([1000, 1000, 300_000, 1000, 1000]):
            raw, when = build_message(rng, n, attachment_bytes=size)
            yield GeneratedMessage("INBOX", raw, when)

    write_maildir(dovecot, USER, Mailbox("t", 3, ["INBOX"], _factory=messages))
    # every connection dies 200 kB into any FETCH: only the 300 kB message cannot get through
    faults = {i: Fault(cut_after=200_000, after_marker=b"BODY.PEEK[]") for i in range(60)}
    with TcpFaultProxy(dovecot.port, faults=faults) as proxy:
        with imap_source(dovecot, port=proxy.port, retries=2) as source:
            inbox = source.list_folders()[0]
            got = list(source.fetch_messages(inbox, source.list_message_ids(inbox)))
    failures = [g for g in got if isinstance(g, MessageFailure)]
    assert len(got) == 5 and len(failures) == 1
    assert all(len(g.raw) < 10_000 for g in got if isinstance(g, Message))  # the big one failed
    assert "after 2 retries" in failures[0].error


def test_dropped_connection_during_an_export_is_recovered(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test", big=True))
    truth = truth_of(dovecot)
    faults = {0: Fault(cut_after=5_000_000, after_marker=b"BODY.PEEK[]")}
    with TcpFaultProxy(dovecot.port, faults=faults) as proxy:
        with imap_source(dovecot, port=proxy.port) as source:
            result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="drop"),
                                MemoryLedger(), fast_tuning())
            assert source.reconnects == 1
    assert proxy.faults_triggered == 1
    assert result.state == COMPLETED, result.error
    verify_export(s3, "drop", truth)


def test_uidvalidity_change_between_listing_and_fetching_is_reported(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=3, folder="Sent"))
    with imap_source(dovecot) as source:
        sent = next(f for f in source.list_folders() if f.path == "Sent")
        ids = source.list_message_ids(sent)
        source.close()
        with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as other:
            other.plain_login(USER, PASSWORD)
            other.delete_folder("Sent")
            other.create_folder("Sent")
        got = list(source.fetch_messages(sent, ids))
    assert [type(g) for g in got] == [MessageFailure] * 3
    assert "UIDVALIDITY changed" in got[0].error


def test_folder_deleted_during_an_export_is_reported_and_the_rest_exported(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))

    class Vanishing(ImapSource):
        """Sent disappears right after the engine listed it (a folder is listed once per run),
        before its messages are fetched."""

        def list_message_ids(self, folder: Folder, **kwargs):
            ids = super().list_message_ids(folder, **kwargs)
            if folder.path == "Sent":
                with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as other:
                    other.plain_login(USER, PASSWORD)
                    other.delete_folder("Sent")
            return ids

    source = Vanishing("127.0.0.1", dovecot.port, "none", USER, PASSWORD, allow_private=True)
    with source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="v"),
                            MemoryLedger(), fast_tuning())
    assert result.state == "completed_with_errors"
    sent = next(f for f in result.folders if f.folder == "Sent")
    # listed, then gone: every listed message is reported failed (none silently missing)
    assert sent.source_count > 0 and sent.failed == sent.source_count and sent.exported == 0
    assert result.totals.exported == sum(1 for m in generate_mailbox("test").messages() if m.folder != "Sent")


def test_gmail_over_imap_backs_up_all_mail_once_with_its_labels(dovecot, s3):
    """Dovecot made to look like Gmail by a rewriting proxy (X-GM-EXT-1, \\All, X-GM-LABELS)."""
    import csv
    import io
    import json
    import zipfile

    from tests.servers.faults import ImapRewriteProxy

    write_maildir(dovecot, USER, generate_mailbox("flat", count=6, folder="All Mail"))
    write_maildir(dovecot, USER, generate_mailbox("flat", seed=9, count=3, folder="INBOX"))
    labels = {1: rb'\Inbox "Work/Projekt &AMQ-"', 2: rb"\Sent", 3: b"", 4: rb"\Inbox \Important",
              5: b"Receipts", 6: rb'"[Imap]/Drafts"'}

    def server_line(line: bytes) -> bytes:
        if b"CAPABILITY" in line:
            line = line.replace(b"IMAP4rev1", b"IMAP4rev1 X-GM-EXT-1", 1)
        if line.startswith(b"* LIST") and line.rstrip().endswith(b'"All Mail"'):
            line = line.replace(b"(", b"(\\All ", 1)
        if re.match(rb"\* \d+ FETCH ", line) and b"BODY[]" in line:
            uid = int(re.search(rb"UID (\d+)", line).group(1))
            line = line.replace(b"FETCH (", b"FETCH (X-GM-LABELS (" + labels[uid] + b") ", 1)
        return line

    proxy = ImapRewriteProxy(dovecot.port, server_line=server_line,
                             client_line=lambda line: line.replace(b" X-GM-LABELS", b""))
    with proxy, imap_source(dovecot, port=proxy.port, flavour="gmail") as source:
        assert [f.path for f in source.list_folders()] == ["All Mail"]
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="g"),
                            MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert [f.folder for f in result.folders] == ["All Mail"] and result.totals.exported == 6
    with zipfile.ZipFile(s3.path("g.zip")) as archive:
        assert sum(n.endswith(".eml") for n in archive.namelist()) == 6  # INBOX not stored again
        rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    got = {row["source_id"].split(":")[1]: json.loads(row["labels"]) for row in rows}
    assert got == {"1": ["\\Inbox", "Work/Projekt Ä"], "2": ["\\Sent"], "4": ["\\Inbox", "\\Important"],
                   "5": ["Receipts"], "6": ["[Imap]/Drafts"]}
    assert all(row["entry"].startswith("All Mail/") for row in rows)


@pytest.fixture
def introspection():
    """An RFC 7662 token introspection endpoint for Dovecot's oauth2 passdb: "good-*" tokens
    belong to alice."""
    import http.server
    import json
    import threading
    from urllib.parse import parse_qs

    from legacyflo.localservices import free_port

    tokens: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            token = parse_qs(body).get("token", [""])[0]
            tokens.append(token)
            answer = {"active": True, "username": USER} if token.startswith("good-") else {"active": False}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/introspect", tokens
    server.shutdown()


def test_xoauth2_login_asks_for_a_fresh_token_on_every_connection(introspection):
    url, tokens = introspection
    issued = []

    def token() -> str:
        issued.append(f"good-{len(issued)}")
        return issued[-1]

    with DovecotServer({USER: PASSWORD}, oauth2_introspection_url=url) as dc:
        write_maildir(dc, USER, generate_mailbox("flat", count=20, size=20_000))
        truth = truth_of(dc)
        faults = {0: Fault(cut_after=100_000, after_marker=b"BODY.PEEK[]")}
        with TcpFaultProxy(dc.port, faults=faults) as proxy:
            with imap_source(dc, port=proxy.port, password=None, oauth2_token=token) as source:
                got = fetch_all(source)
        assert {k: v.raw for k, v in got.items()} == truth.messages
        assert issued == ["good-0", "good-1"] and tokens == issued  # reconnect → new token
        with pytest.raises(AuthenticationFailed, match="wrong XOAUTH2 token"):
            imap_source(dc, password=None, oauth2_token=lambda: "expired").list_folders()


@pytest.mark.parametrize("data", [
    [(b'1 (UID 7 FLAGS (\\Seen \\Flagged) INTERNALDATE "03-Jan-2021 10:00:00 +0200" BODY[] {5}', b"hello"), b")"],
    [(b'1 (UID 7 FLAGS () INTERNALDATE " 3-Jan-2021 10:00:00 +0000" BODY[] {5}', b"hello"), b")",
     (b'2 (UID 9 FLAGS (\\Seen) INTERNALDATE "04-Feb-2022 23:59:59 -0500" BODY[] {0}', b""), b")"],
    [b"1 (UID 7 RFC822.SIZE 1234)", b"2 (UID 9 RFC822.SIZE 0)"],
    # shapes the fast path leaves to imapclient
    [(b'1 (BODY[] {5}', b"hello"), b' UID 7 FLAGS (\\Seen) INTERNALDATE "03-Jan-2021 10:00:00 +0000")'],
    [(b'1 (X-GM-LABELS (\\Inbox) UID 7 FLAGS () INTERNALDATE "03-Jan-2021 10:00:00 +0000" BODY[] {5}', b"hello"), b")"],
    [b"1 (FLAGS (\\Seen))", (b'2 (UID 9 FLAGS () INTERNALDATE "03-Jan-2021 10:00:00 +0000" BODY[] {2}', b"hi"), b")"],
    [b"1 (UID 7 RFC822.SIZE 12)", b"3 (FLAGS (\\Deleted))"],
], ids=["one", "two", "sizes", "uid-after-literal", "gmail", "unsolicited", "unsolicited-size"])
def test_fast_fetch_parser_agrees_with_imapclient(data):
    from imapclient.response_parser import parse_fetch_response

    from connectors.sources.imap.fetch import parse_fetch

    assert parse_fetch(data) == dict(parse_fetch_response(data, False, True))


def test_internal_dates_keep_the_servers_offset():
    from connectors.sources.imap.fetch import parse_fetch

    data = [(b'1 (UID 7 FLAGS (\\Seen) INTERNALDATE "03-Jan-2021 10:00:00 +0200" BODY[] {5}', b"hello"), b")"]
    when = parse_fetch(data)[7][b"INTERNALDATE"]
    assert when.isoformat() == "2021-01-03T10:00:00+02:00"
    slow = parse_fetch([(b'1 (BODY[] {5}', b"hello"), b' UID 7 INTERNALDATE "03-Jan-2021 10:00:00 -0500")'])
    assert slow[7][b"INTERNALDATE"].utcoffset() == dt.timedelta(hours=-5)


def test_mailgen_imap_loader_serves_the_same_bytes_as_the_maildir_loader(dovecot):
    from tests.mailgen import append_imap

    mailbox = generate_mailbox("test")
    with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)
        append_imap(client, mailbox)
    served = sorted(truth_of(dovecot).messages.values())
    assert served == sorted(m.raw for m in mailbox.messages())
