"""Microsoft Graph source: the folder tree (hidden folders too) and each message's MIME (``$value``).

Rules Graph imposes, and how this module keeps them:
- at most 4 concurrent requests per app and mailbox: every request (including reading a
  streamed ``$value`` to its end) holds one slot of a semaphore of ``max_concurrency``;
  fetching uses a thread pool of that size and yields messages in the listed order;
- 429/503 carry ``Retry-After``, which is obeyed (capped); other transient failures back off
  exponentially with jitter; throttling that lasts ``max_throttle_wait`` raises TransientError;
- ``@odata.nextLink`` is followed verbatim (its ``$skiptoken`` is opaque);
- a 401 asks the token provider for a fresh token once (``provider(force_refresh=True)``);
- Graph also allows 10,000 requests per 10 minutes per app and mailbox: pass
  ``quota=RedisQuota(url, graph_quota_key(client_id, upn), limit=10_000, window=600, burst=50)`` to pace
  every worker of that mailbox under it (one unit per request).

Works with delegated tokens (``mailbox=None`` → ``/me``) and app-only tokens
(``mailbox="user@tenant"`` → ``/users/{upn}``). Folder paths are display names joined with
``/``; a ``/`` inside a name becomes ``∕`` (U+2215) so it cannot fake a level.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

import requests

from connectors.folderfilter import FolderFilter
from connectors.model import (
    AuthenticationFailed,
    Folder,
    FolderUnavailable,
    Message,
    MessageFailure,
    SourceError,
    TransientError,
)
from connectors.sources import Source
from connectors.sources.ratelimit import NoQuota, Quota
from connectors.sources.tokens import MICROSOFT_GRAPH_URL, http_session

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 4
MESSAGE_PAGE_SIZE = 250  # Graph allows up to 1000; smaller pages keep each request short
FOLDER_PAGE_SIZE = 100
NAME_SLASH = "\u2215"  # DIVISION SLASH stands in for '/' inside one folder's name
MESSAGE_FIELDS = "id,receivedDateTime,isRead,flag"
TokenProvider = Callable[..., str]


class _ResyncRequired(Exception):
    """A delta link Graph no longer honours (410 Gone / resyncRequired): list afresh."""


class _NotFound(Exception):
    """Graph said 404 (a folder or message that vanished after listing)."""


class GraphThrottled(TransientError):
    """Graph kept answering 429/503 for ``max_throttle_wait`` seconds: the job must resume later."""


@dataclass(frozen=True)
class _Meta:
    received: dt.datetime | None
    flags: tuple[str, ...]


def folder_name(display_name: str) -> str:
    return display_name.replace("/", NAME_SLASH)


def graph_filter(since: date | None, before: date | None) -> str | None:
    terms = []
    if since:
        terms.append(f"receivedDateTime ge {since.isoformat()}T00:00:00Z")
    if before:
        terms.append(f"receivedDateTime lt {before.isoformat()}T00:00:00Z")
    return " and ".join(terms) or None


def retry_after_seconds(value: str | None, default: float) -> float:
    """``Retry-After`` as delta-seconds or an HTTP date; ``default`` when absent or unreadable."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    except (TypeError, ValueError):
        return default


def _meta(item: dict) -> _Meta:
    received = item.get("receivedDateTime")
    flags = ["\\Seen"] if item.get("isRead") else []
    if (item.get("flag") or {}).get("flagStatus") == "flagged":
        flags.append("\\Flagged")
    when = dt.datetime.fromisoformat(received.replace("Z", "+00:00")) if received else None
    return _Meta(when, tuple(flags))


