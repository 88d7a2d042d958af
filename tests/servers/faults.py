"""Fault-injecting proxies: real sockets, real protocols, failures on cue.

``TcpFaultProxy`` forwards TCP (IMAP) and, per connection, can cut the connection after N bytes
from the server — optionally counting only once the client has sent a marker such as
``BODY.PEEK[]`` (so the cut lands mid-FETCH) — or stall it (the client times out). It records
what each client sent, so tests can check the commands (Yahoo's ≤1,000-message ranges).

``S3FaultProxy`` is an HTTP reverse proxy in front of an S3 endpoint (rclone) that answers
500 InternalError to the first N UploadPart requests (or CompleteMultipartUpload, or PutObject /
DeleteObject of keys with a given ending), or drops the connection instead, and logs every
request. Signatures stay valid: the Host header and body pass through unchanged.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from legacyflo.localservices import free_port


@dataclass
class Fault:
    """What to do to one proxied connection (connections without a fault pass through)."""

    cut_after: int | None = None  # server→client bytes, then RST both sides
    stall_after: int | None = None  # server→client bytes, then stop forwarding (no close)
    after_marker: bytes | None = None  # start counting once the client sent this


@dataclass
class ConnectionLog:
    client_bytes: bytearray = field(default_factory=bytearray)
    server_bytes: int = 0
    faulted: bool = False

    def commands(self) -> list[str]:
        """Client lines as text (literals included raw, fine for command inspection)."""
        return [line.decode("utf-8", "replace") for line in bytes(self.client_bytes).split(b"\r\n")]


class TcpFaultProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1",
                 faults: dict[int, Fault] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        """``faults`` maps the 0-based connection index to its Fault; the proxy listens on
        ``host:port`` (any loopback address, e.g. 127.0.0.2; port 0: a free one)."""
        self.target = (target_host, target_port)
        self.faults = dict(faults or {})
        self.host = host
        self.connections: list[ConnectionLog] = []
        self._server = socket.create_server((host, port))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> TcpFaultProxy:
        self._thread.start()
        return self

    def __enter__(self) -> TcpFaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        try:  # wakes the accept() thread, so the listening socket is really gone (port reusable)
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                _hard_close(sock)

    @property
    def faults_triggered(self) -> int:
        return sum(c.faulted for c in self.connections)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _hard_close(client)
                continue
            with self._lock:
                index = len(self.connections)
                log = ConnectionLog()
                self.connections.append(log)
                self._sockets += [client, upstream]
            fault = self.faults.get(index)
            state = {"armed": fault is not None and fault.after_marker is None, "count": 0}
            threading.Thread(target=self._pump_client, args=(client, upstream, log, fault, state),
                             daemon=True).start()
            threading.Thread(target=self._pump_server, args=(upstream, client, log, fault, state),
                             daemon=True).start()

    def _pump_client(self, src, dst, log: ConnectionLog, fault: Fault | None, state: dict) -> None:
        try:
            while data := src.recv(65536):
                log.client_bytes += data
                if fault and not state["armed"] and fault.after_marker and fault.after_marker in log.client_bytes:
                    state["armed"] = True
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(dst)

    def _pump_server(self, src, dst, log: ConnectionLog, fault: Fault | None, state: dict) -> None:
        try:
            while data := src.recv(65536):
                if fault and state["armed"]:
                    limit = fault.cut_after if fault.cut_after is not None else fault.stall_after
                    if state["count"] + len(data) > limit:
                        keep = max(0, limit - state["count"])
                        dst.sendall(data[:keep])
                        log.faulted = True
                        if fault.cut_after is not None:
                            _hard_close(dst)
                            _hard_close(src)
                        else:
                            self._stop.wait()  # stall: hold both sockets open, forward nothing
                        return
                    state["count"] += len(data)
                log.server_bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(dst)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _hard_close(sock: socket.socket) -> None:
    """Drop the connection like a dead network path: the peer sees EOF/reset at once.

    shutdown() first: close() alone does not wake a recv() blocked in another thread, and the
    connection would stay up. SO_LINGER 0 turns the close into a reset.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@dataclass
