"""Folder include/exclude rules and the names of archive entries and bucket keys.

``assert_extracts_safely`` states what every list of entry names the engine makes must satisfy:
zip-slip safe (also once NFKC-normalised), and collision free on a file system that ignores
case and Unicode normalisation and drops trailing dots and spaces. The unit tests and the
property test check ``ArchiveFolders`` against it; the end-to-end tests check real archives of a
Dovecot mailbox whose folder names collide and attack, and unpack them with unzip, bsdtar and
Python's zipfile.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import shutil
import subprocess
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.folderfilter import FolderFilter
from connectors.model import Folder
from connectors.naming import (
    ArchiveFolders,
    collision_key,
    message_entry_name,
    object_key,
    safe_level,
    safe_subject,
)
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.skeleton import unique_paths
from connectors.pipeline.spec import ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import PASSWORD, USER, fast_tuning, imap_source, read_report

NFD_CAFE = unicodedata.normalize("NFD", "Café")
# Folder names from the review (issue 11, items 6 and 7) and more of their kind; Dovecot
# accepts every one of them (it refuses only a '..' level).
COLLIDING = ["Work", "Work ", " Work", "work", "WORK", "Work.", "Projects", "Projects/Sub",
             "Projects/Sub ", "Projects/sub", "Café", NFD_CAFE, "Straße", "STRASSE", "Ω", "ω",
             "Re: Plan", "Re_ Plan", "labels.csv", "INBOX/000001_Hello.eml", "INBOX/000001_hello.EML"]
HOSTILE = ["..\\..\\evil", "C:", "C:\\Windows\\Temp", "c:foo", "\\\\server\\share", "...",
           "\uff0e\uff0e", "\uff0e\uff0e\uff0fevil", "\u2025", "\uff23\uff1a", "a\\b", "CON", "nul.txt",
           "Lpt1", "tab\there", "bell\x07", "\u202eevil", "x" * 240, "℅", " ", "INBOX/ "]

_NFKC_SLASHES = re.compile(r"[/\\]")


def assert_extracts_safely(names: list[str]) -> None:
    """No entry escapes the extraction directory or lands on another one's file, on any file
    system we know of: Windows and macOS ignore case and normalisation, Windows drops trailing
    dots and spaces and its extractors turn ``<>:"|?*`` into ``_``."""
    files: dict[tuple[str, ...], str] = {}
    dirs: dict[tuple[str, ...], str] = {}
    for name in names:
        assert name and not name.startswith("/") and "\\" not in name, name
        levels = name.rstrip("/").split("/")
        for level in levels:
            compat = unicodedata.normalize("NFKC", level)
            assert level and level == level.strip(), name
            assert not re.fullmatch(r"[\s.]*", compat), f"{name!r}: a dots-only level"
            assert not re.match(r"[A-Za-z]:", compat), f"{name!r}: a drive"
            assert not _NFKC_SLASHES.search(compat), f"{name!r}: a separator once normalised"
            assert not re.search(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]", level), name
            assert len(level.encode("utf-8")) <= 255, name
        keys = tuple(collision_key(level) for level in levels)
        for depth in range(1, len(keys)):
            dirs.setdefault(keys[:depth], name)
        if name.endswith("/"):
            dirs.setdefault(keys, name)
        else:
            assert keys not in files, f"{name!r} and {files[keys]!r} are one file when extracted"
            files[keys] = name
    clash = set(files) & set(dirs)
    assert not clash, f"a file and a folder of one name: {[files[k] for k in clash]}"


def entry_names(paths: list[str], subject: str = "Hello", per_folder: int = 2) -> list[str]:
    """The entries the engine makes for these folders: a directory each, messages, labels.csv."""
    folders = ArchiveFolders()
    names = ["labels.csv"]
    for path in paths:
        archive = folders.path(path)
        names.append(archive + "/")
        names += [message_entry_name(archive, n, subject) for n in range(1, per_folder + 1)]
    return names


def test_include_selects_a_folder_and_its_subfolders_only():
    flt = FolderFilter(include=["Projekte", "inbox"])
    assert flt.accepts("Projekte") and flt.accepts("Projekte/2024/Q1") and flt.accepts("INBOX")
    assert not flt.accepts("Projekte-alt") and not flt.accepts("Sent")


def test_exclude_wins_and_matching_ignores_case_and_normalisation():
    flt = FolderFilter(include=["Ablage"], exclude=["ablage/ÜBERWEISUNGEN"])
    assert flt.accepts("Ablage/Rechnungen")
    assert not flt.accepts("Ablage/Überweisungen") and not flt.accepts("Ablage/U\u0308berweisungen/2024")
    assert FolderFilter().accepts("anything") and not FolderFilter()
    assert FolderFilter(exclude=["/Spam/"]).accepts("Spam") is False


