"""Serve the app with granian: HTTP/1.1 and HTTP/2 (cleartext prior knowledge, or TLS by ALPN), one port,
behind a front (front.py) that holds connections to a limit and to deadlines granian lacks.

The port is this server's alone: it is bound here, before the model loads (so a busy port fails at once),
without SO_REUSEPORT (so no second server can bind it and take part of the traffic), and accepted on by the
front, which relays each connection to granian on a Unix socket in a folder only this user can enter. With
`--no-front` granian accepts on the port's socket itself (behind a reverse proxy, which holds connections to
their limits and deadlines, the relay would only double the bytes' way).

Deadlines, each `--idle-timeout` long: a TLS handshake and a connection's first bytes (the front; with
`--no-front`, none); each HTTP/1.1 request head, and the wait for the next one on a kept-alive connection
(granian's `header_read_timeout`); an HTTP/2 peer that stops answering pings (granian's keep-alive). A
body's is `--body-timeout` (api/guards.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.http import HTTP1Settings, HTTP2Settings
from granian.server.embed import Server
from starlette.responses import Response
from starlette.routing import Match

from sdxl_bedrock.api.guards import listens_on_loopback
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import Overloaded
from sdxl_bedrock.logs import configure_logging, survive_closed_output
from sdxl_bedrock.serve.front import ClientAddress, Front, server_tls_context

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp

    from sdxl_bedrock.runtime import Runtime

log = logging.getLogger(__name__)
BACKLOG = 1024
# Streams one HTTP/2 connection may have open at once (granian's default is 200).
MAX_STREAMS_PER_CONNECTION = 100
OVERLOADED = "The server has too many open connections; retry shortly."
# A Unix socket's path holds 107 bytes on Linux (108 with its NUL); the longest name the front gives a
# client's socket is `[`, an IPv6 address (39: one with an IPv4 tail is IPv4-mapped, and shorter), `%`, an
# interface name (15), `]:` and a port (5).
SOCKET_PATH_MAX = 107
LONGEST_CLIENT_NAME = 63


class PortUnavailable(Exception):
    """The address cannot be listened on; the message says why in one line (`port 8080 is in use ...`)."""


def listen_exclusively(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A TCP socket listening on `host`:`port` (a name or an address; IPv4 or IPv6), that no other socket
    can share. Raises PortUnavailable."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise PortUnavailable(f"cannot listen on {host}: {error.strerror}") from None
    listener = socket.socket(family, kind, protocol)
    try:
        # SO_REUSEADDR lets a restart bind past the last run's connections in TIME_WAIT; on Linux it never
        # lets two sockets listen on one port. SO_REUSEPORT would.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(backlog)
    except OSError as error:
        listener.close()
        raise PortUnavailable(bind_failure(error, host, port)) from None
    return listener


def check_port(host: str, port: int) -> None:
    """Raise PortUnavailable unless `host`:`port` could be listened on now (for a server that binds it
    later itself, such as Ray's proxy)."""
    listen_exclusively(host, port).close()


def bind_failure(error: OSError, host: str, port: int) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} is in use (on {host}); stop the program that holds it, or choose another --port"
    if error.errno == errno.EACCES:
        return f"no permission to listen on port {port} (below 1024 that needs privileges)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine"
    return f"cannot listen on {host}:{port}: {error.strerror}"


def open_warning(settings: Settings) -> str | None:
    """The warning `serve` prints when anyone who reaches the address could use the server unchecked."""
    if settings.auth_enabled or listens_on_loopback(settings.host):
        return None
    return (
        f"sdxl-bedrock: warning: listening on {settings.host} with auth off: anyone who can reach this "
        "address can use the model. Give --access-key-file or --api-key-file, or listen on 127.0.0.1 "
        "behind a reverse proxy (docs/SECURITY.md)."
    )


