"""The server's public side: every client connection is accepted here, held to a connection limit and a
deadline for its first bytes, and relayed to granian, which listens on a private Unix socket.

Why a front at all: granian (2.8) tells HTTP/1.1 from HTTP/2 by reading a connection's first bytes, without a
deadline, so a connection that sends nothing (or the first bytes of HTTP/2's preface and no more) is never
closed; and past its connection cap it stops accepting, so new clients hang in the listen backlog without
an answer. An ASGI layer cannot help (it sees no connection before its request head), and no other server
serves HTTP/1.1, h2c and TLS HTTP/2 on one port with these deadlines and the HTTP/2 behaviour our clients
need (Hypercorn ends every in-flight stream when a client sends GOAWAY(NO_ERROR), which the AWS SDK for
JavaScript v3 sends after each response head; granian lets them finish, as RFC 9113 6.8 asks). So granian
serves HTTP, with its own deadlines for what comes after the first bytes (`header_read_timeout` for each
HTTP/1.1 request head and between requests, HTTP/2 keep-alive pings for dead peers; a body's deadline is in
the app, api/guards.py), and this front adds what it lacks:

- at most `max_connections` open connections; one more gets an HTTP/1.1 ServiceUnavailableException and is
  closed (over TLS with HTTP/2 negotiated, only closed);
- a TLS handshake (TLS ends here, so that the deadline below sees plaintext) and the bytes that decide the
  protocol (the first byte, or HTTP/2's 24-byte preface) within `deadline_s`, else the connection is closed;
- a lingering close: when granian closes a connection whose client is still sending (an early answer: a
  refusal before the body, a body's deadline), closing at once would reset the connection, and the reset
  can discard the answer before the client reads it; so the front stops sending, reads and drops what still
  comes for a while, and closes then.

Bytes are relayed as they come, both ways, with flow control (a side that cannot keep up pauses the other's
reading), and a close or half-close on either side is passed on: granian sees a client that disconnects as
the ASGI `http.disconnect` it needs to drop that client's work.

The client's address goes along beside the bytes, not in them: granian's peer is the Unix socket the front
connects from, and the front binds that socket to a name that spells the client's address
(`203.0.113.7:51234`, `[2001:db8::1]:51234`) in the private folder, which granian reports as the
connection's peer and `ClientAddress` reads back into the ASGI scope. granian (2.8) reads no PROXY
protocol, and a header would mean rewriting request heads in the relay (HPACK-coded ones, for HTTP/2);
this way no byte a client sends can name another address, whatever the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from sdxl_bedrock.logs import address_text
from sdxl_bedrock.metrics import Metrics

log = logging.getLogger(__name__)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# A connection granian is done with (or one refused) ends gracefully, as nginx's lingering close does: what
# the client still sends is read and dropped until it has been quiet this long, for this long at most.
LINGER_QUIET_S = 2.0
LINGER_MAX_S = 30.0
# At most one log line per this many seconds about refused connections (the metric counts them all).
REFUSAL_LOG_EVERY_S = 10.0


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2 or later (HTTP/2 requires it), HTTP/2 or HTTP/1.1 by ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


class Front:
    """Accepts on a listening socket and relays each connection to the Unix socket at `upstream`.

    `refusal()` gives the bytes a connection beyond `max_connections` is answered with (an HTTP/1.1
    response that closes the connection). With `clients` (a folder only this user can enter), each relayed
    connection comes from a socket named there for its client (`ClientAddress`)."""

    def __init__(
        self,
        upstream: Path,
        *,
        max_connections: int,
        deadline_s: float,
        refusal: Callable[[], bytes],
        metrics: Metrics,
        clients: Path | None = None,
    ) -> None:
        self.upstream = upstream
        self.max_connections = max_connections
        self.deadline_s = deadline_s
        self.refusal = refusal
        self.metrics = metrics
        self.clients = clients
        self.open: set[ClientSide] = set()
        self.server: asyncio.Server | None = None
        self._last_refusal_log = 0.0

    async def start(self, listener: socket.socket, tls: ssl.SSLContext | None, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ClientSide(self),
            sock=listener,
            backlog=backlog,
            ssl=tls,
            ssl_handshake_timeout=self.deadline_s if tls is not None else None,
        )

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def close_all(self) -> None:
        """Close every connection still open (once granian has answered what it will)."""
        for client in list(self.open):
            client.transport.close()

    async def upstream_socket(self, peer: Any) -> socket.socket:
        """A socket connected to granian's, named first for `peer` (the client's address) in `clients`."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name = None
        try:
            sock.setblocking(False)
            if self.clients is not None and peer:
                name = self.clients / address_text(peer)
                # The socket keeps its address once the name is gone, so a name lasts only while its
                # connection is made; one still there is that of a connection from the same address and
                # port being made (a client that reuses its port at once), and binding needs it gone.
                with contextlib.suppress(FileNotFoundError):
                    name.unlink()
                sock.bind(str(name))
            await loop.sock_connect(sock, str(self.upstream))
        except BaseException:
            sock.close()
            raise
        finally:
            if name is not None:
                with contextlib.suppress(FileNotFoundError):
                    name.unlink()
        return sock

    def refused(self) -> None:
        self.metrics.connections_refused.inc()
        now = time.monotonic()
        if now - self._last_refusal_log >= REFUSAL_LOG_EVERY_S:
            self._last_refusal_log = now
            log.warning(
                "refusing connections: %d are open (--max-connections); see sdxl_connections_refused_total",
                len(self.open),
            )