def test_entry_names_are_safe_and_unique_by_sequence():
    assert message_entry_name("INBOX", 7, "Re: a/b\\c: *?") == "INBOX/000007_Re_ a_b_c.eml"
    folders = ArchiveFolders()
    assert folders.path("../x") == "_../x" and folders.path("/a//./b") == "a/_./b"
    assert len(safe_subject("x" * 500)) == 60
    assert safe_subject(" ... ") == "no_subject" and safe_subject("\ud800") == "\ufffd"


def test_folders_that_differ_in_whitespace_case_or_normalisation_get_distinct_names():
    folders = ArchiveFolders()
    named = {path: folders.path(path) for path in COLLIDING}
    assert named["Work"] == "Work" and named["Work "] == "Work (2)" and named[" Work"] == "Work (3)"
    assert named["work"] == "work (4)" and named["Work."] == "Work. (2)"
    assert named["Projects/Sub"] == "Projects/Sub" and named["Projects/Sub "] == "Projects/Sub (2)"
    assert named["Café"] == "Café" and named[NFD_CAFE] == NFD_CAFE + " (2)"
    assert named["STRASSE"] == "STRASSE (2)" and named["ω"] == "ω (2)" and named["Re_ Plan"] == "Re_ Plan (2)"
    # nothing may look like labels.csv at the root or like a message file beside messages
    assert named["labels.csv"] == "labels.csv (2)"
    assert named["INBOX/000001_Hello.eml"] == "INBOX/000001_Hello.eml (2)"
    assert len(set(named.values())) == len(COLLIDING)
    assert_extracts_safely(entry_names(COLLIDING))


@pytest.mark.parametrize(("source", "archive"), [
    ("..\\..\\evil", "..⧵..⧵evil"),
    ("C:", "_C:"),
    ("C:\\Windows\\Temp", "_C:⧵Windows⧵Temp"),
    ("c:foo", "_c:foo"),
    ("\\\\server\\share", "⧵⧵server⧵share"),
    ("..", "_.."),
    ("...", "_..."),
    ("\uff0e\uff0e", "_\uff0e\uff0e"),  # NFKC: ".."
    ("\uff0e\uff0e\uff0fevil", "\uff0e\uff0e∕evil"),  # NFKC: "../evil"
    ("\uff3cevil", "⧵evil"),
    ("\uff23\uff1a", "_\uff23\uff1a"),  # NFKC: "C:"
    ("℅", "c∕o"),
    ("CON", "_CON"), ("nul.txt", "_nul.txt"), ("Lpt1", "_Lpt1"), ("CONSOLE", "CONSOLE"),
    ("tab\there\x07", "tabhere"),
    ("  padded\u00a0", "padded"),
    ("bad\ud800half", "bad\ufffdhalf"),
    ("/etc/passwd", "etc/passwd"),
    ("a//b", "a/b"),
    ("", "_"), (" ", "_"), ("INBOX/ ", "INBOX/_"),
])
def test_hostile_folder_names_become_harmless_levels(source, archive):
    assert ArchiveFolders().path(source) == archive
    assert_extracts_safely(entry_names([source]))


def test_a_long_level_is_cut_at_a_character_and_stays_unique():
    folders = ArchiveFolders()
    long_a, long_b = "é" * 150 + "a", "é" * 150 + "b"  # 301 bytes each; equal in their first 200
    first, second = folders.path(long_a), folders.path(long_b)
    assert first == "é" * 100 and second == "é" * 100 + " (2)"
    assert safe_level("x" * 300) == "x" * 200


def test_a_resumed_export_keeps_the_names_it_committed():
    first = ArchiveFolders()
    order = COLLIDING + HOSTILE
    committed = {path: first.path(path) for path in order}
    again = ArchiveFolders()
    assert all(again.keep(path, committed[path]) for path in reversed(order))
    # a new folder listed first cannot take a committed name
    assert again.path("WORK ") == "WORK (6)"
    assert all(again.path(path) == committed[path] for path in order)


def test_names_an_earlier_run_could_not_have_made_are_not_kept():
    folders = ArchiveFolders()
    assert not folders.keep("evil", "../evil") and not folders.keep("evil", "a\\b")
    assert not folders.keep("a/b", "a")  # one level for two
    assert folders.keep("Work", "Work")
    assert not folders.keep("work", "WORK")  # one name to Windows
    assert not folders.keep("x", "labels.csv")
    assert folders.path("work") == "work (2)"


def test_unique_paths_never_makes_a_path_another_folder_has():
    listed = [Folder("A", "1"), Folder("A (2)", "2"), Folder("A", "3"), Folder("A", "4")]
    assert [f.path for f in unique_paths(listed)] == ["A", "A (2)", "A (3)", "A (4)"]


