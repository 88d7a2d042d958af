"""Names in the bucket and inside the archive.

Bucket keys: ``PREFIX/FILE.zip`` (``.pst``), or ``FILE.part001.zip``, ``FILE.part002.zip``...
(``.partNNN.pst``) when the archive is split into volumes — never ``FILE.zip`` plus parts, with
``PREFIX/FILE.report.csv`` and ``PREFIX/FILE.summary.json`` beside it.

Entry names: ``FOLDER/PATH/NNNNNN_subject.eml`` — the decoded folder path with '/' between
levels, a per-folder sequence number (unique, so names never collide, even for duplicate
subjects), and a subject made safe for every unzip tool and file system. Invariant: no entry
name is absolute, contains '..' / '.' / empty levels, or control characters (zip-slip safe),
whatever a source calls its folders.
"""

from __future__ import annotations

import re
import unicodedata

SUBJECT_CHARS = 60
_UNSAFE = re.compile(r'[\x00-\x1f\x7f\\/:*?"<>|]+')
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_subject(subject: str, limit: int = SUBJECT_CHARS) -> str:
    text = _UNSAFE.sub("_", unicodedata.normalize("NFC", subject or ""))
    text = _SPACES.sub(" ", text).strip(" ._")
    text = re.sub(r"_{2,}", "_", text)
    if len(text) > limit:
        text = text[:limit].rstrip(" ._")
    return text or "no_subject"


def safe_folder_path(path: str) -> str:
    parts = []
    for part in (path or "").split("/"):
        part = _CONTROL.sub("", part).strip()
        if part in ("", ".", ".."):
            part = "_" + part if part else ""
        if part:
            parts.append(part)
    return "/".join(parts) or "_"


def message_entry_name(folder: str, sequence: int, subject: str) -> str:
    return f"{safe_folder_path(folder)}/{sequence:06d}_{safe_subject(subject)}.eml"


def directory_entry_name(folder: str) -> str:
    return safe_folder_path(folder) + "/"


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
