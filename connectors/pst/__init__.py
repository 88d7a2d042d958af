"""Streaming writer of Unicode PST files (Outlook personal folders), and a structural checker.

    from connectors.pst import PstWriter, SplittingPstWriter, check_pst

Written from Microsoft's [MS-PST] specification; see ``writer`` for the API.
"""

from .writer import PstWriter, SplittingPstWriter

__all__ = ["PstWriter", "SplittingPstWriter"]