_PIECES = st.sampled_from(list("aAbB .\\:_-019") + [
    "é", "e\u0301", "ß", "SS", "\u00a0", "\x00", "\x85", "\u2025", "\uff0e", "\uff0f", "\uff3c",
    "\uff23", "\uff1a", "Ω", "ω", "\u2126", "\ud800", ".eml", "000001_", "labels.csv", "CON", "x" * 120])
_LEVELS = st.lists(_PIECES, max_size=5).map("".join)
_PATHS = st.lists(st.lists(_LEVELS, min_size=1, max_size=3).map("/".join), max_size=25)


@settings(max_examples=300, deadline=None)
@given(paths=_PATHS, subject=st.text(max_size=12) | _LEVELS)
def test_any_folder_names_give_entries_that_extract_safely_and_apart(paths, subject):
    paths = [f.path for f in unique_paths(Folder(p, p) for p in paths)]
    names = entry_names(paths, subject)
    assert_extracts_safely(names)
    folders = ArchiveFolders()
    assert len({folders.path(p) for p in paths}) == len(paths)


@settings(max_examples=200, deadline=None)
@given(paths=_PATHS, data=st.data())
def test_any_committed_names_are_kept_and_new_folders_stay_apart(paths, data):
    paths = [f.path for f in unique_paths(Folder(p, p) for p in paths)]
    first = ArchiveFolders()
    committed = {p: first.path(p) for p in paths}
    kept = data.draw(st.lists(st.sampled_from(paths), unique=True) if paths else st.just([]))
    again = ArchiveFolders()
    assert all(again.keep(p, committed[p]) for p in kept)
    later = data.draw(st.permutations(paths))
    named = {p: again.path(p) for p in later}
    assert all(named[p] == committed[p] for p in kept)
    assert len(set(named.values())) == len(paths)
    assert_extracts_safely([name + "/" for name in named.values()]
                           + [message_entry_name(name, 1, "Hello") for name in named.values()])


def test_object_keys():
    assert object_key("backups/2024/", "alice", ".zip") == "backups/2024/alice.zip"
    assert object_key("", "alice", ".report.csv") == "alice.report.csv"


# ---- end to end: a real Dovecot mailbox with such folders ----------------------------------------

def fill_hostile_mailbox(dovecot) -> Counter:
    """Every folder of COLLIDING and HOSTILE that Dovecot takes (it refuses control characters
    and levels without a name), each with two messages called "Hello"; returns how many
    messages of each content (sha256) the mailbox holds."""
    from imapclient import IMAPClient

    contents: Counter = Counter()
    with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)  # a UTF-8 password
        for n, name in enumerate(COLLIDING + HOSTILE):
            if re.search(r"[\x00-\x1f]", name) or not all(level.strip() for level in name.split("/")):
                continue
            client.create_folder(name)
            for copy in range(2):
                raw = (f"Subject: Hello\r\nMessage-ID: <{n}.{copy}@hostile>\r\n\r\n"
                       f"folder {name!r}, copy {copy}\r\n").encode()
                client.append(name, raw)
                contents[hashlib.sha256(raw).hexdigest()] += 1
    return contents


def extracted_files(directory: Path) -> Counter:
    return Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*.eml") if p.is_file())


def extract_everywhere(archive: Path, into: Path) -> dict[str, Path]:
    """The archive unpacked by unzip, bsdtar and Python's zipfile, each into its own directory."""
    out = {}
    for tool, command in (("unzip", ["unzip", "-qq", "-o", str(archive), "-d"]),
                          ("bsdtar", ["bsdtar", "-x", "-f", str(archive), "-C"])):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/system-deps.sh installs it)")
        target = into / tool
        target.mkdir()
        done = subprocess.run([*command, str(target)], capture_output=True, text=True)
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"
        out[tool] = target
    out["zipfile"] = into / "zipfile"
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(out["zipfile"])
    return out


def test_colliding_and_hostile_folders_extract_with_every_message(dovecot, s3, tmp_path):
    contents = fill_hostile_mailbox(dovecot)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="hostile"),
                            MemoryLedger(), fast_tuning())
    assert result.state == "completed", result.error
    assert result.totals.exported == sum(contents.values())
    archive = s3.path("hostile.zip")
    for tool, directory in extract_everywhere(archive, tmp_path).items():
        assert extracted_files(directory) == contents, f"{tool} lost or merged messages"
        assert all(p.resolve().is_relative_to(directory.resolve()) for p in directory.rglob("*")), tool
    with zipfile.ZipFile(archive) as opened:
        assert_extracts_safely(opened.namelist())  # and so on Windows and macOS
    # the report names each message's own entry, in a folder of its own
    report = read_report(s3, "hostile.report.csv")
    assert len({row["entry"] for row in report}) == len(report) == sum(contents.values())
    folders = {row["entry"].rsplit("/", 1)[0] for row in report}
    assert len(folders) == len({row["folder"] for row in report})


