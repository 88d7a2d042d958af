"""An IMAPClient whose TCP connection goes through the network policy (``connectors.netpolicy``).

IMAPClient and imaplib resolve the host name themselves when they connect; checking the name
beforehand would leave a window in which a second DNS answer (rebinding) picks another address.
Here imaplib's ``_create_socket`` gets its socket from ``netpolicy.open_connection``: one
resolution, every answer checked, the connection made to a checked address. imaplib keeps the
host *name*, so implicit TLS sends it as SNI and verifies the certificate against it, and so does
STARTTLS (imaplib wraps with ``server_hostname=self.host``).
"""

from __future__ import annotations

import socket
import ssl
from functools import partial

from imapclient import IMAPClient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS, wrap_socket

from connectors.netpolicy import open_connection


class _PlainIMAP4(IMAP4WithTimeout):
    def __init__(self, host: str, port: int, timeout: float | None, *, allow_private: bool) -> None:
        self._open_socket = partial(open_connection, allow_private=allow_private)
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return self._open_socket(self.host, self.port, timeout if timeout is not None else self._timeout)


class _TlsIMAP4(IMAP4_TLS):
    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float | None, *,
                 allow_private: bool) -> None:
        self._open_socket = partial(open_connection, allow_private=allow_private)
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = self._open_socket(self.host, self.port, timeout if timeout is not None else self._timeout)
        try:
            return wrap_socket(sock, self.ssl_context, self.host)
        except BaseException:
            sock.close()
            raise


class CheckedIMAPClient(IMAPClient):
    """``IMAPClient(host, port, ssl=..., ...)`` that connects only where the policy allows.

    Overrides IMAPClient's ``_create_IMAP4`` (where it builds its imaplib object) with the same
    two cases it has for TCP: implicit TLS, or plain (optionally upgraded with STARTTLS later).
    """

    def __init__(self, host: str, port: int, *, allow_private: bool, **kwargs) -> None:
        self._allow_private = allow_private
        super().__init__(host, port, **kwargs)

    def _create_IMAP4(self):
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _TlsIMAP4(self.host, self.port, self.ssl_context, connect_timeout,
                             allow_private=self._allow_private)
        return _PlainIMAP4(self.host, self.port, connect_timeout, allow_private=self._allow_private)



def _probe(host: str, port: int, timeout: float, allow_private: bool, talk) -> bool:
    try:
        sock = open_connection(host, port, timeout, allow_private=allow_private)
    except OSError:
        return False
    try:
        sock.settimeout(timeout)
        return bool(talk(sock))
    except (OSError, ValueError):
        return False
    finally:
        sock.close()


def speaks_tls(host: str, port: int, timeout: float, *, allow_private: bool) -> bool:
    """Whether the port completes a TLS handshake: asked after a plain connection got no greeting
    (a TLS port stays silent to a plain client, each waiting for the other). The certificate is
    not verified and nothing is sent after the handshake: it only tells the user to choose SSL."""
    def talk(sock):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.wrap_socket(sock, server_hostname=host).close()
        return True

    return _probe(host, port, timeout, allow_private, talk)


def speaks_plain_imap(host: str, port: int, timeout: float, *, allow_private: bool) -> bool:
    """Whether the port greets in plain text (``* OK``): asked after a TLS handshake failed, to tell
    the user the port wants STARTTLS or no encryption. Reads the greeting only, sends nothing."""
    return _probe(host, port, timeout, allow_private,
                  lambda sock: sock.recv(64).upper().startswith((b"* OK", b"* PREAUTH", b"* BYE")))
