"""The IMAP destination (connectors.destinations.imap) on a real Dovecot, in both layouts:
``/`` with no prefix, and Mithi's ``.`` with ``INBOX.``. What it stored is read back through a
plain imapclient session, independent of the code under test."""

from __future__ import annotations

import datetime as dt

import pytest
from imapclient import IMAPClient

from connectors.destinations import MessageRejected
from connectors.destinations.imap import ImapDestination
from tests.fixtures_engine import PASSWORD, USER
from tests.servers.dovecot import DovecotServer
from tests.servers.faults import Fault, TcpFaultProxy

LIMIT_CONFIG = """
mail_plugins = $mail_plugins quota
plugin {
  quota = count:User quota
  quota_vsizes = yes
  quota_max_mail_size = 20k
}
imap_capability = +APPENDLIMIT=%d
"""


@pytest.fixture(params=["fs", "mithi"])
def dc(request):
    with DovecotServer({USER: PASSWORD}, layout=request.param) as server:
        yield server


def destination(dc, port=None, **kwargs) -> ImapDestination:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("connect_timeout", 5)
    return ImapDestination("127.0.0.1", port or dc.port, "none", USER, PASSWORD, allow_private=True, **kwargs)


def plain(dc) -> IMAPClient:
    client = IMAPClient("127.0.0.1", dc.port, ssl=False)
    client.plain_login(USER, PASSWORD)
    return client


def mail(n: int, mid: str | None = None, size: int = 0) -> bytes:
    head = f"From: a@example.com\r\nSubject: restore {n}\r\nDate: Tue, 05 Mar 2024 10:00:00 +0000\r\n"
    if mid != "":
        head += f"Message-ID: {mid or f'<{n}@example.com>'}\r\n"
    return (head + "\r\n" + f"body {n}\r\n" + "y" * size).encode()


def folder_names(dc) -> set[str]:
    with plain(dc) as client:
        return {name for _f, _d, name in client.list_folders()}


def test_folders_get_the_servers_separator_prefix_and_parents(dc):
    with destination(dc) as dest:
        inbox = dest.ensure_folder("INBOX")
        deep = dest.ensure_folder("Projekte/日本語/Q1 ½")
        sub = dest.ensure_folder("INBOX/Unterordner")
        dotted = dest.ensure_folder("Releases/v1.2")
        assert dest.ensure_folder("Projekte/日本語/Q1 ½") == deep  # again: no error
        mapped = dest.mapped_folders()
    names = folder_names(dc)
    assert inbox == "INBOX"
    if dc.layout == "fs":
        assert deep == "Projekte/日本語/Q1 ½" and sub == "INBOX/Unterordner" and dotted == "Releases/v1.2"
        assert {"Projekte", "Projekte/日本語", "Projekte/日本語/Q1 ½", "Releases/v1.2"} <= names
        assert mapped == {}
    else:
        assert deep == "INBOX.Projekte.日本語.Q1 ½" and sub == "INBOX.Unterordner"
        assert dotted == "INBOX.Releases.v1_2"  # '.' cannot be inside a level here
        assert {"INBOX.Projekte", "INBOX.Projekte.日本語", "INBOX.Projekte.日本語.Q1 ½", "INBOX.Releases.v1_2"} <= names
        assert mapped == {"Releases/v1.2": "INBOX.Releases.v1_2"}
    with plain(dc) as client:
        assert deep in {name for _f, _d, name in client.list_sub_folders()}


def test_a_base_folder_holds_everything(dc):
    with destination(dc, base_folder="Restored/2026-12-01") as dest:
        name = dest.ensure_folder("INBOX")
        other = dest.ensure_folder("Sent")
    sep = "." if dc.layout == "mithi" else "/"
    prefix = "INBOX." if dc.layout == "mithi" else ""
    assert name == f"{prefix}Restored{sep}2026-12-01{sep}INBOX"
    assert other == f"{prefix}Restored{sep}2026-12-01{sep}Sent"
    assert {name, other, f"{prefix}Restored"} <= folder_names(dc)