def test_colliding_and_hostile_folders_are_distinct_pst_folders(dovecot, s3, tmp_path):
    pypff = pytest.importorskip("pypff")
    contents = fill_hostile_mailbox(dovecot)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="hostile", format="pst"),
                            MemoryLedger(), fast_tuning())
    assert result.state == "completed", result.error
    pst = pypff.file()
    pst.open(str(s3.path("hostile.pst")))
    try:
        top = next(f for f in pst.get_root_folder().sub_folders if f.name == "Top of Outlook data file")
        counts: dict[tuple[str, ...], int] = {}

        def walk(folder, path: tuple[str, ...]) -> None:
            names = [sub.name for sub in folder.sub_folders]
            assert len({collision_key(n) for n in names}) == len(names), f"siblings Outlook confuses: {names}"
            for sub in folder.sub_folders:
                counts[(*path, sub.name)] = sub.number_of_sub_messages
                walk(sub, (*path, sub.name))

        walk(top, ())
    finally:
        pst.close()
    folders = {row["folder"] for row in read_report(s3, "hostile.report.csv")}
    holding = [path for path, n in counts.items() if n]
    assert len(holding) == len(folders) and all(counts[p] == 2 for p in holding)
    assert sum(counts.values()) == sum(contents.values())


class DiesAtTheFinalCommit(MemoryLedger):
    """Raises when the final part is committed, as a worker that died there leaves the ledger
    (the final part uploaded, not committed)."""

    dying = True

    def commit_part(self, part, records):
        if self.dying and part.final:
            raise RuntimeError("the worker died")
        super().commit_part(part, records)


def test_a_resumed_export_keeps_its_folder_names_when_a_colliding_folder_appears(dovecot, moto, tmp_path):
    """Run 1 names "Work " ``Work`` (no other folder wanted that name) and dies; then a folder
    "Work" appears, which a fresh listing would name ``Work``. The resumed run keeps ``Work``
    for "Work " and names the newcomer ``Work (2)``: no folder's messages are split over two
    directories and no entry of one folder lands on another's. (On moto: AWS replaces an
    uploaded, uncommitted part that a resumed run makes anew; rclone refuses to.)"""
    import uuid

    from imapclient import IMAPClient

    from connectors.storage.s3.client import make_client
    from connectors.storage.s3.target import S3Target

    contents: Counter = Counter()
    rng = random.Random(11)

    def add(folder: str, count: int, size: int) -> None:
        with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
            client.plain_login(USER, PASSWORD)
            client.create_folder(folder)
            for n in range(count):
                body = base64.encodebytes(rng.randbytes(size)).replace(b"\n", b"\r\n")  # incompressible
                raw = f"Subject: Hello\r\nMessage-ID: <{folder}.{n}@resume>\r\n\r\n".encode() + body
                client.append(folder, raw)
                contents[hashlib.sha256(raw).hexdigest()] += 1

    bucket = "resume-" + uuid.uuid4().hex[:8]
    s3 = make_client(S3Target(bucket, "us-east-1", moto.url, moto.access_key, moto.secret_key), allow_private=True)
    s3.create_bucket(Bucket=bucket)
    tuning = fast_tuning(part_bytes=5 * 1024 * 1024, min_part_bytes=5 * 1024 * 1024)
    add("Work ", 14, 450_000)  # ~6.4 MB deflated: one 5 MiB part, then the final one
    ledger, spec = DiesAtTheFinalCommit(), ExportSpec(bucket=bucket, file_name="resumed")
    with imap_source(dovecot) as source, pytest.raises(RuntimeError):
        run_backup(source, s3, spec, ledger, tuning)
    assert "Work/" in {r.name for r in ledger.records if r.kind == "directory"}
    add("Work", 3, 1000)
    ledger.dying = False
    with imap_source(dovecot) as source:
        result = run_backup(source, s3, spec, ledger, tuning)
    assert result.state == "completed" and result.resumed, result.error
    entries = {folder: {r.name.rsplit("/", 1)[0] for r in ledger.records if r.kind == "message"
                        and r.folder == folder} for folder in ("Work ", "Work")}
    assert entries == {"Work ": {"Work"}, "Work": {"Work (2)"}}
    archive = tmp_path / "resumed.zip"
    s3.download_file(bucket, "resumed.zip", str(archive))
    (tmp_path / "out").mkdir()
    for tool, directory in extract_everywhere(archive, tmp_path / "out").items():
        assert extracted_files(directory) == contents, f"{tool} lost or merged messages"