class GraphSource(Source):
    def __init__(self, token_provider: TokenProvider | str, *, mailbox: str | None = None,
                 graph_url: str = MICROSOFT_GRAPH_URL, ca_bundle: str | None = None,
                 include: Iterable[str] = (), exclude: Iterable[str] = (),
                 max_concurrency: int = MAX_CONCURRENCY, page_size: int = MESSAGE_PAGE_SIZE,
                 max_retries: int = 6, max_retry_after: float = 300.0, max_throttle_wait: float = 900.0,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, timeout: float = 300.0,
                 immutable_ids: bool = True, quota: Quota | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        """``token_provider(force_refresh=False) -> str`` (e.g. tokens.MicrosoftTokenProvider) or a token.

        ``mailbox`` is the UPN / object id for app-only tokens, None for the signed-in user.
        ``include`` / ``exclude`` use the shared folder-path semantics (connectors.folderfilter).
        """
        if isinstance(token_provider, str):
            fixed = token_provider
            token_provider = lambda force_refresh=False: fixed  # noqa: E731
        self.token_provider = token_provider
        self.mailbox = mailbox
        self.graph_url = graph_url.rstrip("/")
        self.base = f"{self.graph_url}/users/{quote(mailbox, safe='@')}" if mailbox else f"{self.graph_url}/me"
        self.ca_bundle = ca_bundle
        self.filter = FolderFilter(include, exclude)
        self._excluded = FolderFilter(exclude=exclude)  # accepts() is False inside excluded subtrees
        self.max_concurrency = max(1, min(max_concurrency, MAX_CONCURRENCY))
        self.page_size = page_size
        self.max_retries, self.max_retry_after = max_retries, max_retry_after
        self.max_throttle_wait = max_throttle_wait
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.timeout = timeout
        self.immutable_ids = immutable_ids
        self.quota = quota or NoQuota()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._local = threading.local()
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self._meta: dict[str, _Meta] = {}
        self.stats: dict[str, int] = {"requests": 0, "throttled": 0, "retried": 0, "token_refreshes": 0}
        self._stats_lock = threading.Lock()

    # --- HTTP ------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = http_session(self.ca_bundle)
        return session

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _current_token(self, stale: str | None = None) -> str:
        """The cached token; with ``stale`` (the one Graph refused) ask the provider for a new one once."""
        with self._token_lock:
            if self._token is None:
                self._token = self.token_provider()
            elif stale is not None and self._token == stale:
                self._token = self.token_provider(force_refresh=True)
                self._count("token_refreshes")
            return self._token

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** attempt) * (0.5 + self.rng.random() / 2)

    def _send(self, url: str, *, stream: bool) -> tuple[int, dict, bytes | dict, str]:
        """One request holding a concurrency slot until its body is fully read."""
        token = self._current_token()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self.immutable_ids:
            headers["Prefer"] = 'IdType="ImmutableId"'
        self.quota.acquire(1)
        with self._slots:
            self._count("requests")
            response = self._session().get(url, headers=headers, stream=stream, timeout=self.timeout)
            try:
                if stream and response.status_code == 200:
                    body: bytes | dict = b"".join(response.iter_content(chunk_size=1 << 20))
                else:
                    body = response.json() if response.content else {}
            except ValueError:
                body = {}
            finally:
                response.close()
        return response.status_code, response.headers, body, token

    def _get(self, url: str, *, stream: bool = False) -> bytes | dict:
        """GET with token refresh, Retry-After, backoff; raise SourceError subclasses when hopeless."""
        attempt, throttle_wait, refreshed = 0, 0.0, False
        while True:
            try:
                status, headers, body, token = self._send(url, stream=stream)
            except requests.RequestException as exc:
                if attempt >= self.max_retries:
                    raise TransientError(f"Cannot reach Microsoft Graph ({type(exc).__name__}).") from None
                self._retry_sleep(self._backoff(attempt))
                attempt += 1
                continue
            if status == 200:
                return body
            code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
            if status == 401 and not refreshed:
                refreshed = True
                self._current_token(stale=token)
                continue
            if status == 401:
                raise AuthenticationFailed("Microsoft Graph rejected the access token even after a refresh; "
                                           "the consent may have been revoked.")
            if status == 403:
                raise AuthenticationFailed(
                    f"Microsoft Graph denied access to the mailbox ({code or 'forbidden'}): app-only access "
                    "needs the Mail.Read application permission with admin consent; delegated access "
                    "only reaches the signed-in user's own mailbox.")
            if status == 404:
                raise _NotFound(code)
            if status == 410 or code in ("resyncRequired", "SyncStateNotFound", "SyncStateInvalid"):
                raise _ResyncRequired(code)
            if status in (429, 503):
                delay = min(self.max_retry_after,
                            retry_after_seconds(headers.get("Retry-After"), self._backoff(attempt)))
                self._count("throttled")
                log.info("Graph answered %s; waiting %.1f s (Retry-After)", status, delay)
                throttle_wait += delay
                if throttle_wait > self.max_throttle_wait:
                    raise GraphThrottled("Microsoft Graph kept throttling this mailbox; the job will resume "
                                         "later.")
                self._retry_sleep(delay)
                attempt += 1
                continue
            if status in (408, 500, 502, 504) and attempt < self.max_retries:
                self._retry_sleep(self._backoff(attempt))
                attempt += 1
                continue
            if status >= 500 or status == 408:
                raise TransientError(f"Microsoft Graph kept failing (HTTP {status} {code}).")
            raise SourceError(f"Microsoft Graph refused the request (HTTP {status} {code}).")

    def _retry_sleep(self, seconds: float) -> None:
        self._count("retried")
        self.sleep(seconds)

    def _pages(self, url: str) -> Iterator[dict]:
        while url:
            page = self._get(url)
            yield from page.get("value", [])
            url = page.get("@odata.nextLink")  # verbatim: its $skiptoken is opaque

    # --- Source ------------------------------------------------------------------------------
    def test_connection(self, *, timeout: float | None = None) -> list[Folder]:
        """The folders with the API's own totals; with ``timeout``, one try per call, bounded."""
        if timeout is not None:
            self.timeout, self.max_retries, self.max_throttle_wait = timeout, 0, timeout
        return self.list_folders()

    def list_folders(self) -> list[Folder]:
        """Every folder (hidden ones too), parents before children, after include/exclude."""
        folders: list[Folder] = []
        try:
            top = list(self._pages(f"{self.base}/mailFolders?includeHiddenFolders=true&$top={FOLDER_PAGE_SIZE}"))
        except _NotFound:
            raise SourceError("Microsoft Graph does not know this mailbox (wrong address, or not an "
                              "Exchange Online mailbox).") from None
        self._walk(top, "", folders)
        return folders

    def _walk(self, items: list[dict], parent_path: str, out: list[Folder]) -> None:
        for item in items:
            path = f"{parent_path}/{folder_name(item['displayName'])}" if parent_path else \
                folder_name(item["displayName"])
            if not self._excluded.accepts(path):
                continue  # an excluded folder takes its subfolders with it: don't even list them
            if self.filter.accepts(path):
                out.append(Folder(path, item["id"], message_count=item.get("totalItemCount")))
            if item.get("childFolderCount"):
                url = (f"{self.base}/mailFolders/{quote(item['id'], safe='')}/childFolders"
                       f"?includeHiddenFolders=true&$top={FOLDER_PAGE_SIZE}")
                try:
                    children = list(self._pages(url))
                except _NotFound:
                    continue  # deleted while we walked the tree
                self._walk(children, path, out)

    def list_message_ids(self, folder: Folder, *, since: date | None = None,
                         before: date | None = None) -> list[str]:
        """The folder's ids in the window, oldest first (Graph lists newest first)."""
        url = (f"{self.base}/mailFolders/{quote(folder.ref, safe='')}/messages"
               f"?$select={MESSAGE_FIELDS}&$top={self.page_size}")
        expression = graph_filter(since, before)
        if expression:
            url += "&$filter=" + quote(expression, safe="")
        ids: list[str] = []
        seen: set[str] = set()
        try:
            for item in self._pages(url):
                if item["id"] not in seen:
                    seen.add(item["id"])
                    ids.append(item["id"])
                    self._meta[item["id"]] = _meta(item)
        except _NotFound:
            raise FolderUnavailable(f"The folder {folder.path!r} no longer exists.") from None
        ids.reverse()
        return ids

    # --- incremental series (connectors.pipeline.series) ---------------------------------------
    def _delta(self, url: str) -> tuple[list[str], set[str], str]:
        """(ids added or changed, ids removed, the next deltaLink), every page of one delta round."""
        added: dict[str, None] = {}
        removed: set[str] = set()
        while True:
            page = self._get(url)
            for item in page.get("value", []):
                if "@removed" in item:
                    removed.add(item["id"])
                    added.pop(item["id"], None)
                else:
                    added[item["id"]] = None
                    removed.discard(item["id"])
                    self._meta[item["id"]] = _meta(item)
            if page.get("@odata.nextLink"):
                url = page["@odata.nextLink"]  # verbatim
                continue
            return list(added), removed, page.get("@odata.deltaLink", "")

    def series_plan(self, folder: Folder, previous: dict | None, archived, *,
                    since: date | None = None, before: date | None = None):
        """This run's plan: the changes since the previous run's ``deltaLink`` (one request when
        nothing changed), less what the series archived; without a cursor, with a date window, or
        when Graph answers 410 / resyncRequired: a fresh delta round for the next cursor, then a
        full listing less what the series archived. The ids that failed in the previous run
        (``retry_ids``) are asked again. A deltaLink is only followed on this
        source's own Graph host (it comes back from the database, and carries the token)."""
        from connectors.pipeline.series import FULL, NEW, UNCHANGED, FolderPlan, full_listing_plan

        link = (previous or {}).get("delta_link") or ""
        initial = (f"{self.base}/mailFolders/{quote(folder.ref, safe='')}/messages/delta"
                   f"?$select={MESSAGE_FIELDS}")
        try:
            if link and link.startswith(self.graph_url + "/") and not since and not before:
                try:
                    added, removed, next_link = self._delta(link)
                except _ResyncRequired:
                    log.info("Graph asks for a resync of %r; listing it afresh", folder.path)
                else:
                    retry = [i for i in (previous or {}).get("retry_ids") or () if i not in removed]
                    if not added and not removed and not retry:
                        return FolderPlan([], {"delta_link": next_link or link}, mode=UNCHANGED)
                    done = {a.source_id for a in archived(folder.path)}
                    ids = [i for i in dict.fromkeys([*retry, *added]) if i not in done]
                    return FolderPlan(ids, {"delta_link": next_link or link}, expunged=len(removed & done),
                                      mode=NEW)
            _, _, next_link = self._delta(initial)  # first: what arrives meanwhile is in the next round
            ids = self.list_message_ids(folder, since=since, before=before)
        except _NotFound:
            raise FolderUnavailable(f"The folder {folder.path!r} no longer exists.") from None
        plan = full_listing_plan(ids, archived(folder.path) if previous else ())
        plan.cursor = {"delta_link": next_link} if next_link else {}
        plan.mode = "resync" if previous else FULL
        return plan

    def fetch_messages(self, folder: Folder, ids: Iterable[str]) -> Iterator[Message | MessageFailure]:
        ids = list(ids)
        executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="graph-fetch")
        try:
            window: list[Future] = []
            position = 0
            while position < len(ids) or window:
                while position < len(ids) and len(window) < self.max_concurrency * 2:
                    window.append(executor.submit(self._fetch_one, folder, ids[position]))
                    position += 1
                yield window.pop(0).result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _fetch_one(self, folder: Folder, message_id: str) -> Message | MessageFailure:
        quoted = quote(message_id, safe="")
        try:
            meta = self._meta.get(message_id)
            if meta is None:  # not listed by this instance (e.g. a resumed job): one small request
                meta = _meta(self._get(f"{self.base}/messages/{quoted}?$select={MESSAGE_FIELDS}"))
            raw = self._get(f"{self.base}/messages/{quoted}/$value", stream=True)
        except _NotFound:
            return MessageFailure(folder.path, message_id, "The message was deleted after it was listed.",
                                  status="skipped")
        except (GraphThrottled, AuthenticationFailed):
            raise  # the whole job must stop and resume; never turn these into lost messages
        except SourceError as exc:
            return MessageFailure(folder.path, message_id, str(exc))
        return Message(folder=folder.path, source_id=message_id, raw=raw, internal_date=meta.received,
                       flags=meta.flags)