def refusal_bytes(app: FastAPI) -> bytes:
    """An HTTP/1.1 ServiceUnavailableException in the default wire's shape, that closes the connection."""
    response: Response = app.state.wires.wires[0].error_response(Overloaded(OVERLOADED), str(uuid.uuid4()))
    lines = [f"HTTP/1.1 {response.status_code} {HTTPStatus(response.status_code).phrase}"]
    lines += [f"{name.decode('latin-1')}: {value.decode('latin-1')}" for name, value in response.raw_headers]
    lines += ["x-content-type-options: nosniff", "connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + bytes(response.body)


class ListenerServer(Server):
    """granian accepting on a socket already listening (granian's own TCP listener would set SO_REUSEPORT,
    which lets a second server share the port)."""

    def __init__(self, app: ASGIApp, listener: socket.socket, **options: Any) -> None:
        super().__init__(app, **options)
        self.listener = listener

    def _init_shared_socket(self) -> None:
        # granian (2.8) has no option for a socket bound elsewhere; its workers accept on `_shd` when `_ssp`
        # (the address each would bind itself) is unset. The descriptor is granian's from here: it closes it.
        self.listener.setblocking(False)
        self._ssp = None
        self._shd = SocketHolder(self.listener.detach(), False, BACKLOG)  # type: ignore[call-arg,assignment]


def granian_server(app: ASGIApp, settings: Settings, bind: Path | socket.socket) -> Server:
    """granian on the Unix socket at `bind` (behind the front), or accepting on the listening socket `bind`
    (`--no-front`: TLS, when configured, is granian's then)."""
    idle_ms = int(settings.idle_timeout_s * 1000)
    options: dict[str, Any] = dict(
        interface=Interfaces.ASGI,
        http=HTTPModes.auto,
        websockets=False,
        backlog=BACKLOG,
        # The front holds the connection limit: granian's own (a cap past which it stops accepting) is no
        # lower. Without the front it is the only one.
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=idle_ms),
        http2_settings=HTTP2Settings(
            keep_alive_interval=idle_ms,
            keep_alive_timeout=math.ceil(settings.idle_timeout_s),
            max_concurrent_streams=MAX_STREAMS_PER_CONNECTION,
        ),
        log_enabled=False,
    )
    if isinstance(bind, Path):
        return Server(app, uds=bind, **options)
    if settings.tls_cert and settings.tls_key:
        # The front's floor (server_tls_context); granian's own default would refuse TLS 1.2 clients.
        options.update(
            ssl_cert=settings.tls_cert, ssl_key=settings.tls_key, ssl_protocol_min=SSLProtocols.tls12
        )
    return ListenerServer(app, bind, address=settings.host, port=settings.port, **options)


def private_folder() -> Path:
    """A new folder only this user can enter, its path short enough for every socket the front names in it
    (a TMPDIR may be long; /tmp is not)."""
    folder = Path(tempfile.mkdtemp(prefix="sdxl-bedrock-"))
    if len(os.fsencode(folder)) + 1 + LONGEST_CLIENT_NAME > SOCKET_PATH_MAX:
        folder.rmdir()
        folder = Path(tempfile.mkdtemp(prefix="sdxl-bedrock-", dir="/tmp"))
    return folder


async def until_exists(path: Path) -> None:
    while not path.exists():
        await asyncio.sleep(0.02)


