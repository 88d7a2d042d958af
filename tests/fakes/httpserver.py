"""A tiny threaded HTTP/1.1 server for the fakes (stdlib only).

Each fake is an object with ``handle(request) -> Response``; this module turns it into a server
on a loopback port, optionally over TLS. Keep-alive is on (HTTP/1.1) because the real clients
(httplib2, requests) reuse connections and the fakes must be fast enough for the benchmarks.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message as HeaderMap
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    target: str  # the raw request target (path and query, percent-encoded as sent)
    headers: HeaderMap
    body: bytes
    client: tuple[str, int] = ("", 0)

    @property
    def path(self) -> str:
        """The percent-encoded path (handlers split it on ``/`` before decoding segments)."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}

    def bearer_token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        if value[:7].lower() == "bearer ":
            return value[7:].strip()
        return None


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # required when body is an iterable of chunks
    # Called just before the last bytes go out: the fake's bookkeeping (concurrency slots) must be
    # done by the time the client has the whole response, or a well-behaved client would race it.
    on_finish: Callable[[], None] | None = None

    @classmethod
    def json(cls, data: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json; charset=UTF-8", **(headers or {})})

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Response:
        return cls(status, b"", {"Location": location})


def _lookahead(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    iterator = iter(chunks)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for chunk in iterator:
        yield previous, False
        previous = chunk
    yield previous, True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(10)
            self.connection.do_handshake()
            self.connection.settimeout(None)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, self.headers, body, self.client_address)
        try:
            response = self.server.app.handle(request)
        except Exception:  # a bug in a fake must show up, not hang the client
            traceback.print_exc()
            response = Response.json({"error": "fake server bug"}, 500)
        self._write(response)

    def _write(self, response: Response) -> None:
        chunked_body = not isinstance(response.body, bytes | bytearray)
        length = response.content_length if chunked_body else len(response.body)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if not chunked_body:
            if response.on_finish:
                response.on_finish()
            self.wfile.write(response.body)
            return
        finished = False
        try:
            for chunk, last in _lookahead(response.body):
                if last and response.on_finish:
                    finished = True
                    response.on_finish()
                self.wfile.write(chunk)
        finally:
            if response.on_finish and not finished:
                response.on_finish()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, app, ssl_context: ssl.SSLContext | None, verbose: bool):
        self.app = app
        self.ssl_context = ssl_context
        self.verbose = verbose
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up or refusing our test CA are normal in tests; anything else is printed."""
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def get_request(self):
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            # The handshake happens in the connection's own thread (see _Handler.setup).
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


class ServerThread:
    """Serve ``app`` on ``host:port`` (0 = a free port) in a daemon thread until ``stop()``."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, verbose: bool = False):
        self._server = _Server((host, port), app, ssl_context, verbose)
        self.host = host
        self.port = self._server.server_address[1]
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake:{self.port}",
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Run in the calling thread (the command-line entry points)."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
