"""Names in the bucket and inside the archive.

Bucket keys: ``PREFIX/FILE.zip`` (``.pst``), or ``FILE.part001.zip``, ``FILE.part002.zip``...
(``.partNNN.pst``) when the archive is split into volumes — never ``FILE.zip`` plus parts, with
``PREFIX/FILE.report.csv`` and ``PREFIX/FILE.summary.json`` beside it.

Entry names: ``FOLDER/PATH/NNNNNN_subject.eml`` — the folder's archive path (``ArchiveFolders``),
a per-folder sequence number (unique, so two messages of one folder never share a name, even
with the same subject) and a subject made safe for every unzip tool and file system
(``safe_subject``). Every level of a folder path goes through ``safe_level`` and then
``ArchiveFolders`` makes it unique; README "Names in the archive" lists each renaming.

Invariants, whatever a source calls its folders:
- zip-slip safe: no entry name starts with '/', holds '\\', an empty, '.' or '..' level, a level
  starting with a drive letter (``C:``), or control characters — nor does it once NFKC-normalised
  (``．．``, ``＼``, ``Ｃ：`` are the same characters to a tool that normalises);
- collision free where it is extracted: two entries never name one file or folder on a file
  system that ignores case and Unicode normalisation and drops trailing dots and spaces
  (Windows, macOS) or maps ``<>:"|?*`` to ``_`` (Windows extractors), and no folder is named
  like a message file (``NNNNNN_….eml``) or, at the root, like a manifest (``labels.csv``,
  ``labels.partNNN.csv``) or an index (``index.csv``, ``index.partNNN.csv``: reserved names);
- stable across the runs of one export: a resumed export keeps the names its committed records
  hold (``ArchiveFolders.keep``), so a folder's messages never spread over two directories.
"""

from __future__ import annotations

import functools
import re
import unicodedata

SUBJECT_CHARS = 60
LEVEL_BYTES = 200  # UTF-8 bytes of one folder level, before a " (2)"; file systems allow 255
SLASH_STAND_IN = "\u2215"  # DIVISION SLASH: a '/' inside one level of a folder name
BACKSLASH_STAND_IN = "\u29f5"  # REVERSE SOLIDUS OPERATOR: a '\' anywhere in a folder name
EMPTY_PATH_LEVEL = "_"  # the folder of a source path with no level left

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f\\/:*?"<>|]+')
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ONLY_DOTS = re.compile(r"[\s.]*")
_DRIVE = re.compile(r"[A-Za-z]:")
_DEVICE = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$)(\s*\..*)?", re.I | re.S)
_WINDOWS_MAPPED = str.maketrans({c: "_" for c in '<>:"|?*'})
_MESSAGE_FILE = re.compile(r"[0-9]+_.*\.eml", re.S)  # what message_file_name makes, folded
_ROOT_FILE = re.compile(r"(labels|index)(\.part[0-9]+)?\.csv")  # the manifests at the archive's root


def safe_subject(subject: str, limit: int = SUBJECT_CHARS) -> str:
    """A subject as a file name: separators, characters Windows refuses and control characters
    (also those NFKC turns into a separator, such as ``／``) become '_'. Only the first
    ``limit * 4`` characters are looked at (the report keeps the whole subject)."""
    text = (subject or "").lstrip(" ._\t\r\n")[:limit * 4]
    text = unicodedata.normalize("NFC", _SURROGATE.sub("\ufffd", text))
    if not text.isascii() and _has_compat_separator(text):
        text = "".join(c if _stand_in(c) == c else "_" for c in text)
    text = _UNSAFE.sub("_", text)
    text = _SPACES.sub(" ", text).strip(" ._")
    text = re.sub(r"_{2,}", "_", text)
    if len(text) > limit:
        text = text[:limit].rstrip(" ._")
    return text or "no_subject"


def _has_compat_separator(text: str) -> bool:
    compat = unicodedata.normalize("NFKC", text)
    return "/" in compat or "\\" in compat


