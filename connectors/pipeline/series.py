"""Incremental series: what one run of a series knows of the earlier runs, and what it plans.

A series is a sequence of backup runs of one mailbox into one ``PREFIX/FILE`` stem (the portal
derives its key; see ``requests_app.series``). The engine sees a series through
``SeriesContext`` on the ``ExportSpec``:

- ``cursors``: per folder path, the cursor the previous *completed* run committed (a plain
  JSON dict whose meaning belongs to the source: IMAP keeps UIDVALIDITY, UIDNEXT, MESSAGES,
  the highest UID it looked at, HIGHESTMODSEQ where CONDSTORE is offered, and the UIDs that
  failed and are retried);
- ``archived(folder)``: what the completed runs of the series archived from that folder
  (``Archived``: source id, Message-ID, size, internal date when recorded), read lazily and
  only for a folder that needs it (a UIDVALIDITY change, or a source without cursors).

For each folder the source (or ``full_listing_plan`` for a source without cursors) makes a
``FolderPlan``: the ids to fetch, the cursor to commit, how many messages disappeared since
the previous run, and how it decided (``mode``). The skeleton fetches only ``plan.ids``.

Invariants:
- A cursor is committed only with a completed run (it travels in the run's result and
  ``summary.json``; the portal reads it back only from completed runs), so a failed or
  cancelled run moves nothing: the next run starts from the same cursor.
- A plan never leaves a gap: every message present now that no completed run archived is in
  ``ids`` (duplicates are preferred to losses when identity is uncertain).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# FolderPlan.mode
FULL, UNCHANGED, NEW, REMATCHED = "full", "unchanged", "new", "rematched"


@dataclass(frozen=True)
class Archived:
    """One message an earlier completed run of the series archived."""

    source_id: str
    message_id: str = ""
    size: int = 0
    internal_date: str = ""  # ISO 8601 when the records keep it, else ""
    # What the report keeps of the Date, From and Subject headers (``mimeinfo.extract``): how a
    # message without a Message-ID is recognised
    date: str = ""
    from_: str = ""
    subject: str = ""


@dataclass
class SeriesContext:
    """A run's view of its series (see the module docstring)."""

    key: str
    run: int = 1  # 1: the first (full) run
    parent: dict = field(default_factory=dict)  # the previous completed run: request, run, archives, summary_key
    cursors: dict[str, dict] = field(default_factory=dict)
    archived: Callable[[str], Iterable[Archived]] = lambda folder: ()

    def describe(self) -> dict:
        return {"key": self.key, "run": self.run, "parent": dict(self.parent),
                "resumed_from": {path: dict(c) for path, c in self.cursors.items()}}


@dataclass
class FolderPlan:
    """What one run fetches from one folder, and the cursor it commits if it completes."""

    ids: list[str]
    cursor: dict = field(default_factory=dict)
    expunged: int = 0  # messages an earlier run archived that the source no longer has
    mode: str = FULL
    listed: int = 0  # messages present in the folder now (what the run compared against)

    def to_json(self) -> dict:
        return {"mode": self.mode, "new": len(self.ids), "expunged": self.expunged,
                "present": self.listed, "cursor": dict(self.cursor)}


def identity_counter(archived: Iterable[Archived]) -> Counter:
    """A multiset of (Message-ID, size) of what was archived: two copies of one message in a
    folder match two messages, never more."""
    return Counter((a.message_id, a.size) for a in archived if a.message_id)


def full_listing_plan(ids: list[str], archived: Iterable[Archived]) -> FolderPlan:
    """For a source without cursors: list everything, fetch only ids no completed run archived
    (source ids are stable for such sources: Gmail message ids, Graph item ids)."""
    done = {a.source_id for a in archived}
    present = set(ids)
    return FolderPlan([i for i in ids if i not in done], {}, expunged=len(done - present),
                      mode=FULL if not done else NEW, listed=len(ids))


def utc_iso(when: dt.datetime | None) -> str:
    """An internal date as compared across runs (UTC, seconds); "" when unknown."""
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.astimezone()  # imapclient's naive local times
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def normalize_date(value) -> str:
    """A recorded internal date (a datetime or an ISO 8601 string) as ``utc_iso`` writes it."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return ""
    return utc_iso(value) if isinstance(value, dt.datetime) else ""


def replace_ids(plan: FolderPlan, ids: list[str]) -> FolderPlan:
    return dataclasses.replace(plan, ids=ids)
