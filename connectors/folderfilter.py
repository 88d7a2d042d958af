"""Which folders a request backs up: include / exclude lists shared by every source.

A request names folders the way the user sees them: decoded Unicode, ``/`` between levels.
A pattern selects that folder and everything below it (``Projekte`` selects ``Projekte/2024``,
not ``Projekte-alt``). Matching ignores case and Unicode normalisation differences, because
users type names and servers disagree on both. Exclusion wins over inclusion; an empty
include list means every folder.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable


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
