"""Which folders a request backs up: include / exclude lists shared by every source.

A request names folders the way the user sees them: decoded Unicode, ``/`` between levels.
A pattern selects that folder and everything below it (``Projekte`` selects ``Projekte/2024``,
not ``Projekte-alt``). Matching ignores case and Unicode normalisation differences, because
users type names and servers disagree on both. Exclusion wins over inclusion; an empty
include list means every folder.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

from connectors.model import SourceError

SHOWN_FOLDERS = 30  # how many of the source's folders an error lists


def normalise_folder(path: str) -> str:
    """Canonical form for comparisons: NFC, casefolded, no leading/trailing or doubled '/'."""
    parts = [p.strip() for p in unicodedata.normalize("NFC", path).split("/")]
    return "/".join(p for p in parts if p).casefold()


def _covers(pattern: str, path: str) -> bool:
    return path == pattern or path.startswith(pattern + "/")


class FolderFilter:
    """``accepts(path)`` is True when the folder (or one of its ancestors) is included and neither
    it nor an ancestor is excluded."""

    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        self.include = [n for n in (normalise_folder(p) for p in include) if n]
        self.exclude = [n for n in (normalise_folder(p) for p in exclude) if n]

    def accepts(self, path: str) -> bool:
        norm = normalise_folder(path)
        if any(_covers(p, norm) for p in self.exclude):
            return False
        return not self.include or any(_covers(p, norm) for p in self.include)

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)


class FolderNotFound(SourceError):
    """A folder named in "Folders to include" that the source does not have: refused before
    anything is written, so a typo never becomes an empty "completed" archive."""


def missing_includes(include: Iterable[str], paths: Iterable[str]) -> list[str]:
    """The include patterns, as typed, that select none of ``paths`` (same matching as
    ``FolderFilter``: a pattern is found when it names a folder or an ancestor of one)."""
    listed = [normalise_folder(p) for p in paths]
    return [p for p in include
            if (n := normalise_folder(p)) and not any(_covers(n, path) for path in listed)]


def check_includes(include: Sequence[str], paths: Sequence[str]) -> None:
    """Raise FolderNotFound naming each missing include folder and the folders the source has."""
    missing = missing_includes(include, paths)
    if not missing:
        return
    names = ", ".join(repr(m) for m in missing)
    shown = ", ".join(paths[:SHOWN_FOLDERS]) + (f" and {len(paths) - SHOWN_FOLDERS} more"
                                                  if len(paths) > SHOWN_FOLDERS else "")
    noun = "folder" if len(missing) == 1 else "folders"
    raise FolderNotFound(f"The source has no {noun} {names} (folders to include). "
                         + (f"Its folders are: {shown}." if paths else "It lists no folders."))


def nothing_matched(include: Sequence[str], exclude: Sequence[str], since=None, before=None) -> str:
    """The warning of a run whose folders and dates selected no message (it completes, empty)."""
    parts = []
    if include:
        parts.append("folders " + "; ".join(include))
    if exclude:
        parts.append("excluding " + "; ".join(exclude))
    if since:
        parts.append(f"since {since:%Y-%m-%d}")
    if before:
        parts.append(f"before {before:%Y-%m-%d}")
    return "0 messages matched: " + ", ".join(parts) + ". The archive is empty; check the filters."