@functools.lru_cache(maxsize=4096)
def _stand_in(char: str) -> str:
    """'\\' and the characters that NFKC turns into '/' or '\\' (``／``, ``＼``, ``℅``...)."""
    if char == "\\":
        return BACKSLASH_STAND_IN
    if char.isascii():
        return char
    compat = unicodedata.normalize("NFKC", char)
    if "/" in compat or "\\" in compat:
        return compat.replace("/", SLASH_STAND_IN).replace("\\", BACKSLASH_STAND_IN)
    return char


def _needs_guard(level: str) -> bool:
    """A level some tool would take for '.', '..', a drive or a Windows device: it gets '_' first."""
    compat = unicodedata.normalize("NFKC", level)
    return bool(_ONLY_DOTS.fullmatch(compat) or _DRIVE.match(compat)
                or _DEVICE.fullmatch(compat.rstrip(" .")))


def safe_level(name: str) -> str:
    """One level of a folder path as the archive names it, or "" for a level to drop (empty or
    blank). Control characters go; '\\' becomes ⧵; leading and trailing whitespace goes; a
    level over ``LEVEL_BYTES`` is shortened; '.', '..' (and other dots-only levels), a drive
    (``C:``) or a Windows device name (``CON``, ``NUL.txt``) get a leading '_'."""
    text = _CONTROL.sub("", _SURROGATE.sub("\ufffd", name))
    if not text.isascii() or "\\" in text:
        text = "".join(_stand_in(c) for c in text)
    text = text.strip()
    if len(text.encode("utf-8")) > LEVEL_BYTES:
        text = text.encode("utf-8")[:LEVEL_BYTES].decode("utf-8", "ignore").rstrip()
    if text and _needs_guard(text):
        text = "_" + text
    return text


def _is_safe_level(level: str) -> bool:
    """What ``safe_level`` and ``ArchiveFolders`` can produce (a " (2)" included)."""
    return (bool(level) and level == level.strip() and not _CONTROL.search(level)
            and not _SURROGATE.search(level) and all(_stand_in(c) == c for c in level)
            and not _needs_guard(level) and len(level.encode("utf-8")) <= LEVEL_BYTES + 16)


