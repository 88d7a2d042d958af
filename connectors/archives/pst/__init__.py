"""Streaming writer of Unicode PST files (Outlook personal folders), a structural checker, and
the reader a restore uses.

    from connectors.archives.pst import PstWriter, SplittingPstWriter, check_pst
    from connectors.archives.pst.restore import PstArchiveReader

Written from Microsoft's [MS-PST] specification; see ``writer`` for the API, ``checker``
for what ``check_pst`` verifies, and ``restore`` (on ``access`` and ``rebuild``) for reading a
PST back as MIME messages with their folders, flags and dates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .writer import PstWriter, SplittingPstWriter

if TYPE_CHECKING:
    from .checker import check_pst

__all__ = ["PstWriter", "SplittingPstWriter", "check_pst"]


def __getattr__(name: str):
    # Imported on first use so that ``python -m connectors.archives.pst.checker`` runs the module once.
    if name == "check_pst":
        from .checker import check_pst

        return check_pst
    raise AttributeError(name)