class ClientSide(asyncio.Protocol):
    """A client's connection: first bytes under a deadline, then relayed to granian."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport
        self.upstream: asyncio.Transport | None = None
        self.pending = bytearray()  # what came before granian's side was connected
        self.deadline: asyncio.TimerHandle | None = None
        self.connecting = False
        # granian's side is not taking more (its transport's buffer is past its high-water mark): the
        # client's reading stays paused until it is, whatever else would resume it.
        self.upstream_full = False
        self.client_eof = False
        self.closed = False
        self.lingering = False
        self.linger_timer: asyncio.TimerHandle | None = None
        self.linger_ends = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        front = self.front
        if len(front.open) >= front.max_connections:
            self.refuse()
            return
        front.open.add(self)
        front.metrics.open_connections.set(len(front.open))
        self.deadline = asyncio.get_running_loop().call_later(front.deadline_s, self.too_slow)

    def refuse(self) -> None:
        self.front.refused()
        ssl_object = self.transport.get_extra_info("ssl_object")
        # An HTTP/2 client would not read an HTTP/1.1 answer: it only sees the connection close.
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self.transport.write(self.front.refusal())
        self.linger()

    def linger(self) -> None:
        """End the connection gracefully: no more to send; what comes is dropped until the client has been
        quiet for LINGER_QUIET_S (LINGER_MAX_S at most), or closes."""
        if self.lingering or self.closed:
            return
        self.lingering = True
        self.upstream = None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.client_eof:  # the client sends no more: nothing to wait for
            self.transport.close()
            return
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except OSError:  # the client is gone already
            self.transport.close()
            return
        self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        self.linger_ends = loop.time() + LINGER_MAX_S
        self.linger_timer = loop.call_later(LINGER_QUIET_S, self.transport.close)

    def dropped(self) -> None:
        """Data came while lingering: wait for quiet again, within LINGER_MAX_S."""
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        loop = asyncio.get_running_loop()
        quiet = min(LINGER_QUIET_S, max(0.0, self.linger_ends - loop.time()))
        self.linger_timer = loop.call_later(quiet, self.transport.close)

    def too_slow(self) -> None:
        self.deadline = None
        self.front.metrics.connections_timed_out.inc()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.dropped()
            return
        if self.upstream is not None:
            self.upstream.write(data)
            return
        self.pending += data
        if not self.connecting and protocol_decided(self.pending):
            self.connecting = True
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None
            asyncio.get_running_loop().create_task(self.connect())
        if self.connecting:
            # Until granian's side is connected, what comes waits here: not more than a read or two.
            self.transport.pause_reading()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await self.front.upstream_socket(self.transport.get_extra_info("peername"))
            upstream, _ = await loop.create_unix_connection(lambda: UpstreamSide(self), sock=sock)
        except OSError as error:
            log.warning("could not reach the HTTP server behind the front: %s", error)
            self.transport.abort()
            return
        if self.closed or self.lingering:
            upstream.close()
            return
        self.upstream = upstream
        upstream.write(bytes(self.pending))
        self.pending.clear()
        if self.client_eof:
            try:
                upstream.write_eof()
            except OSError:
                upstream.close()
        elif not self.upstream_full:
            # The pending bytes may have filled granian's side already (a client that sent much before the
            # relay was connected): asyncio says so once, and resuming here would undo it for good, so the
            # relay would buffer the rest of the body in memory.
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.lingering:
            self.transport.close()
            return False
        if self.upstream is not None:
            try:
                self.upstream.write_eof()  # a half-close, passed on
            except OSError:
                self.upstream.close()
        elif not self.connecting:
            self.transport.close()  # nothing to relay
            return False
        # Keep sending the answer on a half-closed TCP connection (a TLS one closes whatever is returned).
        return self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in (self.deadline, self.linger_timer):
            if timer is not None:
                timer.cancel()
        self.deadline = self.linger_timer = None
        if self in self.front.open:
            self.front.open.discard(self)
            self.front.metrics.open_connections.set(len(self.front.open))
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()


class UpstreamSide(asyncio.Protocol):
    """granian's side of a relayed connection."""

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        self.client.linger()  # granian is done with the connection
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.transport is not None:
            # granian answers early (a refusal before the body is read) and closes; the client's next bytes
            # then fail to write, and asyncio drops the transport without reading what granian sent before
            # it closed. That answer is still in the socket: pass it on before the close.
            client = self.client
            for data in unread(self.transport):
                if client.closed or client.lingering:
                    break
                client.transport.write(data)
        self.client.linger()

    def pause_writing(self) -> None:
        self.client.upstream_full = True
        if not self.client.lingering:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.upstream_full = False
        self.client.transport.resume_reading()


