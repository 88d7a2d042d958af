"""Which files of the bucket an archive key names: the one resolver of restore, browse and the readers.

A user names an archive as the portal wrote it (DESIGN.md, "Restore rows"); ``EXT`` is the
format (zip | pst), matched case-insensitively:

- a file: ``PREFIX/FILE.EXT``;
- a split archive by any of its volumes ``FILE.partNNN.EXT``, or by its base name ``FILE``:
  every volume ``.part001`` .. ``.partNNN`` in order, none missing;
- an incremental series by its base name ``PREFIX/FILE``: every run in run order — run 1 is
  ``FILE.EXT`` (or its volumes), run N is ``FILE.rNNNN.EXT`` (or ``FILE.rNNNN.partNNN.EXT``).
  Numbers may be skipped (a failed run, a run with nothing new writes no archive); a volume may
  not. A single run is still restored by its own key (``FILE.r0002.zip``, or ``FILE.r0002``);
- any other object under exactly the key given (a ZIP another tool wrote, whatever its name).

``resolve`` lists the base name once (one paginated ListObjectsV2), so it is cheap enough to run
when a request is submitted and again when it runs.

Invariants: the volumes returned exist, are complete, and are in reading order (run, then
volume); nothing is returned twice; no key outside ``FILE``'s own names is ever picked up (a
prefix such as ``mail/ali`` does not name ``mail/alice.zip``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from connectors.model import SourceError
from connectors.storage.s3.ranged import list_keys
from connectors.storage.s3.sink import S3Failure

_VOLUME = re.compile(r"^(?P<base>.+)\.part(?P<number>\d{3,})\.(?P<ext>zip|pst)$", re.IGNORECASE)
_EXTENSION = re.compile(r"\.(zip|pst)$", re.IGNORECASE)
_RUN = re.compile(r"^\.r(?P<run>\d{4,})$")


class ArchiveNotFound(SourceError, S3Failure):
    """The archive a key names is not in the bucket, or is incomplete; the message says which."""


@dataclass(frozen=True)
class Volume:
    key: str
    size: int | None  # None: not listed (a HEAD finds it when the volume is opened)
    run: int = 1  # the series run it belongs to (1 outside a series)


def base_name(key: str) -> str:
    """``mail/user1.part002.zip`` → ``mail/user1``; ``mail/user1.zip`` → ``mail/user1``."""
    match = _VOLUME.match(key)
    if match:
        return match.group("base")
    return _EXTENSION.sub("", key)


def _file_of(name: str, base: str, extension: str) -> tuple[str, int | None] | None:
    """For a listed key under ``base``: (stem, volume number or None) when it is one of
    ``base``'s archive files of ``extension``, else None."""
    match = _VOLUME.match(name)
    if match and match["ext"].lower() == extension:
        return match["base"], int(match["number"])
    if _EXTENSION.search(name) and name[-3:].lower() == extension:
        return name[:-4], None
    return None


def _complete(stem: str, files: dict[int | None, tuple[str, int]], run: int, what: str) -> list[Volume]:
    """One archive (run) as volumes: its single file, else all its parts 001..N."""
    if None in files:
        key, size = files[None]
        return [Volume(key, size, run)]
    numbers = sorted(files)
    missing = [n for n in range(1, numbers[-1] + 1) if n not in files]
    if missing:
        more = " ..." if len(missing) > 5 else ""
        ext = files[numbers[0]][0].rsplit(".", 1)[-1]
        short = ", ".join(f"part{n:03d}" for n in missing[:5]) + more
        full = ", ".join(f"{stem}.part{n:03d}.{ext}" for n in missing[:5]) + more
        raise ArchiveNotFound(f"The split archive {stem}{what} misses volume(s) {short}: {full} missing.")
    return [Volume(files[n][0], files[n][1], run) for n in numbers]


def resolve(client, bucket: str, key: str, extension: str) -> list[Volume]:
    """The volumes ``key`` names, in reading order (see the module docstring); ArchiveNotFound
    when there are none, or when a split archive (or a run of a series) misses a volume."""
    key = key.strip().lstrip("/")
    extension = extension.lower()
    if not key:
        raise ArchiveNotFound("No archive key given.")
    base = base_name(key)
    named_volume = bool(_VOLUME.match(key))
    named_file = bool(_EXTENSION.search(key)) and not named_volume
    listed = dict(list_keys(client, bucket, base))
    # stem -> {volume number or None (a single file): (key, size)}
    archives: dict[str, dict[int | None, tuple[str, int]]] = {}
    for name, size in listed.items():
        found = _file_of(name, base, extension)
        if found:
            archives.setdefault(found[0], {})[found[1]] = (name, size)
    own = archives.get(base, {})
    if named_volume or named_file:
        # One archive, by its own name: the file itself, else (a volume, or FILE.EXT not there) its parts.
        if named_file and key in listed:
            return [Volume(key, listed[key])]
        parts = {n: v for n, v in own.items() if n is not None}
        if parts:
            return _complete(base, parts, 1, "")
        if key in listed:
            return [Volume(key, listed[key])]  # a foreign archive under any name
        raise ArchiveNotFound(f"No archive {key} in the bucket {bucket}.")
    runs = {int(m["run"]): stem for stem in archives
            if stem.startswith(base) and (m := _RUN.match(stem[len(base):]))}
    if own:
        runs[1] = base
    if runs:
        out: list[Volume] = []
        for number in sorted(runs):
            stem = runs[number]
            what = f" (run {number} of the series {base})" if len(runs) > 1 else ""
            out.extend(_complete(stem, archives[stem], number, what))
        return out
    if key in listed:
        return [Volume(key, listed[key])]
    raise ArchiveNotFound(f"No archive {key} in the bucket {bucket} (looked for {base}.{extension}, "
                          f"{base}.partNNN.{extension} and the runs {base}.rNNNN.{extension}).")