class S3Request:
    method: str
    path: str
    query: dict
    status: int

    @property
    def operation(self) -> str:
        if self.method == "PUT" and "partNumber" in self.query:
            return "UploadPart"
        if self.method == "POST" and "uploadId" in self.query:
            return "CompleteMultipartUpload"
        if self.method == "POST" and "uploads" in self.query:
            return "CreateMultipartUpload"
        if self.method == "DELETE" and "uploadId" in self.query:
            return "AbortMultipartUpload"
        return f"{self.method} {self.path}"


_S3_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
             b"<Message>injected by S3FaultProxy</Message></Error>")


class S3FaultProxy:
    """``url`` is what clients use; failures are consumed in order of arrival."""

    def __init__(self, target_url: str, *, fail_upload_parts: int = 0, fail_completes: int = 0,
                 fail_puts_ending: str = "", fail_puts: int = 0, fail_deletes_ending: str = "",
                 fail_deletes: int = 0, drop_instead: bool = False) -> None:
        """``fail_puts`` PutObject requests whose key ends with ``fail_puts_ending`` fail too, and
        ``fail_deletes`` DeleteObject requests whose key ends with ``fail_deletes_ending``."""
        parts = urlsplit(target_url)
        self.target = (parts.hostname, parts.port)
        self.remaining = {"UploadPart": fail_upload_parts, "CompleteMultipartUpload": fail_completes,
                          "PutObject": fail_puts, "DeleteObject": fail_deletes}
        self.put_suffix, self.delete_suffix = fail_puts_ending, fail_deletes_ending
        self.drop_instead = drop_instead
        self.requests: list[S3Request] = []
        self.injected = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = parse_qs(split.query, keep_blank_values=True)
                request = S3Request(self.command, split.path, query, 0)
                with proxy._lock:
                    op = request.operation
                    if op.startswith("PUT ") and proxy.put_suffix and split.path.endswith(proxy.put_suffix):
                        op = "PutObject"
                    elif op.startswith("DELETE ") and proxy.delete_suffix and split.path.endswith(proxy.delete_suffix):
                        op = "DeleteObject"
                    inject = proxy.remaining.get(op, 0) > 0
                    if inject:
                        proxy.remaining[op] -= 1
                        proxy.injected += 1
                if inject:
                    request.status = 500
                    proxy.requests.append(request)
                    if proxy.drop_instead:
                        self.close_connection = True
                        _hard_close(self.connection)
                        return
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_S3_ERROR)))
                    self.end_headers()
                    self.wfile.write(_S3_ERROR)
                    return
                conn = http.client.HTTPConnection(*proxy.target, timeout=120)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("expect", "connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                request.status = response.status
                proxy.requests.append(request)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding",
                                           "keep-alive"):
                        self.send_header(key, value)
                # a HEAD answer has no body: its Content-Length is the object's size
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else len(data)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def operations(self) -> list[tuple[str, int]]:
        return [(r.operation, r.status) for r in self.requests]


class ImapRewriteProxy:
    """An IMAP proxy that rewrites protocol lines (never literals) in both directions.

    ``client_line`` / ``server_line`` get each CRLF-terminated line (literal announcements
    ``{n}`` included) and return its replacement; literal bytes pass through untouched. Used to
    make Dovecot look like Gmail: advertise X-GM-EXT-1, flag a folder \\All, strip X-GM-LABELS
    from FETCH commands and add labels to FETCH responses.
    """

    _LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")

    def __init__(self, target_port: int, *, client_line=lambda line: line,
                 server_line=lambda line: line) -> None:
        self.target = ("127.0.0.1", target_port)
        self.client_line, self.server_line = client_line, server_line
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> ImapRewriteProxy:
        return self

    def __exit__(self, *exc) -> None:
        self._server.close()
        for sock in self._sockets:
            _hard_close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, self.client_line), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.server_line), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rewrite) -> None:
        reader = src.makefile("rb")
        try:
            while line := reader.readline():
                out = rewrite(line)
                dst.sendall(out)
                literal = self._LITERAL.search(line)
                if literal:
                    left = int(literal.group(1))
                    while left:
                        chunk = reader.read(min(left, 65536))
                        if not chunk:
                            return
                        dst.sendall(chunk)
                        left -= len(chunk)
        except OSError:
            pass
        finally:
            _shutdown(dst)
