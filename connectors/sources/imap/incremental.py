"""An IMAP folder's plan for one run of an incremental series (``connectors.pipeline.series``).

The cursor of a folder (a JSON dict) is what STATUS said when the run started —
``uidvalidity``, ``uidnext``, ``messages`` and, where CONDSTORE is offered, ``highestmodseq``
— plus ``highest`` (the highest UID the run looked at) and ``retry_ids`` (source ids that
failed, which the next run fetches again; filled in by the skeleton).

Per folder, cheapest first:
1. **unchanged** — same UIDVALIDITY, same UIDNEXT, same MESSAGES, nothing to retry: one
   STATUS, no SELECT, no FETCH. (UIDNEXT only grows when a message arrives, MESSAGES changes
   when one is expunged; both equal means the set of UIDs is the same.)
2. **new** — same UIDVALIDITY: UID SEARCH ``highest+1:*`` (window by window), plus the ids to
   retry that are still there. Messages expunged since = the previous MESSAGES minus the old
   messages still present (present now minus those that arrived since, UID ≥ the old UIDNEXT).
3. **rematched** — UIDVALIDITY changed (the server rebuilt its index), or the series archived
   this folder without leaving a cursor: every message's Message-ID, RFC822.SIZE and
   INTERNALDATE are fetched as headers and matched against what the series archived
   (Message-ID + size, and the internal date when the records keep one; a message without a
   Message-ID by size + Date + From + Subject), as multisets (two archived copies match two
   messages, never three); only the unmatched ones are fetched.
4. **full** — the first run of the folder in the series: everything in the date window.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable

from connectors.model import Folder
from connectors.pipeline.series import (
    FULL,
    NEW,
    REMATCHED,
    UNCHANGED,
    Archived,
    FolderPlan,
    utc_iso,
)


def _cursor(status: dict[str, int], highest: int) -> dict:
    cursor = {"uidvalidity": status.get("uidvalidity", 0), "uidnext": status.get("uidnext", 0),
              "messages": status.get("messages", 0), "highest": highest}
    if "highestmodseq" in status:
        cursor["highestmodseq"] = status["highestmodseq"]
    return cursor


def _retry_uids(previous: dict, uidvalidity: int) -> list[int]:
    out = []
    for sid in previous.get("retry_ids") or ():
        uv, _, uid = str(sid).partition(":")
        if uv.isdigit() and uid.isdigit() and int(uv) == uidvalidity:
            out.append(int(uid))
    return sorted(set(out))


def plan_folder(source, folder: Folder, previous: dict | None, archived: Callable[[str], Iterable[Archived]], *,
                since: dt.date | None = None, before: dt.date | None = None) -> FolderPlan:
    """The plan for ``folder`` (see the module docstring). ``source`` is an ``ImapSource``;
    raises ``FolderUnavailable`` as its listing does."""
    if not folder.selectable:
        return FolderPlan([], {}, mode=FULL)
    status = source.folder_status(folder)
    uidvalidity = status.get("uidvalidity", 0)
    previous = previous or {}
    if previous and previous.get("uidvalidity") == uidvalidity:
        retry = _retry_uids(previous, uidvalidity)
        if (status.get("uidnext") == previous.get("uidnext") and status.get("messages") == previous.get("messages")
                and not retry):
            return FolderPlan([], _cursor(status, int(previous.get("highest", 0))), mode=UNCHANGED,
                              listed=status.get("messages", 0))
        highest = int(previous.get("highest", 0))
        listed_uv, after = source.list_uids(folder, min_uid=highest + 1)
        if listed_uv == uidvalidity:
            wanted = set(after)
            if since or before:  # the date window applies to what is fetched, not to the counts
                wanted = set(source.list_uids(folder, min_uid=highest + 1, since=since, before=before)[1])
            retry_present = source.present_uids(folder, uidvalidity, retry) if retry else []
            arrived = sum(1 for u in after if u >= int(previous.get("uidnext", 0)))
            old_present = status.get("messages", 0) - arrived
            expunged = max(0, int(previous.get("messages", 0)) - old_present)
            ids = [f"{uidvalidity}:{u}" for u in sorted(set(retry_present) | wanted)]
            return FolderPlan(ids, _cursor(status, max([highest, *after])), expunged=expunged, mode=NEW,
                              listed=status.get("messages", 0))
        status = source.folder_status(folder)  # renumbered between STATUS and SELECT
        uidvalidity = status.get("uidvalidity", 0)
    before_this = list(archived(folder.path)) if previous or _has_any(archived, folder.path) else []
    if not before_this:
        listed_uv, uids = source.list_uids(folder, since=since, before=before)
        return FolderPlan([f"{listed_uv}:{u}" for u in uids], _cursor(status, max(uids, default=0)),
                          mode=FULL, listed=len(uids))
    return _rematch(source, folder, status, previous, before_this, since=since, before=before)


def _has_any(archived, path: str) -> bool:
    return next(iter(archived(path)), None) is not None


def _rematch(source, folder: Folder, status: dict, previous: dict, before_this: list[Archived], *,
             since, before) -> FolderPlan:
    uidvalidity, all_uids = source.list_uids(folder)
    wanted = set(all_uids)
    if since or before:
        wanted = set(source.list_uids(folder, since=since, before=before)[1])
    with_date: Counter = Counter()
    without_date: Counter = Counter()
    without_id: Counter = Counter()
    for a in before_this:
        if not a.message_id:
            without_id[(a.size, a.date, a.from_, a.subject)] += 1
        elif a.internal_date:
            with_date[(a.message_id, a.size, a.internal_date)] += 1
        else:
            without_date[(a.message_id, a.size)] += 1
    identities = source.fetch_identities(folder, uidvalidity, all_uids)
    todo, matched = [], 0
    for uid in all_uids:
        message_id, size, when, info = identities.get(uid, ("", 0, None, None))
        key = (message_id, size, utc_iso(when))
        headers = (size, info.date, info.from_, info.subject) if info is not None else None
        if not message_id and headers is not None and without_id[headers] > 0:
            without_id[headers] -= 1
            matched += 1
        elif message_id and with_date[key] > 0:
            with_date[key] -= 1
            matched += 1
        elif message_id and without_date[(message_id, size)] > 0:
            without_date[(message_id, size)] -= 1
            matched += 1
        elif uid in wanted:
            todo.append(uid)
    known = int(previous["messages"]) if "messages" in previous else sum(with_date.values()) + sum(
        without_date.values()) + sum(without_id.values()) + matched
    return FolderPlan([f"{uidvalidity}:{u}" for u in todo], _cursor(status, max(all_uids, default=0)),
                      expunged=max(0, known - matched), mode=REMATCHED, listed=len(all_uids))