def collision_key(level: str) -> str:
    """Levels with one key are one name to some file system or extractor: case (full case
    folding), Unicode normalisation (canonical), trailing dots and spaces (Windows drops them)
    and ``<>:"|?*`` (Windows extractors write ``_``) do not tell names apart."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFD", level).casefold())
    return folded.translate(_WINDOWS_MAPPED).rstrip(" .")


class ArchiveFolders:
    """Each source folder path's folder in the archive, unique however the archive is extracted.

    Levels are made safe (``safe_level``); a level whose ``collision_key`` another source
    folder already holds in the same archive directory, or that could be taken for a message
    file (or, at the root, for ``labels.csv`` or ``index.csv``), gets `` (2)``, `` (3)``... — after every
    transformation, so ``Work``, ``Work `` and `` work`` are three folders. Distinct source
    paths always get distinct archive paths; one source path always gets the same one.
    A blank level is dropped; a path ending in one (``""``, ``Work/ ``) gets a folder ``_`` of
    its own there.
    """

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {"": ""}  # source path prefix -> archive directory ("" = root)
        self._owners: dict[tuple[str, str], tuple[str, str]] = {}  # (archive dir, key) -> owner
        self._folders: dict[str, str] = {}  # source path -> archive path (never "")

    def path(self, source_path: str) -> str:
        """The archive path of the folder ``source_path`` (chosen on first use, then fixed)."""
        found = self._folders.get(source_path)
        if found is None:
            found = self._directory(source_path)
            if not safe_level(source_path.rpartition("/")[2]):  # "", "Work/ ": a folder of its own
                found = self._claim(found, EMPTY_PATH_LEVEL, ("leaf", source_path))
            self._folders[source_path] = found
        return found

    def keep(self, source_path: str, archive_path: str) -> bool:
        """Take ``archive_path`` for ``source_path``, as an earlier run of this export committed
        it (call before ``path`` allocates anything). False, and nothing changed, when that
        name is not one this class could have chosen or clashes with one kept already."""
        levels = archive_path.split("/")
        steps = [("dir", prefix) for prefix, level in _prefixes(source_path) if safe_level(level)]
        if not safe_level(source_path.rpartition("/")[2]):
            steps.append(("leaf", source_path))
        if source_path in self._folders or len(steps) != len(levels) \
                or not all(_is_safe_level(level) for level in levels):
            return False
        claims, parent = [], ""
        for owner, name in zip(steps, levels, strict=True):
            directory = f"{parent}/{name}" if parent else name
            holder = self._owners.get((parent, collision_key(name)))
            known = self._dirs.get(owner[1]) if owner[0] == "dir" else None
            if holder not in (None, owner) or known not in (None, directory) or self._reserved(parent, name):
                return False
            claims.append((parent, name, owner, directory))
            parent = directory
        for parent, name, owner, directory in claims:
            self._owners[(parent, collision_key(name))] = owner
            if owner[0] == "dir":
                self._dirs[owner[1]] = directory
        self._folders[source_path] = archive_path
        return True

    def _directory(self, source_path: str) -> str:
        directory = ""
        for prefix, level in _prefixes(source_path):
            known = self._dirs.get(prefix)
            if known is None:
                name = safe_level(level)
                known = self._claim(directory, name, ("dir", prefix)) if name else directory
                self._dirs[prefix] = known
            directory = known
        return directory

    def _claim(self, parent: str, level: str, owner: tuple[str, str]) -> str:
        name, number = level, 1
        while self._owners.get((parent, collision_key(name)), owner) != owner or self._reserved(parent, name):
            number += 1
            name = f"{level} ({number})"
        self._owners[(parent, collision_key(name))] = owner
        return f"{parent}/{name}" if parent else name

    @staticmethod
    def _reserved(parent: str, name: str) -> bool:
        key = collision_key(name)
        return bool(_MESSAGE_FILE.fullmatch(key) or (not parent and _ROOT_FILE.fullmatch(key)))


def _prefixes(source_path: str):
    """("a", "a"), ("a/b", "b")...: each level of a source path with the prefix ending in it."""
    prefix = None
    for level in source_path.split("/"):
        prefix = level if prefix is None else f"{prefix}/{level}"
        yield prefix, level


def index_name(volume: int, *, split: bool) -> str:
    """A volume's index entry: ``index.csv``, or ``index.partNNN.csv`` in volume NNN of a split
    archive (so the volumes extracted into one directory keep every index). Reserved: no folder
    at the root takes such a name (``ArchiveFolders``), and message entries are in folders."""
    return f"index.part{volume:03d}.csv" if split else "index.csv"


def message_file_name(sequence: int, subject: str) -> str:
    return f"{sequence:06d}_{safe_subject(subject)}.eml"


def message_entry_name(archive_folder: str, sequence: int, subject: str) -> str:
    """``archive_folder`` is the folder's archive path (``ArchiveFolders.path``)."""
    return f"{archive_folder}/{message_file_name(sequence, subject)}"


def clean_prefix(prefix: str) -> str:
    return "/".join(p for p in (prefix or "").strip().split("/") if p)


def clean_file_name(file_name: str, extension: str) -> str:
    name = (file_name or "").strip().rsplit("/", 1)[-1]
    if name.lower().endswith("." + extension):
        name = name[: -len(extension) - 1]
    return name or "mailbox"


def volume_suffix(number: int, extension: str, *, split: bool) -> str:
    """``.zip`` for an archive in one file; ``.part001.zip``, ``.part002.zip``... once it is
    split (the first volume too, as ``SplittingPstWriter`` names PST parts)."""
    return f".part{number:03d}.{extension}" if split else f".{extension}"


def object_key(prefix: str, file_name: str, suffix: str) -> str:
    """``object_key("backups/2024", "alice", ".zip")`` → ``backups/2024/alice.zip``."""
    prefix = clean_prefix(prefix)
    return f"{prefix}/{file_name}{suffix}" if prefix else f"{file_name}{suffix}"
