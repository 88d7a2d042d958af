"""Gmail API source: every message once, as Gmail's ``raw`` bytes, with its labels.

Gmail labels are many-to-many, so the archive has a single folder ("All Mail") and each
message records its label names (``Message.labels``) instead of being copied once per label.

Throughput and safety:
- ids are listed 500 per page; messages are fetched ``format=raw`` in batches of ≤ 50 through
  ``BatchHttpRequest`` posted to ``{api_url}batch/gmail/v1`` (``new_batch_http_request()``
  would ignore ``api_endpoint``);
- every call is paid for up front from a per-mailbox :mod:`connectors.sources.ratelimit` quota
  (15,000 units/min shared by all workers through Redis), so Gmail rarely has to throttle;
- a throttled batch part (429, or 403 ``userRateLimitExceeded``/``rateLimitExceeded``) is
  re-queued after an exponential backoff with jitter, never dropped: a message only leaves
  ``fetch_messages`` as a Message or as a MessageFailure with the reason (unlike Got-Your-Back
  issue 544, which dropped throttled messages and exited 0). If Gmail keeps throttling for
  ``max_throttle_wait`` seconds the fetch raises TransientError and the job resumes later.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from connectors.model import (
    AuthenticationFailed,
    Folder,
    Message,
    MessageFailure,
    SourceError,
    TransientError,
)
from connectors.sources import Source
from connectors.sources.ratelimit import NoQuota, Quota
from connectors.sources.tokens import google_refresh_failure

log = logging.getLogger(__name__)

GMAIL_API_URL = "https://gmail.googleapis.com/"
ALL_MAIL = "All Mail"
LIST_PAGE_SIZE = 500
MAX_BATCH_SIZE = 50
UNITS = {"messages.list": 5, "messages.get": 5, "labels.list": 1, "getProfile": 1, "history.list": 2}
THROTTLE_REASONS = {"userRateLimitExceeded", "rateLimitExceeded"}
_NETWORK_ERRORS = (httplib2.HttpLib2Error, OSError, TransportError)  # OSError covers timeouts


def error_reason(exc: HttpError) -> str:
    """The first ``error.errors[].reason`` (or ``error.status``) of a Google API error body."""
    try:
        error = json.loads(exc.content)["error"]
    except (ValueError, KeyError, TypeError):
        return ""
    errors = error.get("errors") or []
    return (errors[0].get("reason") if errors else None) or error.get("status", "")


class HistoryExpired(SourceError):
    """``users.history.list`` answered 404: the start historyId is too old (Gmail keeps about a
    week of history); a full listing must take its place."""


def classify(exc: HttpError) -> str:
    """'throttle', 'transient', 'gone', 'auth' or 'error' for a Gmail API HttpError."""
    status, reason = exc.resp.status, error_reason(exc)
    if status == 429 or (status == 403 and reason in THROTTLE_REASONS):
        return "throttle"
    if status in (408, 500, 502, 503, 504):
        return "transient"
    if status == 404:
        return "gone"
    if status in (401, 403) or reason in ("failedPrecondition", "FAILED_PRECONDITION"):
        return "auth"
    return "error"


def auth_failure(exc: Exception) -> SourceError:
    """A clear, token-free error for a credential or permission failure."""
    if isinstance(exc, RefreshError):
        return google_refresh_failure(exc)
    reason = error_reason(exc) if isinstance(exc, HttpError) else ""
    if reason in ("failedPrecondition", "FAILED_PRECONDITION"):
        return AuthenticationFailed(
            "Gmail refused the request (precondition failed): the account has no Gmail, or the "
            "service account is not impersonating a user of the domain.")
    if isinstance(exc, HttpError) and exc.resp.status == 403:
        return AuthenticationFailed(
            f"Gmail denied access ({reason or 'forbidden'}): check the granted scopes and, for a "
            "service account, its domain-wide delegation.")
    return AuthenticationFailed("Gmail rejected the credentials; the consent may have been revoked.")


def gmail_query(since: date | None, before: date | None) -> str:
    """``after:``/``before:`` as epoch seconds (UTC midnight): Gmail reads YYYY/MM/DD in Pacific time."""
    terms = []
    if since:
        terms.append(f"after:{int(dt.datetime.combine(since, dt.time(), dt.UTC).timestamp())}")
    if before:
        terms.append(f"before:{int(dt.datetime.combine(before, dt.time(), dt.UTC).timestamp())}")
    return " ".join(terms)


def decode_raw(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class GmailApiSource(Source):
    def __init__(self, credentials, *, api_url: str = GMAIL_API_URL, user_id: str = "me",
                 include_spam_trash: bool = False, folder_name: str = ALL_MAIL,
                 quota: Quota | None = None, batch_size: int = MAX_BATCH_SIZE,
                 parallel_batches: int = 2, max_retries: int = 6, max_throttle_wait: float = 900.0,
                 backoff_base: float = 1.0, backoff_cap: float = 64.0, timeout: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        """``credentials``: google.auth credentials (user OAuth or delegated service account).

        ``quota`` is the mailbox's shared budget (``RedisQuota(url, gmail_quota_key(user))``);
        ``max_retries`` bounds non-throttle failures of one message, after which it is reported
        as a MessageFailure; throttling is retried until ``max_throttle_wait`` seconds.
        """
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}")
        self.credentials = credentials
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.user_id = user_id
        self.include_spam_trash = include_spam_trash
        self.folder_name = folder_name
        self.quota = quota or NoQuota()
        self.batch_size = batch_size
        self.parallel_batches = max(1, parallel_batches)
        self.max_retries = max_retries
        self.max_throttle_wait = max_throttle_wait
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.timeout = timeout
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._local = threading.local()
        self._labels: dict[str, str] | None = None
        self._profile: dict | None = None
        self.stats: Counter[str] = Counter()  # batches, parts, throttled, retried, failed
        self._stats_lock = threading.Lock()

    # --- plumbing ------------------------------------------------------------------------
    @property
    def batch_uri(self) -> str:
        return self.api_url + "batch/gmail/v1"

    def _service(self):
        """One service (and httplib2 connection) per thread: httplib2 is not thread-safe."""
        service = getattr(self._local, "service", None)
        if service is None:
            http = google_auth_httplib2.AuthorizedHttp(self.credentials, http=httplib2.Http(timeout=self.timeout))
            service = build("gmail", "v1", http=http, static_discovery=True, cache_discovery=False,
                            client_options={"api_endpoint": self.api_url})
            self._local.service = service
        return service

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: base·2^attempt capped, times a random 0.5–1.0."""
        return min(self.backoff_cap, self.backoff_base * 2 ** attempt) * (0.5 + self.rng.random() / 2)

    def _execute(self, make_request: Callable, units: int, *, gone: type[SourceError] | None = None) -> dict:
        """Run one API call with quota, retries and backoff; raise a SourceError when hopeless
        (``gone``, when given, for a 404)."""
        attempt, throttle_wait = 0, 0.0
        while True:
            self.quota.acquire(units)
            try:
                return make_request(self._service()).execute(num_retries=0)
            except RefreshError as exc:
                raise auth_failure(exc) from None
            except HttpError as exc:
                kind = classify(exc)
                if kind == "auth":
                    raise auth_failure(exc) from None
                if kind == "gone" and gone is not None:
                    raise gone(f"Gmail API {exc.resp.status} ({error_reason(exc)})") from None
                if kind not in ("throttle", "transient"):
                    raise SourceError(f"Gmail API error {exc.resp.status} ({error_reason(exc)}).") from None
                delay = self._backoff(attempt)
                log.info("Gmail API %s (HTTP %s); retrying in %.1f s", kind, exc.resp.status, delay)
                if kind == "throttle":
                    self._count("throttled")
                    self.quota.defer(delay)
                    throttle_wait += delay
                    if throttle_wait > self.max_throttle_wait:
                        raise TransientError("Gmail kept throttling this mailbox; the job will resume later.") from None
                elif attempt >= self.max_retries:
                    raise TransientError(f"Gmail API kept failing ({exc.resp.status}); try again later.") from None
            except _NETWORK_ERRORS as exc:
                if attempt >= self.max_retries:
                    raise TransientError(f"Cannot reach the Gmail API ({type(exc).__name__}).") from None
                delay = self._backoff(attempt)
            attempt += 1
            self._count("retried")
            self.sleep(delay)

    # --- Source ------------------------------------------------------------------------
    def profile(self) -> dict:
        """``emailAddress``, ``messagesTotal`` and ``historyId`` (keep it for incremental runs)."""
        if self._profile is None:
            self._profile = self._execute(
                lambda s: s.users().getProfile(userId=self.user_id), UNITS["getProfile"])
        return self._profile

    @property
    def label_names(self) -> dict[str, str]:
        """Label id → name (system labels are named by their id: INBOX, SENT, SPAM...)."""
        if self._labels is None:
            response = self._execute(lambda s: s.users().labels().list(userId=self.user_id),
                                     UNITS["labels.list"])
            self._labels = {label["id"]: label["name"] for label in response.get("labels", [])}
        return self._labels

    def test_connection(self, *, timeout: float | None = None) -> list[Folder]:
        """The folders with the API's own totals; with ``timeout``, one try per call, bounded."""
        if timeout is not None:
            self.timeout, self.max_retries, self.max_throttle_wait = timeout, 0, timeout
        return self.list_folders()

    def list_folders(self) -> list[Folder]:
        profile = self.profile()
        return [Folder(self.folder_name, "ALL", message_count=profile.get("messagesTotal"))]

    def list_message_ids(self, folder: Folder, *, since: date | None = None,
                         before: date | None = None) -> list[str]:
        """Every id in the window, oldest first (Gmail lists newest first)."""
        query = gmail_query(since, before)
        ids: list[str] = []
        seen: set[str] = set()
        page_token = None
        while True:
            def make(service, token=page_token):
                return service.users().messages().list(
                    userId=self.user_id, maxResults=LIST_PAGE_SIZE, pageToken=token, q=query or None,
                    includeSpamTrash=self.include_spam_trash)
            response = self._execute(make, UNITS["messages.list"])
            for item in response.get("messages", []):
                if item["id"] not in seen:
                    seen.add(item["id"])
                    ids.append(item["id"])
            page_token = response.get("nextPageToken")
            if not page_token:
                break
        ids.reverse()
        return ids

    # --- incremental series (connectors.pipeline.series) ------------------------------
    def history(self, start: str) -> tuple[list[str], set[str], str]:
        """(ids added, ids deleted, the newest historyId) since ``start``: every page of
        ``users.history.list``; raises ``HistoryExpired`` on 404."""
        added: dict[str, None] = {}
        deleted: set[str] = set()
        newest, page_token = start, None
        while True:
            def make(service, token=page_token):
                return service.users().history().list(
                    userId=self.user_id, startHistoryId=start, pageToken=token, maxResults=500,
                    historyTypes=["messageAdded", "messageDeleted"])
            response = self._execute(make, UNITS["history.list"], gone=HistoryExpired)
            for record in response.get("history", []):
                for item in record.get("messagesAdded", []):
                    message = item.get("message", {})
                    labels = set(message.get("labelIds") or ())
                    if self.include_spam_trash or not labels & {"SPAM", "TRASH"}:
                        added[message["id"]] = None
                        deleted.discard(message["id"])
                for item in record.get("messagesDeleted", []):
                    deleted.add(item.get("message", {}).get("id", ""))
                    added.pop(item.get("message", {}).get("id", ""), None)
            newest = response.get("historyId") or newest
            page_token = response.get("nextPageToken")
            if not page_token:
                return list(added), deleted, str(newest)

    def series_plan(self, folder: Folder, previous: dict | None, archived, *,
                    since: date | None = None, before: date | None = None):
        """This run's plan: messages added since the previous run's ``historyId``
        (``users.history.list``; one call when nothing changed), less what the series archived;
        a 404 (history expired), a date window or no cursor: a full listing less what the
        series archived. The ids that failed in the previous run (``retry_ids``) are asked again. The cursor is the historyId read before listing (so nothing between
        the listing and the next run is missed; what is listed twice is skipped as archived)."""
        from connectors.pipeline.series import FULL, NEW, UNCHANGED, FolderPlan, full_listing_plan

        start = (previous or {}).get("history_id")
        self._profile = None
        current = str(self.profile().get("historyId", ""))
        if start and not since and not before:
            try:
                added, deleted, newest = self.history(str(start))
            except HistoryExpired:
                log.info("Gmail history from %s has expired; listing the whole mailbox", start)
            else:
                retry = [i for i in (previous or {}).get("retry_ids") or () if i not in deleted]
                if not added and not deleted and not retry:
                    return FolderPlan([], {"history_id": newest or current}, mode=UNCHANGED)
                done = {a.source_id for a in archived(folder.path)}
                ids = [i for i in dict.fromkeys([*retry, *added]) if i not in done]
                return FolderPlan(ids, {"history_id": newest or current}, expunged=len(deleted & done), mode=NEW)
        ids = self.list_message_ids(folder, since=since, before=before)
        plan = full_listing_plan(ids, archived(folder.path) if start else ())
        plan.cursor = {"history_id": current}
        if start:
            plan.mode = "resync"
        else:
            plan.mode = FULL
        return plan

    def fetch_messages(self, folder: Folder, ids: Iterable[str]) -> Iterator[Message | MessageFailure]:
        ids = list(ids)
        self.label_names  # noqa: B018 - load the label map once, before the threads start
        chunks = [ids[i:i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        if self.parallel_batches == 1:
            for chunk in chunks:
                yield from self._ordered(folder, chunk, self._fetch_chunk(folder, chunk))
            return
        executor = ThreadPoolExecutor(self.parallel_batches, thread_name_prefix="gmail-batch")
        try:
            window: list[tuple[list[str], Future]] = []
            next_chunk = 0
            while next_chunk < len(chunks) or window:
                while next_chunk < len(chunks) and len(window) < self.parallel_batches + 1:
                    chunk = chunks[next_chunk]
                    window.append((chunk, executor.submit(self._fetch_chunk, folder, chunk)))
                    next_chunk += 1
                chunk, future = window.pop(0)
                yield from self._ordered(folder, chunk, future.result())
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _ordered(folder: Folder, chunk: list[str], results: dict) -> Iterator[Message | MessageFailure]:
        for message_id in chunk:
            yield results[message_id]

    # --- one batch of ≤ 50, until every part has an outcome ------------------------------
    def _fetch_chunk(self, folder: Folder, chunk: list[str]) -> dict[str, Message | MessageFailure]:
        pending = list(dict.fromkeys(chunk))
        results: dict[str, Message | MessageFailure] = {}
        failures: Counter[str] = Counter()
        rounds, throttle_wait = 0, 0.0
        while pending:
            self.quota.acquire(UNITS["messages.get"] * len(pending))
            outcomes = self._run_batch(pending)
            retry, throttled = [], False
            for message_id in pending:
                response, error = outcomes[message_id]
                if error is None:
                    results[message_id] = self._message(folder, message_id, response)
                    continue
                kind = classify(error) if isinstance(error, HttpError) else "transient"
                if kind == "throttle":
                    throttled = True
                    self._count("throttled")
                    retry.append(message_id)
                elif kind == "auth":
                    raise auth_failure(error)
                elif kind == "gone":
                    results[message_id] = MessageFailure(
                        folder.path, message_id, "The message was deleted after it was listed.",
                        status="skipped")
                elif kind == "transient" and failures[message_id] < self.max_retries:
                    failures[message_id] += 1
                    retry.append(message_id)
                else:
                    results[message_id] = MessageFailure(folder.path, message_id, self._describe(error))
            pending = retry
            if pending:
                delay = self._backoff(rounds)
                rounds += 1
                self._count("retried", len(pending))
                log.info("Gmail: %d of a batch to retry in %.1f s (%s)", len(pending), delay,
                         "throttled" if throttled else "transient errors")
                if throttled:
                    self.quota.defer(delay)
                    throttle_wait += delay
                    if throttle_wait > self.max_throttle_wait:
                        raise TransientError("Gmail kept throttling this mailbox; the job will resume later.")
                self.sleep(delay)
        failed = sum(isinstance(r, MessageFailure) for r in results.values())
        self._count("failed", failed)
        self._count("fetched", len(results) - failed)
        return results

    def _run_batch(self, ids: list[str]) -> dict[str, tuple[dict | None, Exception | None]]:
        """One multipart batch; a failure of the whole request becomes the outcome of every part."""
        outcomes: dict[str, tuple[dict | None, Exception | None]] = {}

        def collect(request_id: str, response: dict | None, exception: Exception | None) -> None:
            outcomes[request_id] = (response, exception)

        service = self._service()
        batch = BatchHttpRequest(callback=collect, batch_uri=self.batch_uri)
        for message_id in ids:
            batch.add(service.users().messages().get(userId=self.user_id, id=message_id, format="raw"),
                      request_id=message_id)
        self._count("batches")
        self._count("parts", len(ids))
        try:
            batch.execute(http=service._http)
        except RefreshError as exc:
            raise auth_failure(exc) from None
        except HttpError as exc:  # the batch request itself failed (429, 5xx...)
            return {message_id: (None, exc) for message_id in ids}
        except _NETWORK_ERRORS as exc:
            return {message_id: (None, exc) for message_id in ids}
        for message_id in ids:  # a part the server forgot to answer must not vanish either
            outcomes.setdefault(message_id, (None, TransientError("no response part")))
        return outcomes

    @staticmethod
    def _describe(error: Exception) -> str:
        if isinstance(error, HttpError):
            return f"Gmail API error {error.resp.status} ({error_reason(error) or 'unknown'})"
        return f"{type(error).__name__} while fetching the message"

    def _message(self, folder: Folder, message_id: str, response: dict) -> Message:
        label_ids = response.get("labelIds", [])
        names = self.label_names
        flags = [] if "UNREAD" in label_ids else ["\\Seen"]
        if "STARRED" in label_ids:
            flags.append("\\Flagged")
        if "DRAFT" in label_ids:
            flags.append("\\Draft")
        internal = response.get("internalDate")
        return Message(
            folder=folder.path,
            source_id=message_id,
            raw=decode_raw(response["raw"]),
            internal_date=dt.datetime.fromtimestamp(int(internal) / 1000, dt.UTC) if internal else None,
            flags=tuple(flags),
            labels=tuple(sorted(names.get(i, i) for i in label_ids)),
        )