@pytest.mark.parametrize("literal_plus", [True, False])
def test_append_keeps_bytes_flags_and_internal_date(dc, literal_plus):
    raw = mail(1, size=200_000)
    when = dt.datetime(2019, 7, 1, 12, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with destination(dc) as dest:
        folder = dest.ensure_folder("Archiv")
        if not literal_plus:
            dest.capabilities.discard("LITERAL+")
        uid = dest.append(folder, raw, ["\\Seen", "\\Flagged", "\\Recent", "$Forwarded", "Work", "bad(flag"], when)
        uid2 = dest.append(folder, mail(2), [], None)
    with plain(dc) as client:
        client.select_folder(folder, readonly=True)
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    assert uid is not None and int(uid) in fetched and int(uid2) in fetched  # APPENDUID
    first = fetched[int(uid)]
    assert first[b"BODY[]"] == raw
    assert {b"\\Seen", b"\\Flagged", b"$Forwarded", b"Work"} <= set(first[b"FLAGS"])
    assert not {b"bad(flag"} & set(first[b"FLAGS"])
    assert first[b"INTERNALDATE"].astimezone(dt.UTC) == when.astimezone(dt.UTC)
    assert fetched[int(uid2)][b"BODY[]"] == mail(2)


def test_find_existing_counts_multiplicity(dc):
    a, b, c = mail(1), mail(2), mail(3, mid="")
    same_id_other_size = mail(1, size=10)
    with destination(dc, search_batch=2) as dest:
        folder = dest.ensure_folder("Dups")
        for raw in (a, a, b, c, same_id_other_size):
            dest.append(folder, raw, [], None)
        import hashlib

        def cand(raw, mid):
            return (mid, len(raw), hashlib.sha256(raw).hexdigest())

        d = mail(4)
        candidates = [cand(a, "<1@example.com>")] * 3 + [cand(b, "<2@example.com>"), cand(c, ""), cand(c, ""),
                                                         cand(d, "<4@example.com>"), cand(mail(5, mid=""), "")]
        found = dest.find_existing(folder, candidates)
        assert found == [cand(a, "<1@example.com>")] * 2 + [cand(b, "<2@example.com>"), cand(c, "")]
        assert dest.find_existing(dest.ensure_folder("Empty"), candidates) == []
        never_created, _ = dest.folder_name("Not/Yet")
        assert dest.find_existing(never_created, candidates) == []  # a resumed run before its CREATE


def test_a_message_over_appendlimit_is_rejected_before_sending_and_the_rest_goes_on():
    with DovecotServer({USER: PASSWORD}, extra_config=LIMIT_CONFIG % 10_000) as dc:
        with destination(dc) as dest:
            assert dest.size_limit() == 10_000
            folder = dest.ensure_folder("INBOX")
            with pytest.raises(MessageRejected, match="APPENDLIMIT"):
                dest.append(folder, mail(1, size=15_000), [], None)
            dest.append(folder, mail(2), [], None)
            dest.max_message_bytes = None
        with destination(dc, max_message_bytes=50_000) as dest:  # the server refuses what it did not announce
            dest.capabilities.discard("APPENDLIMIT=10000")
            with pytest.raises(MessageRejected, match="too large"):
                dest.append("INBOX", mail(3, size=30_000), [], None)
            dest.append("INBOX", mail(4), [], None)
        with plain(dc) as client:
            client.select_folder("INBOX", readonly=True)
            bodies = [d[b"BODY[]"] for d in client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values()]
    assert bodies == [mail(2), mail(4)]


def test_provider_caps_apply_without_appendlimit():
    dest = ImapDestination("imap.gmail.com", 993, "ssl", "u", "p", flavour="gmail")
    assert dest.preset_limit() == 35 * 1024 * 1024


@pytest.mark.parametrize("literal_plus", [True, False])
def test_a_cut_append_is_never_stored_twice(literal_plus):
    """The connection drops right after APPEND: with LITERAL+ the server has the message (and
    it must not be appended again); with a synchronising literal it never got it (and it must be)."""
    with DovecotServer({USER: PASSWORD}) as dc:
        with destination(dc) as dest:
            folder = dest.ensure_folder("Cut")
            dest.append(folder, mail(1), [], None)  # an earlier copy of the same message
        with TcpFaultProxy(dc.port, faults={0: Fault(cut_after=0, after_marker=b"APPEND")}) as proxy:
            with destination(dc, port=proxy.port) as dest:
                if not literal_plus:
                    dest.capabilities.discard("LITERAL+")
                dest.append(folder, mail(1), ["\\Seen"], None)
                dest.append(folder, mail(2), [], None)
                assert dest.reconnects >= 1
            assert proxy.faults_triggered == 1
        with plain(dc) as client:
            client.select_folder(folder, readonly=True)
            bodies = [d[b"BODY[]"] for d in client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values()]
    assert bodies == [mail(1), mail(1), mail(2)]


def test_ssl_with_the_ca_file_and_a_refused_private_address():
    from connectors.model import ConnectionFailed

    with DovecotServer({USER: PASSWORD}, ssl=True) as dc:
        with ImapDestination("127.0.0.1", dc.ssl_port, "ssl", USER, PASSWORD, allow_private=True,
                             ca_file=str(dc.ca_file)) as dest:
            dest.append(dest.ensure_folder("Secure"), mail(1), ["\\Seen"], None)
        with plain(dc) as client:
            client.select_folder("Secure", readonly=True)
            assert [d[b"BODY[]"] for d in client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values()] == [mail(1)]
        with pytest.raises(ConnectionFailed):  # the backup's rule: no private addresses unless allowed
            with ImapDestination("127.0.0.1", dc.ssl_port, "ssl", USER, PASSWORD, ca_file=str(dc.ca_file)) as dest:
                dest.ensure_folder("Secure")


def test_appending_to_a_folder_that_does_not_exist_is_a_folder_error(dc):
    from connectors.model import FolderUnavailable

    with destination(dc) as dest:
        with pytest.raises(FolderUnavailable, match="cannot be opened"):
            dest.append(dest.folder_name("Nowhere")[0], mail(1), [], None)
        dest.append(dest.ensure_folder("Somewhere"), mail(1), [], None)  # the connection goes on


@pytest.mark.parametrize("literal_plus", [True, False])
def test_a_30_mb_message_is_appended_without_copies_of_it(literal_plus):
    import os
    import tracemalloc

    raw = mail(1) + os.urandom(15 * 1024 * 1024).hex().encode() + b"\r\n"
    with DovecotServer({USER: PASSWORD}) as dc:
        with destination(dc) as dest:
            folder = dest.ensure_folder("Big")
            if not literal_plus:
                dest.capabilities.discard("LITERAL+")
            tracemalloc.start()
            try:
                dest.append(folder, raw, [], None)
                _current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        with plain(dc) as client:
            client.select_folder(folder, readonly=True)
            stored = client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).popitem()[1][b"BODY[]"]
    assert stored == raw
    assert peak < 2 * 1024 * 1024, peak  # the 30 MB message is sent from its own buffer
