"""Which files of the bucket a restore reads, and where its own report goes.

A restore request names its archive as users know it (DESIGN.md, "Restore rows"):

- a file: ``mail/2026/user1.zip`` (or ``.pst``);
- a split archive by its first (or any) volume, ``mail/2026/user1.part001.zip``, or by its base
  name ``mail/2026/user1``: every volume ``.part001`` .. ``.partNNN``, in order, with none missing.

``resolve_archive`` turns that into the list of keys to read with one listing of the base name
(so it is cheap enough to run when the request is submitted, and again when it runs).

A restore writes ``PREFIX/FILE.restore-<token>.report.csv`` and ``.summary.json`` beside the
archive (``restore_file_name``): never ``FILE.report.csv``, which is the backup's own report, so
no restore can overwrite what describes the archive it reads.
"""

from __future__ import annotations

import posixpath
import re

from connectors.model import SourceError

_VOLUME = re.compile(r"^(?P<base>.+)\.part(?P<number>\d{3,})\.(?P<ext>zip|pst)$", re.IGNORECASE)
_EXTENSION = re.compile(r"\.(zip|pst)$", re.IGNORECASE)


class ArchiveNotFound(SourceError):
    """The archive a restore names is not in the bucket (or is incomplete); the message says why."""


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


def base_name(key: str) -> str:
    """``mail/user1.part002.zip`` → ``mail/user1``; ``mail/user1.zip`` → ``mail/user1``."""
    match = _VOLUME.match(key)
    if match:
        return match.group("base")
    return _EXTENSION.sub("", key)


def restore_file_name(archive_key: str, token: str) -> tuple[str, str]:
    """(prefix, file name) of a restore's report and summary: beside the archive, under its stem
    plus ``.restore-<token>`` (see the module docstring)."""
    prefix, stem = posixpath.split(base_name(archive_key))
    return prefix, f"{stem[:150]}.restore-{token}"


def resolve_archive(client, bucket: str, key: str, extension: str) -> list[str]:
    """The keys of the archive's files in reading order; ArchiveNotFound when there is none, or
    a split archive misses a volume. ``extension`` is the request type's format (zip | pst)."""
    base = base_name(key)
    single = f"{base}.{extension}"
    wanted = re.compile(rf"^{re.escape(base)}\.part(\d{{3,}})\.{re.escape(extension)}$", re.IGNORECASE)
    found_single, volumes = False, {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            name = obj["Key"]
            if name == single:
                found_single = True
            elif match := wanted.match(name):
                volumes[int(match.group(1))] = name
    given_volume = bool(_VOLUME.match(key))
    if found_single and not given_volume:
        return [single]
    if volumes:
        numbers = sorted(volumes)
        missing = [n for n in range(1, numbers[-1] + 1) if n not in volumes]
        if missing:
            raise ArchiveNotFound(f"The split archive {base} misses volume(s) "
                                  f"{', '.join(f'part{n:03d}' for n in missing)}.")
        return [volumes[n] for n in numbers]
    if found_single:
        return [single]
    raise ArchiveNotFound(f"No archive {key} in the bucket {bucket} (looked for {single} and "
                          f"{base}.partNNN.{extension}).")
