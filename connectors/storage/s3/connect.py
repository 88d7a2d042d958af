"""botocore HTTP connections that go through the network policy (``connectors.netpolicy``).

botocore's urllib3 connections resolve the endpoint's host name themselves when they connect,
so a check made beforehand could be bypassed by a second DNS answer (rebinding). Installed on
a client built for a tenant's endpoint URL, these connection classes open every new TCP
connection with ``netpolicy.open_connection`` — one resolution, every answer checked, connect to
a checked address — while urllib3 keeps the host *name* for the Host header, SNI and
certificate verification. Pooled connections are checked when they are opened, so a long
export re-checks whenever botocore opens a new one. A refusal is raised to the caller as
``PrivateAddressRefused`` (a ``ConnectionFailed``), without botocore's retries.

A connection through a proxy (HTTPS_PROXY, set by the operator) goes to the proxy unchecked:
the proxy resolves the endpoint, and it is the proxy's job to refuse internal addresses.
"""

from __future__ import annotations

import socket
import typing

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from connectors.netpolicy import PrivateAddressRefused, open_connection


class _CheckedConnect:
    """Mixin for urllib3 connections: urllib3's ``_new_conn``, through the policy."""

    def _new_conn(self) -> socket.socket:
        conn = typing.cast(HTTPConnection, self)
        if conn.proxy is not None:
            return super()._new_conn()  # type: ignore[misc]
        try:
            return open_connection(conn._dns_host, conn.port, conn.timeout, allow_private=False,
                                   connect=create_connection, source_address=conn.source_address,
                                   socket_options=conn.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})") from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc


class CheckedHTTPConnection(_CheckedConnect, AWSHTTPConnection):
    pass


class CheckedHTTPSConnection(_CheckedConnect, AWSHTTPSConnection):
    pass


class CheckedHTTPConnectionPool(AWSHTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(AWSHTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


def _refusal_is_final(caught_exception=None, **_) -> None:
    """botocore retries any exception a connection raises; a refused address is not worth a
    retry, and callers get it as itself (a ConnectionFailed with the reason), not wrapped."""
    refusal = getattr(caught_exception, "kwargs", {}).get("error")
    if isinstance(refusal, PrivateAddressRefused):
        raise refusal


def check_every_connection(client) -> None:
    """Make every TCP connection of the botocore ``client`` go through the policy.

    botocore has no public hook for its connection classes: its URLLib3Session keeps them in
    ``_pool_classes_by_scheme``, the dict its pool managers share. This fails loudly (rather
    than leaving the client unchecked) if a botocore release moves them.
    """
    session = client._endpoint.http_session
    classes = getattr(session, "_pool_classes_by_scheme", None)
    manager = getattr(session, "_manager", None)
    if not isinstance(classes, dict) or manager is None or manager.pool_classes_by_scheme is not classes:
        raise RuntimeError("This botocore version keeps its connection pools elsewhere; "
                           "connectors.storage.s3.connect must be updated before S3 endpoints can be checked.")
    classes.update(http=CheckedHTTPConnectionPool, https=CheckedHTTPSConnectionPool)
    client.meta.events.register_first("needs-retry.s3", _refusal_is_final)