def serve(settings: Settings, verbose: bool = False) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code: 0 after a shutdown, 1 when the port cannot
    be listened on or the model cannot be loaded (each said in one line on stderr)."""
    survive_closed_output()
    configure_logging(json_lines=settings.log_json, verbose=verbose)
    if not verbose:
        # Read when transformers is first imported (by the engine, later): its import-time notices are noise.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        listener = listen_exclusively(settings.host, settings.port)
    except PortUnavailable as error:
        print(f"sdxl-bedrock: {error}", file=sys.stderr, flush=True)
        return 1
    warning = open_warning(settings)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    return asyncio.run(_serve(settings, listener))


async def _serve(settings: Settings, listener: socket.socket) -> int:
    from sdxl_bedrock.app import create_app

    exit_code = 0
    server: Server | None = None
    loading_since = time.monotonic()

    def announce(runtime: Runtime) -> None:
        assert runtime.engine is not None
        engine = runtime.engine.default
        served = len(runtime.library.listing.checkpoints)
        library = f", {served} checkpoints in the library" if settings.checkpoint_dirs else ""
        print(
            f"sdxl-bedrock listening on {settings.scheme}://{settings.host}:{settings.port} "
            f"(model {settings.model}{library}, device {engine.device}, "
            f"dtype {str(engine.dtype).removeprefix('torch.')}, "
            f"VAE {str(engine.pipe.vae.dtype).removeprefix('torch.')}), "
            f"ready in {time.monotonic() - loading_since:.1f} s; {landmarks(app)}",
            flush=True,
        )

    def give_up(error: BaseException) -> None:
        nonlocal exit_code
        exit_code = 1
        stop()
        from sdxl_bedrock.library import LibraryError

        if isinstance(error, LibraryError):
            print(f"sdxl-bedrock: the model library: {error}", file=sys.stderr, flush=True)
            return
        print(f"sdxl-bedrock: could not load model {settings.model!r}: {error}", file=sys.stderr, flush=True)

    app = create_app(settings, on_ready=announce, on_load_failed=give_up)
    runtime: Runtime = app.state.runtime
    front: Front | None = None
    socket_folder: Path | None = None
    if settings.front:
        # granian's socket, and the front's sockets towards it (each named for its client), where only this
        # user can reach them: every client comes through the front.
        socket_folder = private_folder()
        upstream = socket_folder / "http.sock"
        server = granian_server(ClientAddress(app, clients=socket_folder), settings, upstream)
        front = Front(
            upstream,
            max_connections=settings.max_connections,
            deadline_s=settings.idle_timeout_s,
            refusal=lambda: refusal_bytes(app),
            metrics=runtime.metrics,
            clients=socket_folder,
        )
    else:
        server = granian_server(ClientAddress(app, clients=None), settings, listener)
    tls = (
        server_tls_context(settings.tls_cert, settings.tls_key)
        if settings.tls_cert and settings.tls_key
        else None
    )
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if front is not None:
            front.stop_accepting()
        assert server is not None
        server.stop()

    async def drain_then_stop() -> None:
        await runtime.drain(settings.shutdown_timeout_s)
        stop()

    def on_signal() -> None:
        # The first signal drains (new requests get 503, accepted ones finish); a second one stops at once.
        if stopping:
            stop()
            return
        stopping.append(asyncio.get_running_loop().create_task(drain_then_stop()))
        print("sdxl-bedrock: shutting down, finishing accepted requests", file=sys.stderr, flush=True)

    async def open_front() -> None:
        if front is not None:
            await until_exists(front.upstream)
            await front.start(listener, tls, BACKLOG)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    # The app's lifespan starts loading as soon as granian runs it, below; clients wait in the listen backlog
    # until granian's socket is there (or, without the front, until granian accepts).
    print(f"sdxl-bedrock: loading model {settings.model} ...", flush=True)
    loading_since = time.monotonic()
    opening = loop.create_task(open_front())
    try:
        await server.serve()
    finally:
        opening.cancel()
        if front is not None:
            front.stop_accepting()
            front.close_all()
        if socket_folder is not None:
            shutil.rmtree(socket_folder, ignore_errors=True)
    return exit_code


def landmarks(app: FastAPI) -> str:
    """Where a newcomer starts, as far as the app serves it: `playground at /, ...`."""
    named = {"/": "playground", "/docs": "interactive docs", "/openapi.json": "API description"}
    return ", ".join(f"{what} at {path}" for path, what in named.items() if serves(app, path))


def serves(app: FastAPI, path: str) -> bool:
    """Whether a GET of `path` reaches one of the app's routes (however it was added)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def exit_now(code: int) -> None:
    """Leave without interpreter teardown: granian's Rust threads can panic while Python finalizes."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