def unread(transport: asyncio.BaseTransport, limit: int = 1 << 20) -> list[bytes]:
    """What is still in the receive buffer of `transport`'s socket (at most `limit` bytes), read without
    waiting; called from `connection_lost`, before asyncio closes the socket."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return []
    chunks: list[bytes] = []
    with sock.dup() as raw:
        raw.setblocking(False)
        left = limit
        while left > 0:
            try:
                data = raw.recv(min(left, 65536))
            except OSError:  # nothing more now (BlockingIOError), or a reset after the last byte
                break
            if not data:
                break
            chunks.append(data)
            left -= len(data)
    return chunks


def protocol_decided(head: bytes | bytearray) -> bool:
    """Whether `head` (a connection's first bytes) tells HTTP/2's preface from anything else: granian reads
    until it can tell, without a deadline, so it gets the connection only once it can."""
    known = min(len(head), len(H2_PREFACE))
    return known == len(H2_PREFACE) or head[:known] != H2_PREFACE[:known]


def client_of_name(name: str) -> tuple[str, int] | None:
    """The (host, port) a name of `Front.upstream_socket` spells, or None for any other name."""
    host, _, port = name.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host.partition("%")[0])
        return host, int(port)
    except ValueError:
        return None


class ClientAddress:
    """ASGI middleware, outermost: `scope["client"]` is the client's (host, port) as it connected.

    Behind the front (`clients` given, the folder where the front names its sockets) granian's peer is one
    of those names, read back into an address; a peer anywhere else is no client's address. Without the
    front, granian's peer is the client. Either way the port is an int, as ASGI has it (granian's is text).
    """

    def __init__(self, app: ASGIApp, clients: Path | None) -> None:
        self.app = app
        self.prefix = None if clients is None else f"{clients}/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["client"] = self.client_of(scope.get("client"))
        await self.app(scope, receive, send)

    def client_of(self, peer: Any) -> tuple[str, int] | None:
        if not peer or not peer[0]:
            return None
        host = str(peer[0])
        if self.prefix is None:
            return host, int(peer[1])
        name = host.removeprefix(self.prefix)
        if name == host or "/" in name:
            return None
        return client_of_name(name)
