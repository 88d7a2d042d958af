"""Microsoft Graph v1.0 mail, the subset a backup needs, with Graph's paging, errors and throttling.

- ``/users/{id|upn}/mailFolders`` (top level, 10 per page by default, hidden folders only with
  ``includeHiddenFolders=true``), ``/mailFolders/{id|wellKnownName}``, ``.../childFolders``;
- ``.../mailFolders/{id}/messages`` with ``$select``, ``$top`` (≤ 1000, default 10),
  ``$filter`` on ``receivedDateTime`` (ge/gt/le/lt, ``and``), newest first, ``@odata.nextLink``
  with an opaque ``$skiptoken`` (clients must follow it verbatim);
- ``/messages/{id}/$value``: the MIME bytes, streamed in chunks;
- ``/me/...`` for delegated tokens (app-only tokens get Graph's 400), ``revokeSignInSessions``.

Throttling is real: at most ``max_concurrency`` (4) requests in flight per app and mailbox, the
next one gets 429 ``ApplicationThrottled`` (MailboxConcurrency) with Retry-After; the peak is
recorded. Each app and mailbox may also make 10,000 requests per 10 minutes (sliding window on
the fake's clock; 429 with Retry-After beyond). ``faults.throttle(n, retry_after=...)`` injects
429/503 answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.fakes.httpserver import Request, Response
from tests.fakes.mailstore import StoredMessage, generate_messages
from tests.fakes.microsoft_identity import GRAPH, IssuedToken, MicrosoftIdentity
from tests.fakes.quota import SlidingWindowQuota

FOLDER_PAGE_DEFAULT = 10
MESSAGE_PAGE_DEFAULT = 10
MESSAGE_PAGE_MAX = 1000
CHUNK = 64 * 1024

# (path, wellKnownName, hidden): the seeded tree under msgfolderroot.
FOLDER_TREE = (
    ("Inbox", "inbox", False), ("Inbox/Projekte", None, False), ("Inbox/Projekte/日本語", None, False),
    ("Inbox/Projekte/日本語/Tief", None, False), ("Inbox/Reçus", None, False),
    ("Sent Items", "sentitems", False), ("Deleted Items", "deleteditems", False),
    ("Junk Email", "junkemail", False), ("Archive", "archive", False), ("Drafts", "drafts", False),
    ("Outbox", "outbox", False), ("Conversation History", "conversationhistory", False),
    ("Verborgen", None, True), ("Verborgen/Geheim", None, False), ("Berichte 1/2", None, False),
    ("Archiv 2019", None, False), ("Archiv 2020", None, False), ("Archiv 2021", None, False),
    ("Archiv 2022", None, False), ("Archiv 2023", None, False),
)
# Where seeded messages go (weights); every folder above except Outbox/Drafts gets some.
MESSAGE_FOLDERS = (("Inbox", 30), ("Inbox/Projekte", 6), ("Inbox/Projekte/日本語", 5),
                   ("Inbox/Projekte/日本語/Tief", 3), ("Inbox/Reçus", 4), ("Sent Items", 12),
                   ("Deleted Items", 4), ("Junk Email", 3), ("Archive", 8), ("Verborgen", 3),
                   ("Verborgen/Geheim", 2), ("Berichte 1/2", 2), ("Archiv 2021", 4),
                   ("Conversation History", 1))


def graph_id(rng: random.Random, prefix: str = "AAMkAD") -> str:
    """Graph-looking ids: base64url with '-', '_' and a trailing '=' (must be URL-encoded in paths)."""
    return prefix + base64.urlsafe_b64encode(rng.randbytes(45)).decode() + "="


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}}}
    return Response.json(body, status, headers)


@dataclass
class GraphFolder:
    id: str
    name: str
    parent_id: str
    well_known: str | None = None
    hidden: bool = False
    children: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def resource(self, mailbox: GraphMailbox) -> dict:
        return {"id": self.id, "displayName": self.name, "parentFolderId": self.parent_id,
                "childFolderCount": len(self.children),
                "unreadItemCount": sum(not mailbox.messages[m].seen for m in self.messages),
                "totalItemCount": len(self.messages), "sizeInBytes": sum(len(mailbox.messages[m].raw)
                                                                         for m in self.messages),
                "isHidden": self.hidden}


@dataclass
class GraphMailbox:
    upn: str
    folders: dict[str, GraphFolder] = field(default_factory=dict)
    messages: dict[str, StoredMessage] = field(default_factory=dict)  # by Graph id
    root_id: str = ""
    # Delta queries: every change as (sequence, folder id, "added"|"removed", message id); a
    # $deltatoken is a sequence number, and one below ``delta_floor`` is answered 410.
    changes: list[tuple[int, str, str, str]] = field(default_factory=list)
    change_seq: int = 0
    delta_floor: int = 0

    def add_message(self, folder_id: str, message: StoredMessage) -> None:
        """A message arrives in the folder (a change the folder's delta reports)."""
        self.messages[message.key] = message
        self.folders[folder_id].messages.append(message.key)
        message.folder = self.path_of(folder_id)
        self.change_seq += 1
        self.changes.append((self.change_seq, folder_id, "added", message.key))

    def remove_message(self, message_id: str) -> None:
        """A message is deleted (its folder's delta reports it ``@removed``)."""
        folder = next(f for f in self.folders.values() if message_id in f.messages)
        folder.messages.remove(message_id)
        del self.messages[message_id]
        self.change_seq += 1
        self.changes.append((self.change_seq, folder.id, "removed", message_id))

    def expire_delta_tokens(self) -> None:
        """Every $deltatoken issued so far becomes invalid (410 Gone, resync required)."""
        self.delta_floor = self.change_seq + 1

    def folder(self, ref: str) -> GraphFolder | None:
        if ref in self.folders:
            return self.folders[ref]
        ref = ref.lower()
        if ref == "msgfolderroot":
            return self.folders[self.root_id]
        return next((f for f in self.folders.values() if f.well_known == ref), None)

    def path_of(self, folder_id: str) -> str:
        names = []
        while folder_id != self.root_id:
            folder = self.folders[folder_id]
            names.append(folder.name)
            folder_id = folder.parent_id
        return "/".join(reversed(names))

    def messages_by_path(self) -> dict[str, list[StoredMessage]]:
        return {self.path_of(f.id): [self.messages[m] for m in f.messages]
                for f in self.folders.values() if f.id != self.root_id}


def seed_graph_mailbox(upn: str, count: int, *, seed: int = 1, big_message_bytes: int = 0) -> GraphMailbox:
    rng = random.Random(f"graph:{seed}:{upn}")
    mailbox = GraphMailbox(upn.lower())
    root = GraphFolder(graph_id(rng, "AAMkAGRv"), "Top of Information Store", "", "msgfolderroot")
    mailbox.root_id = root.id
    mailbox.folders[root.id] = root
    by_path: dict[str, GraphFolder] = {}
    for path, well_known, hidden in FOLDER_TREE:
        # "Berichte 1/2" is one folder whose name holds a slash, not a parent and a child
        parent_path, _, name = ("", "", path) if path == "Berichte 1/2" else path.rpartition("/")
        parent = by_path[parent_path] if parent_path else root
        folder = GraphFolder(graph_id(rng, "AAMkAGZv"), name, parent.id, well_known, hidden)
        mailbox.folders[folder.id] = folder
        parent.children.append(folder.id)
        by_path[path] = folder
    paths = [p for p, _ in MESSAGE_FOLDERS]
    weights = [w for _, w in MESSAGE_FOLDERS]
    for message in generate_messages(upn, count, seed=seed, big_message_bytes=big_message_bytes):
        path = "Inbox" if message.key == "000003" else rng.choices(paths, weights)[0]
        message.folder = path
        message.key = graph_id(rng)
        mailbox.messages[message.key] = message
        by_path[path].messages.append(message.key)
    return mailbox


@dataclass
class GraphFaults:
    """Injected answers: the next ``count`` requests (whose path contains ``match``) get ``status``;
    ``throttle_randomly(f)`` answers a fraction f of all requests with 429 + Retry-After."""

    queue: list[tuple[int, float, str]] = field(default_factory=list)
    injected: int = 0
    fraction: float = 0.0
    fraction_retry_after: float = 1.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def throttle(self, count: int = 1, *, retry_after: float = 1, status: int = 429, match: str = "") -> None:
        self.queue.extend([(status, retry_after, match)] * count)

    def throttle_randomly(self, fraction: float, *, retry_after: float = 1, seed: int = 0) -> None:
        self.fraction, self.fraction_retry_after, self.rng = fraction, retry_after, random.Random(seed)

    def pick(self, target: str) -> tuple[int, float, str] | None:
        """The injected answer for this request, if any (call under the API's lock)."""
        for i, (_status, _retry_after, match) in enumerate(self.queue):
            if match in target:
                self.injected += 1
                return self.queue.pop(i)
        if self.fraction and self.rng.random() < self.fraction:
            self.injected += 1
            return (429, self.fraction_retry_after, "")
        return None


_FILTER_TERM = re.compile(r"^receivedDateTime\s+(ge|gt|le|lt)\s+(\S+)$", re.IGNORECASE)


def _parse_filter(expression: str) -> list[tuple[str, dt.datetime]]:
    terms = []
    for term in re.split(r"\s+and\s+", expression.strip(), flags=re.IGNORECASE):
        match = _FILTER_TERM.match(term.strip())
        if not match:
            raise ValueError(term)
        value = match.group(2).strip("'")
        terms.append((match.group(1).lower(), dt.datetime.fromisoformat(value.replace("Z", "+00:00"))))
    return terms


class GraphApi:
    def __init__(self, identity: MicrosoftIdentity, mailboxes: dict[str, GraphMailbox], *,
                 max_concurrency: int = 4, concurrency_retry_after: float = 1.0,
                 requests_per_window: int = 10_000, window: float = 600.0):
        self.identity = identity
        self.request_quota = SlidingWindowQuota(requests_per_window, window, identity.clock)
        self.mailboxes = mailboxes
        self.max_concurrency = max_concurrency
        self.concurrency_retry_after = concurrency_retry_after
        self.faults = GraphFaults()
        self.latency = 0.0  # seconds added to every request, to make overlap (and limits) observable
        self.page_cap: int | None = None  # server-driven paging: never more than this per page
        self.requests: Counter[str] = Counter()
        self.value_requests: Counter[str] = Counter()  # $value downloads per message id
        self._inflight: Counter[tuple[str, str]] = Counter()
        self.peak_concurrency: dict[str, int] = {}  # most requests accepted at once, per mailbox
        self.peak_attempted: dict[str, int] = {}  # most requests in flight at once incl. rejected ones
        self.concurrency_rejections = 0
        self._lock = threading.Lock()

    # --- routing ------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | None:
        if not request.path.startswith("/v1.0/"):
            return None
        segments = [unquote(s) for s in request.path[len("/v1.0/"):].split("/")]
        token = self.identity.access_token(request.bearer_token())
        if token is None:
            return graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.",
                               {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'})
        if token.resource != GRAPH:
            return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. "
                               "Invalid audience.")
        if segments[0] == "me":
            if token.app_only:
                return graph_error(400, "BadRequest", "/me request is only valid with delegated "
                                   "authentication flow.")
            upn, rest = token.user, segments[1:]
        elif segments[0] == "users" and len(segments) >= 2:
            upn, rest = self._resolve_user(segments[1]), segments[2:]
        else:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
        mailbox = self.mailboxes.get(upn or "")
        if mailbox is None:
            return graph_error(404, "ErrorInvalidUser", f"The requested user '{segments[1]}' is invalid.")
        denied = self._authorize(token, upn, rest)
        if denied:
            return denied
        return self._admit(token, mailbox, request, rest)

    def _resolve_user(self, ref: str) -> str | None:
        ref = ref.lower()
        if ref in self.mailboxes:
            return ref
        for tenant in self.identity.tenants.values():
            for upn, oid in tenant.users.items():
                if oid == ref:
                    return upn
        return None

    def _authorize(self, token: IssuedToken, upn: str, rest: list[str]) -> Response | None:
        if rest == ["revokeSignInSessions"]:
            return None
        if token.app_only:
            tenant = self.identity.tenant_of_user(upn)
            if tenant is None or tenant.tenant_id != token.tenant_id or "Mail.Read" not in token.permissions:
                return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return None
        if token.user != upn or not {"Mail.Read", "Mail.ReadWrite"} & set(token.permissions):
            return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return None

    # --- concurrency and injected throttling ------------------------------------------------
    def _admit(self, token: IssuedToken, mailbox: GraphMailbox, request: Request, rest: list[str]) -> Response:
        slot = (token.client_id, mailbox.upn)
        with self._lock:
            attempted = self._inflight[slot] + 1
            self.peak_attempted[mailbox.upn] = max(self.peak_attempted.get(mailbox.upn, 0), attempted)
            if self._inflight[slot] >= self.max_concurrency:
                self.concurrency_rejections += 1
                return graph_error(429, "ApplicationThrottled", "Application is over its MailboxConcurrency "
                                   "limit.", {"Retry-After": f"{self.concurrency_retry_after:g}"})
            if not self.request_quota.charge(f"{token.client_id}|{mailbox.upn}", 1):
                return graph_error(429, "ApplicationThrottled", "Application is over its MailboxRequests "
                                   "limit (10,000 requests per 10 minutes).", {"Retry-After": "30"})
            self._inflight[slot] += 1
            self.peak_concurrency[mailbox.upn] = max(self.peak_concurrency.get(mailbox.upn, 0),
                                                     self._inflight[slot])
            injected = self.faults.pick(request.target)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                with self._lock:
                    self._inflight[slot] -= 1

        try:
            if self.latency:
                time.sleep(self.latency)
            if injected:
                status, retry_after, _ = injected
                code = "ApplicationThrottled" if status == 429 else "ServiceUnavailable"
                response = graph_error(status, code, "Too many requests." if status == 429 else
                                       "Service unavailable.", {"Retry-After": f"{retry_after:g}"})
            else:
                response = self._route(token, mailbox, request, rest)
        except Exception:
            release()
            raise
        response.on_finish = release
        return response

    # --- resources -----------------------------------------------------------------------
    def _route(self, token: IssuedToken, mailbox: GraphMailbox, request: Request, rest: list[str]) -> Response:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.target).query, keep_blank_values=True).items()}
        with self._lock:
            self.requests["/".join(r if not r.startswith("AAMk") else "{id}" for r in rest)] += 1
        if rest == ["revokeSignInSessions"] and request.method == "POST":
            self.identity.revoke_sessions(mailbox.upn)
            return Response.json({"@odata.context": f"{self._base()}/$metadata#Edm.Boolean", "value": True})
        if request.method != "GET" or not rest:
            return graph_error(405, "Request_BadRequest", "Unsupported request.")
        if rest[0] == "mailFolders":
            if len(rest) == 1:
                return self._folders(mailbox, mailbox.folders[mailbox.root_id], request, query)
            folder = mailbox.folder(rest[1])
            if folder is None:
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(rest) == 2:
                return Response.json(folder.resource(mailbox))
            if rest[2:] == ["childFolders"]:
                return self._folders(mailbox, folder, request, query)
            if rest[2:] == ["messages"]:
                return self._messages(mailbox, folder, request, query)
            if rest[2:] == ["messages", "delta"]:
                return self._delta(mailbox, folder, request, query)
            if len(rest) >= 4 and rest[2] == "messages":
                return self._message(mailbox, rest[3], rest[4:], query, folder)
        if rest[0] == "messages" and len(rest) >= 2:
            return self._message(mailbox, rest[1], rest[2:], query, None)
        return graph_error(400, "BadRequest", "Resource not found for the segment.")

    def _base(self) -> str:
        return self.identity.base_url + "/v1.0"

    def _next_link(self, request: Request, query: dict[str, str], offset: int) -> str:
        params = {k: v for k, v in query.items() if k not in ("$skip", "$skiptoken")}
        params["$skiptoken"] = base64.urlsafe_b64encode(f"offset={offset}".encode()).decode()
        return self._base() + urlsplit(request.target).path[len("/v1.0"):] + "?" + urlencode(params, quote_via=quote)

    @staticmethod
    def _offset(query: dict[str, str]) -> int:
        if "$skiptoken" in query:
            return int(base64.urlsafe_b64decode(query["$skiptoken"]).decode().split("=")[1])
        return int(query.get("$skip", "0"))

    def _folders(self, mailbox: GraphMailbox, parent: GraphFolder, request: Request,
                 query: dict[str, str]) -> Response:
        include_hidden = query.get("includeHiddenFolders", "false").lower() == "true"
        children = [mailbox.folders[c] for c in parent.children]
        children = [c for c in children if include_hidden or not c.hidden]
        top = min(int(query.get("$top", FOLDER_PAGE_DEFAULT)), self.page_cap or 1000)
        offset = self._offset(query)
        body: dict = {"@odata.context": f"{self._base()}/$metadata#users('{quote(mailbox.upn)}')/mailFolders",
                      "value": [c.resource(mailbox) for c in children[offset:offset + top]]}
        if offset + top < len(children):
            body["@odata.nextLink"] = self._next_link(request, query, offset + top)
        return Response.json(body)

    @staticmethod
    def _message_resource(mailbox: GraphMailbox, folder_id: str, message_id: str, select: set[str]) -> dict:
        message = mailbox.messages[message_id]
        full = {"id": message_id, "@odata.etag": f'W/"{message_id[-12:]}"',
                "receivedDateTime": message.date.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "isRead": message.seen, "flag": {"flagStatus": "flagged" if message.flagged else "notFlagged"},
                "parentFolderId": folder_id, "size": len(message.raw),
                "internetMessageId": next((line.split(b":", 1)[1].strip().decode() for line in
                                           message.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                                           if line.lower().startswith(b"message-id:")), "")}
        if not select:
            return full
        return {k: v for k, v in full.items() if k in select or k in ("id", "@odata.etag")}

    def _messages(self, mailbox: GraphMailbox, folder: GraphFolder, request: Request,
                  query: dict[str, str]) -> Response:
        try:
            top = int(query.get("$top", MESSAGE_PAGE_DEFAULT))
            offset = self._offset(query)
            terms = _parse_filter(query["$filter"]) if query.get("$filter") else []
        except (ValueError, IndexError) as exc:
            return graph_error(400, "ErrorInvalidUrlQueryFilter", f"The query filter contains one or more "
                               f"invalid nodes ({exc}).")
        if not 1 <= top <= MESSAGE_PAGE_MAX:
            return graph_error(400, "ErrorInvalidArgument", f"$top must be between 1 and {MESSAGE_PAGE_MAX}.")
        checks = {"ge": lambda d, v: d >= v, "gt": lambda d, v: d > v, "le": lambda d, v: d <= v,
                  "lt": lambda d, v: d < v}
        selected = [m for m in folder.messages
                    if all(checks[op](mailbox.messages[m].date, value) for op, value in terms)]
        selected.sort(key=lambda m: mailbox.messages[m].date, reverse=True)
        select = {s.strip() for s in query.get("$select", "").split(",") if s.strip()}
        top = min(top, self.page_cap or top)
        page = selected[offset:offset + top]
        body: dict = {"@odata.context": f"{self._base()}/$metadata#users('{quote(mailbox.upn)}')/"
                      f"mailFolders('{folder.id}')/messages",
                      "value": [self._message_resource(mailbox, folder.id, m, select) for m in page]}
        if offset + top < len(selected):
            body["@odata.nextLink"] = self._next_link(request, query, offset + top)
        return Response.json(body)

    def _delta(self, mailbox: GraphMailbox, folder: GraphFolder, request: Request,
               query: dict[str, str]) -> Response:
        """``/mailFolders/{id}/messages/delta``: without a token every message of the folder
        (pages linked by ``@odata.nextLink``), then ``@odata.deltaLink``; with ``$deltatoken``
        the changes since, removed messages as ``{"id", "@removed": {"reason": "deleted"}}``."""
        select = {s.strip() for s in query.get("$select", "").split(",") if s.strip()}
        top = min(int(query.get("$top", MESSAGE_PAGE_DEFAULT)), self.page_cap or MESSAGE_PAGE_MAX)
        offset = self._offset(query)
        if "$deltatoken" in query:
            try:
                since = int(base64.urlsafe_b64decode(query["$deltatoken"]).decode())
            except ValueError:
                return graph_error(400, "ErrorInvalidUrlQuery", "The delta token is invalid.")
            if since < mailbox.delta_floor:
                return graph_error(410, "SyncStateNotFound", "The sync state was not found (resyncRequired): "
                                   "start a new initial synchronisation.")
            items = []
            for _seq, folder_id, what, message_id in (c for c in mailbox.changes if c[0] > since):
                if folder_id != folder.id:
                    continue
                if what == "added" and message_id in mailbox.messages and message_id in folder.messages:
                    items.append(self._message_resource(mailbox, folder.id, message_id, select))
                elif what == "removed":
                    items.append({"id": message_id, "@removed": {"reason": "deleted"}})
        else:
            items = [self._message_resource(mailbox, folder.id, m, select) for m in folder.messages]
        page = items[offset:offset + top]
        body: dict = {"@odata.context": f"{self._base()}/$metadata#Collection(message)", "value": page}
        if offset + top < len(items):
            body["@odata.nextLink"] = self._next_link(request, query, offset + top)
        else:
            token = base64.urlsafe_b64encode(str(mailbox.change_seq).encode()).decode()
            path = urlsplit(request.target).path[len("/v1.0"):]
            body["@odata.deltaLink"] = f"{self._base()}{path}?$deltatoken={quote(token, safe='')}"
        return Response.json(body)

    def _message(self, mailbox: GraphMailbox, message_id: str, rest: list[str], query: dict[str, str],
                 folder: GraphFolder | None) -> Response:
        message = mailbox.messages.get(message_id)
        if message is None or (folder is not None and message_id not in folder.messages):
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if rest == ["$value"]:
            with self._lock:
                self.value_requests[message_id] += 1
            raw = message.raw
            chunks = (raw[i:i + CHUNK] for i in range(0, len(raw), CHUNK))
            return Response(200, chunks, {"Content-Type": "text/plain"}, content_length=len(raw))
        if rest:
            return graph_error(400, "BadRequest", "Resource not found for the segment.")
        folder_id = next(f.id for f in mailbox.folders.values() if message_id in f.messages)
        select = {s.strip() for s in query.get("$select", "").split(",") if s.strip()}
        return Response.json(self._message_resource(mailbox, folder_id, message_id, select))
