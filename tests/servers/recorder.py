"""A loopback HTTP endpoint that records every request it receives and refuses them all.

Stands in for "an endpoint URL a tenant typed": a test points the portal at it and then reads
exactly what arrived (method, path, headers, body), e.g. to prove that no request carrying the
portal's own AWS access key or session token ever got there. Every answer is an S3-style 403.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def mentions(self, text: str) -> bool:
        blob = " ".join([self.path, *self.headers.values()]).encode() + self.body
        return text.encode() in blob


class RecordingEndpoint:
    def __init__(self) -> None:
        self.received: list[Received] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                endpoint.received.append(Received(self.command, self.path, dict(self.headers.items()),
                                                  self.rfile.read(length) if length else b""))
                body = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>recorded</Message></Error>'
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _record

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
