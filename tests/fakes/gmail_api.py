"""The Gmail API v1 subset a backup needs, with Google's error shapes, quota and batch format.

Paths as google-api-python-client builds them with ``api_endpoint=BASE/``:
``/gmail/v1/users/{userId}/profile|labels|messages|messages/{id}|history`` and ``/batch/gmail/v1``.
``history`` (``users.history.list``) answers ``messagesAdded`` / ``messagesDeleted`` records
newer than ``startHistoryId`` and 404 ``notFound`` for a start older than the mailbox keeps
(``GmailMailbox.expire_history``), as Gmail does after about a week.
Every call, batch parts included, is charged against a per-user sliding-window quota
(messages.list 5, messages.get 5, labels.list 1, getProfile 1); over quota the call is answered
429 ``rateLimitExceeded`` or 403 ``userRateLimitExceeded`` (choose with ``quota_status``).
Fault hooks: fail the Nth call, throttle a fraction of batch parts.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.parser
import http
import random
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.google_oauth import GMAIL_SCOPES_READ, GoogleAuthServer
from tests.fakes.httpserver import Request, Response
from tests.fakes.mailstore import StoredMessage, generate_messages
from tests.fakes.quota import SlidingWindowQuota

SYSTEM_LABELS = ("INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT",
                 "CHAT", "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS",
                 "CATEGORY_UPDATES", "CATEGORY_FORUMS")
USER_LABELS = {"Label_1": "Projekte", "Label_2": "Projekte/日本語", "Label_3": "Reçus/Été 2024",
               "Label_4": "Work/Clients/ACME", "Label_5": "Привет"}
COSTS = {"profile": 1, "labels.list": 1, "messages.list": 5, "messages.get": 5, "history.list": 2}
MAX_BATCH_PARTS = 100

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def gmail_error(code: int, message: str, reason: str, domain: str = "global",
                status: str | None = None) -> Response:
    """An error in the JSON shape Google APIs use (``error.errors[].reason``)."""
    body = {"error": {"code": code, "message": message,
                      "errors": [{"message": message, "domain": domain, "reason": reason}],
                      "status": status or _STATUS_NAMES.get(code, "UNKNOWN")}}
    headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'} if code == 401 else {}
    return Response.json(body, code, headers)


def rate_limit_error(status: int, clock_now: float) -> Response:
    if status == 403:
        return gmail_error(403, "User Rate Limit Exceeded", "userRateLimitExceeded", "usageLimits")
    retry_at = dt.datetime.fromtimestamp(clock_now + 1, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return gmail_error(429, f"User-rate limit exceeded.  Retry after {retry_at}", "rateLimitExceeded",
                       "usageLimits")


@dataclass
class GmailMailbox:
    email: str
    messages: dict[str, StoredMessage] = field(default_factory=dict)  # by Gmail id, oldest first
    labels: dict[str, dict] = field(default_factory=dict)
    history_id: int = 100000
    history: list[tuple[int, str, str]] = field(default_factory=list)  # (id, "added"|"deleted", message id)
    history_floor: int = 0  # a startHistoryId below this is answered 404

    def label_names(self, message: StoredMessage) -> list[str]:
        return sorted(self.labels[i]["name"] for i in message.labels)

    def add(self, message: StoredMessage) -> None:
        """A new message arrives (a history record ``messagesAdded``)."""
        self.history_id += 1
        self.messages[message.key] = message
        self.history.append((self.history_id, "added", message.key))

    def delete(self, key: str) -> None:
        """A message is deleted for good (a history record ``messagesDeleted``)."""
        self.history_id += 1
        del self.messages[key]
        self.history.append((self.history_id, "deleted", key))

    def expire_history(self) -> None:
        """Forget every history record: any earlier startHistoryId now gets 404."""
        self.history.clear()
        self.history_floor = self.history_id + 1


def _label_resources() -> dict[str, dict]:
    labels = {i: {"id": i, "name": i, "type": "system"} for i in SYSTEM_LABELS}
    for label_id, name in USER_LABELS.items():
        labels[label_id] = {"id": label_id, "name": name, "type": "user",
                            "messageListVisibility": "show", "labelListVisibility": "labelShow"}
    return labels


def seed_gmail_mailbox(email_address: str, count: int, *, seed: int = 1,
                       big_message_bytes: int = 0) -> GmailMailbox:
    """A mailbox whose messages carry system and Unicode user labels, some in SPAM and TRASH."""
    rng = random.Random(f"labels:{seed}:{email_address}")
    mailbox = GmailMailbox(email_address.lower(), labels=_label_resources())
    for n, message in enumerate(generate_messages(email_address, count, seed=seed,
                                                  big_message_bytes=big_message_bytes)):
        roll = rng.random()
        labels = {"INBOX", "CATEGORY_PERSONAL"} if roll < 0.62 else {"SENT"} if roll < 0.78 else \
            {"SPAM"} if roll < 0.82 else {"TRASH"} if roll < 0.86 else set()
        if rng.random() < 0.4:
            labels.add(rng.choice(list(USER_LABELS)))
        if rng.random() < 0.1:
            labels.add(rng.choice(list(USER_LABELS)))
        if not message.seen:
            labels.add("UNREAD")
        if message.flagged:
            labels.add("STARRED")
        message.labels = labels
        message.key = f"{0x18a0000000000000 + n * 0x1f3d:016x}"
        mailbox.messages[message.key] = message
    mailbox.history_id += count
    return mailbox


@dataclass
class GmailFaults:
    """Fault injection: ``fail_call(n)`` fails the Nth API call (batch parts count one each);
    ``fail_batches(status, times)`` fails whole batch requests; ``throttle_batch_parts(f)``
    answers a fraction f of batch parts with a rate-limit error."""

    fail_calls: dict[int, tuple[int, str]] = field(default_factory=dict)
    batch_failures: list[int] = field(default_factory=list)
    throttle_fraction: float = 0.0
    throttle_status: int = 429
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def fail_call(self, n: int, status: int = 500, reason: str = "backendError") -> None:
        self.fail_calls[n] = (status, reason)

    def fail_batches(self, status: int = 503, times: int = 1) -> None:
        self.batch_failures.extend([status] * times)

    def throttle_batch_parts(self, fraction: float, status: int = 429, seed: int = 0) -> None:
        self.throttle_fraction, self.throttle_status = fraction, status
        self.rng = random.Random(seed)


def _parse_date_term(value: str) -> float:
    if value.isdigit():
        return float(value)
    year, month, day = (int(p) for p in re.split(r"[/-]", value))
    return dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp()


class GmailApi:
    def __init__(self, auth: GoogleAuthServer, mailboxes: dict[str, GmailMailbox],
                 quota: SlidingWindowQuota, *, quota_status: int = 429):
        self.auth = auth
        self.mailboxes = mailboxes
        self.quota = quota
        self.quota_status = quota_status
        self.faults = GmailFaults()
        self.calls: Counter[str] = Counter()  # by method name
        self.throttled = 0  # calls answered with a rate-limit error (quota or injected)
        self.batches = 0
        self.max_batch_parts = 0
        self._call_number = 0
        self._lock = threading.Lock()

    # --- routing ----------------------------------------------------------------------
    def handle(self, request: Request) -> Response | None:
        if request.path in ("/batch/gmail/v1", "/batch") and request.method == "POST":
            return self.batch(request)
        if request.path.startswith("/gmail/v1/"):
            return self.call(request.method, request.target, request.bearer_token())
        return None

    def _next_call_number(self) -> int:
        with self._lock:
            self._call_number += 1
            return self._call_number

    def call(self, method: str, target: str, token: str | None, *, batch_part: bool = False) -> Response:
        number = self._next_call_number()
        if number in self.faults.fail_calls:
            status, reason = self.faults.fail_calls.pop(number)
            with self._lock:
                self.throttled += status in (403, 429)
            if status in (403, 429):
                return rate_limit_error(status, self.quota.clock())
            return gmail_error(status, "Backend Error" if status >= 500 else reason, reason)
        if batch_part and self.faults.throttle_fraction:
            with self._lock:
                throttle = self.faults.rng.random() < self.faults.throttle_fraction
                self.throttled += throttle
            if throttle:
                return rate_limit_error(self.faults.throttle_status, self.quota.clock())

        parts = urlsplit(target)
        segments = [unquote(s) for s in parts.path.split("/")[3:]]  # after /gmail/v1/
        query = parse_qs(parts.query, keep_blank_values=True)
        if len(segments) < 3 or segments[0] != "users" or method != "GET":
            return gmail_error(404, "Not Found", "notFound")
        name = {("profile",): "profile", ("labels",): "labels.list",
                ("messages",): "messages.list", ("history",): "history.list"}.get(tuple(segments[2:]))
        if name is None and len(segments) == 4 and segments[2] == "messages":
            name = "messages.get"
        if name is None:
            return gmail_error(404, "Not Found", "notFound")

        grant = self.auth.access_grant(token)
        if grant is None:
            return gmail_error(401, "Request had invalid authentication credentials. Expected OAuth 2 "
                               "access token, login cookie or other valid authentication credential.",
                               "authError")
        if not GMAIL_SCOPES_READ & set(grant.scopes):
            return gmail_error(403, "Request had insufficient authentication scopes.",
                               "insufficientPermissions")
        user = grant.user if segments[1] == "me" else segments[1].lower()
        if user != grant.user:
            return gmail_error(403, f"Delegation denied for {grant.user}", "forbidden")
        mailbox = self.mailboxes.get(user)
        if mailbox is None:
            return gmail_error(400, "Precondition check failed.", "failedPrecondition",
                               status="FAILED_PRECONDITION")
        if not self.quota.charge(user, COSTS[name]):
            with self._lock:
                self.throttled += 1
            return rate_limit_error(self.quota_status, self.quota.clock())
        with self._lock:
            self.calls[name] += 1
        if name == "profile":
            return Response.json({"emailAddress": mailbox.email, "messagesTotal": len(mailbox.messages),
                                  "threadsTotal": len(mailbox.messages), "historyId": str(mailbox.history_id)})
        if name == "labels.list":
            return Response.json({"labels": list(mailbox.labels.values())})
        if name == "messages.list":
            return self._list(mailbox, query)
        if name == "history.list":
            return self._history(mailbox, query)
        return self._get(mailbox, segments[3], query)

    def _history(self, mailbox: GmailMailbox, query: dict[str, list[str]]) -> Response:
        try:
            start = int(query["startHistoryId"][0])
            max_results = min(int(query.get("maxResults", ["100"])[0]), 500)
            offset = int(base64.urlsafe_b64decode(query["pageToken"][0]).decode()) if "pageToken" in query else 0
        except (KeyError, ValueError):
            return gmail_error(400, "Invalid startHistoryId", "invalidArgument")
        if start < mailbox.history_floor:
            return gmail_error(404, "Requested entity was not found.", "notFound")
        types = set(query.get("historyTypes", [])) or {"messageAdded", "messageDeleted"}
        records = [r for r in mailbox.history if r[0] > start
                   and ("messageAdded" if r[1] == "added" else "messageDeleted") in types]
        page = records[offset:offset + max_results]
        history = []
        for number, what, key in page:
            stored = mailbox.messages.get(key)
            ref = {"id": key, "threadId": key}
            if what == "added":
                labels = sorted(stored.labels) if stored is not None else []
                history.append({"id": str(number), "messages": [ref],
                                "messagesAdded": [{"message": {**ref, "labelIds": labels}}]})
            else:
                history.append({"id": str(number), "messages": [ref], "messagesDeleted": [{"message": ref}]})
        body: dict = {"historyId": str(mailbox.history_id)}
        if history:
            body["history"] = history
        if offset + max_results < len(records):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
        return Response.json(body)

    # --- resources -------------------------------------------------------------------
    def _list(self, mailbox: GmailMailbox, query: dict[str, list[str]]) -> Response:
        try:
            max_results = min(int(query.get("maxResults", ["100"])[0]), 500)
            offset = int(base64.urlsafe_b64decode(query["pageToken"][0]).decode()) if "pageToken" in query else 0
        except ValueError:
            return gmail_error(400, "Invalid value", "invalid")
        include_spam_trash = query.get("includeSpamTrash", ["false"])[0].lower() == "true"
        wanted_labels = set(query.get("labelIds", []))
        after, before = float("-inf"), float("inf")
        for term in (query.get("q", [""])[0]).split():
            key, _, value = term.partition(":")
            try:
                if key == "after":
                    after = _parse_date_term(value)
                elif key == "before":
                    before = _parse_date_term(value)
                else:
                    raise ValueError(term)
            except ValueError:
                return gmail_error(400, f"Invalid query (the fake understands after:/before:): {term}",
                                   "invalidArgument")
        selected = [
            (m.date, key) for key, m in mailbox.messages.items()
            if (include_spam_trash or not m.labels & {"SPAM", "TRASH"})
            and wanted_labels <= m.labels and after <= m.date.timestamp() < before
        ]
        selected.sort(reverse=True)  # newest first, like Gmail
        page = selected[offset:offset + max_results]
        body: dict = {"resultSizeEstimate": len(selected)}
        if page:
            body["messages"] = [{"id": key, "threadId": key} for _, key in page]
        if offset + max_results < len(selected):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
        return Response.json(body)

    def _get(self, mailbox: GmailMailbox, message_id: str, query: dict[str, list[str]]) -> Response:
        message = mailbox.messages.get(message_id)
        if message is None:
            return gmail_error(404, "Requested entity was not found.", "notFound")
        fmt = query.get("format", ["full"])[0]
        body = {"id": message_id, "threadId": message_id, "labelIds": sorted(message.labels),
                "snippet": "", "sizeEstimate": len(message.raw),
                "historyId": str(mailbox.history_id),
                "internalDate": str(int(message.date.timestamp() * 1000))}
        if fmt == "raw":
            body["raw"] = base64.urlsafe_b64encode(message.raw).decode("ascii")
        elif fmt in ("metadata", "full"):
            wanted = {h.lower() for h in query.get("metadataHeaders", [])}
            headers = email.parser.BytesHeaderParser().parsebytes(message.raw)
            body["payload"] = {"mimeType": headers.get_content_type(), "headers": [
                {"name": k, "value": str(v)} for k, v in headers.items()
                if fmt == "full" or not wanted or k.lower() in wanted]}
        elif fmt != "minimal":
            return gmail_error(400, f"Invalid value at 'format' ({fmt})", "invalidArgument")
        return Response.json(body)

    # --- batch -----------------------------------------------------------------------
    def batch(self, request: Request) -> Response:
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/mixed"):
            return gmail_error(400, "Batch requests must be multipart/mixed", "invalid")
        envelope = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body)
        parts = envelope.get_payload()
        if not isinstance(parts, list) or not parts:
            return gmail_error(400, "Empty batch", "invalid")
        if len(parts) > MAX_BATCH_PARTS:
            return gmail_error(400, f"Too many requests in batch; maximum is {MAX_BATCH_PARTS}", "invalid")
        with self._lock:
            self.batches += 1
            self.max_batch_parts = max(self.max_batch_parts, len(parts))
            failure = self.faults.batch_failures.pop(0) if self.faults.batch_failures else None
        if failure in (403, 429):
            return rate_limit_error(failure, self.quota.clock())
        if failure:
            return gmail_error(failure, "Backend Error", "backendError")
        outer_token = request.bearer_token()
        boundary = "batch_" + secrets.token_hex(12)
        chunks: list[bytes] = []
        for part in parts:
            content_id = (part.get("Content-ID") or "").strip()
            inner = part.get_payload()
            request_line, _, rest = inner.lstrip("\r\n").partition("\n")
            method, target, _version = request_line.strip().split(" ", 2)
            headers = email.parser.Parser().parsestr(rest, headersonly=True)
            auth = headers.get("Authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else outer_token
            response = self.call(method, target, token, batch_part=True)
            reason = http.HTTPStatus(response.status).phrase
            response_id = f"<response-{content_id[1:-1]}>" if content_id.startswith("<") else content_id
            chunks.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: {response_id}\r\n\r\n"
                f"HTTP/1.1 {response.status} {reason}\r\n"
                "Content-Type: application/json; charset=UTF-8\r\nVary: Origin\r\nVary: X-Origin\r\n"
                "Vary: Referer\r\n\r\n".encode() + bytes(response.body) + b"\r\n")
        chunks.append(f"--{boundary}--\r\n".encode())
        return Response(200, b"".join(chunks), {"Content-Type": f"multipart/mixed; boundary={boundary}"})

