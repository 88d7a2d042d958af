"""Which files of the bucket a restore reads, and where its own report goes.

A restore request names its archive as users know it (DESIGN.md, "Restore rows"):

- a file: ``mail/2026/user1.zip`` (or ``.pst``);
- a split archive by its first (or any) volume, ``mail/2026/user1.part001.zip``, or by its base
  name ``mail/2026/user1``: every volume ``.part001`` .. ``.partNNN``, in order, with none missing;
- an incremental series by its base name ``mail/2026/user1``: every run (``user1.zip``,
  ``user1.r0002.zip``, ...) in run order.

``resolve_archive`` turns that into the list of keys to read with one listing of the base name
(``connectors.archives.keys``, the resolver the ZIP reader uses too).

A restore writes ``PREFIX/FILE.restore-<token>.report.csv`` and ``.summary.json`` beside the
archive (``restore_file_name``): never ``FILE.report.csv``, which is the backup's own report, so
no restore can overwrite what describes the archive it reads.
"""

from __future__ import annotations

import posixpath
import re

from connectors.archives.keys import ArchiveNotFound, base_name, resolve

__all__ = ["ArchiveNotFound", "base_name", "key_problem", "resolve_archive", "restore_file_name"]

_EXTENSION = re.compile(r"\.(zip|pst)$", re.IGNORECASE)


def key_problem(key: str, extension: str) -> str:
    """Why ``key`` cannot name an archive of format ``extension``, or "" (no S3 call)."""
    if not key:
        return "Enter the archive's key (e.g. mail/2026/user1.zip)."
    if key.startswith("/") or key.endswith("/"):
        return "The key cannot start or end with '/'."
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "The key cannot contain empty, '.' or '..' parts."
    found = _EXTENSION.search(key)
    if found and found.group(1).lower() != extension:
        return f"This request type restores .{extension} archives, not .{found.group(1).lower()}."
    return ""


def restore_file_name(archive_key: str, token: str) -> tuple[str, str]:
    """(prefix, file name) of a restore's report and summary: beside the archive, under its stem
    plus ``.restore-<token>`` (see the module docstring)."""
    prefix, stem = posixpath.split(base_name(archive_key))
    return prefix, f"{stem[:150]}.restore-{token}"


def resolve_archive(client, bucket: str, key: str, extension: str) -> list[str]:
    """The keys of the archive's files in reading order (``connectors.archives.keys.resolve``:
    a file, a split archive's volumes, or every run of an incremental series); ArchiveNotFound
    when there is none, or a volume is missing. ``extension`` is the request type's format."""
    return [volume.key for volume in resolve(client, bucket, key, extension)]
