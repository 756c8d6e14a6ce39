"""Serve the app with granian: HTTP/1.1 and HTTP/2 (cleartext prior knowledge, or TLS by ALPN), one port.

The port is this server's alone: it is bound here, before the model loads (so a busy port fails at once),
without SO_REUSEPORT (so no second server can bind it and take part of the traffic), and handed to granian.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from granian.constants import HTTPModes, Interfaces
from granian.net import SocketHolder
from granian.server.embed import Server
from starlette.routing import Match

from sdxl_bedrock.config import Settings
from sdxl_bedrock.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sdxl_bedrock.runtime import Runtime

log = logging.getLogger(__name__)
BACKLOG = 1024


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
        # lets two sockets listen on one port. SO_REUSEPORT (what granian sets on its own sockets) would.
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


class ServerOnSocket(Server):
    """granian's embedded server on a socket bound by `listen_exclusively`.

    granian binds its own socket with SO_REUSEPORT (so that its workers can share a port), which also lets a
    second server bind the same port and silently answer part of the traffic. granian has no option for a
    socket of ours, so this overrides the (private) method that makes its socket; written against granian
    2.8, whose workers take a SocketHolder of a bound socket (pyproject pins that minor version).
    """

    def __init__(self, target: Any, listener: socket.socket, **options: Any) -> None:
        super().__init__(target, **options)
        self.listener = listener

    def _init_shared_socket(self) -> None:
        # granian's listener owns the descriptor from here on and closes it when the worker ends.
        descriptor = self.listener.detach()
        self._ssp = None
        self._shd: Any = SocketHolder(descriptor, False, self.backlog)  # type: ignore[call-arg]
        self._sfd: Any = descriptor


def serve(settings: Settings, verbose: bool = False) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code: 0 after a shutdown, 1 when the port cannot
    be listened on or the model cannot be loaded (each said in one line on stderr)."""
    configure_logging(json_lines=settings.log_json, verbose=verbose)
    if not verbose:
        # Read when transformers is first imported (by the engine, later): its import-time notices are noise.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        listener = listen_exclusively(settings.host, settings.port)
    except PortUnavailable as error:
        print(f"sdxl-bedrock: {error}", file=sys.stderr, flush=True)
        return 1
    return asyncio.run(_serve(settings, listener))


async def _serve(settings: Settings, listener: socket.socket) -> int:
    from sdxl_bedrock.app import create_app

    exit_code = 0
    server: Server | None = None
    loading_since = time.monotonic()

    def announce(runtime: Runtime) -> None:
        assert runtime.engine is not None
        engine = runtime.engine
        print(
            f"sdxl-bedrock listening on {settings.scheme}://{settings.host}:{settings.port} "
            f"(model {settings.model}, device {engine.device}, "
            f"dtype {str(engine.dtype).removeprefix('torch.')}, "
            f"VAE {str(engine.pipe.vae.dtype).removeprefix('torch.')}), "
            f"ready in {time.monotonic() - loading_since:.1f} s; {landmarks(app)}",
            flush=True,
        )

    def give_up(error: BaseException) -> None:
        nonlocal exit_code
        print(f"sdxl-bedrock: could not load model {settings.model!r}: {error}", file=sys.stderr, flush=True)
        exit_code = 1
        if server is not None:
            server.stop()

    app = create_app(settings, on_ready=announce, on_load_failed=give_up)
    runtime: Runtime = app.state.runtime
    server = ServerOnSocket(
        app,
        listener,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.auto,
        websockets=False,
        backlog=BACKLOG,
        log_enabled=False,
        ssl_cert=settings.tls_cert,
        ssl_key=settings.tls_key,
    )
    stopping: list[asyncio.Task[None]] = []

    async def drain_then_stop() -> None:
        await runtime.drain(settings.shutdown_timeout_s)
        server.stop()

    def on_signal() -> None:
        # The first signal drains (new requests get 503, accepted ones finish); a second one stops at once.
        if stopping:
            server.stop()
            return
        print("sdxl-bedrock: shutting down, finishing accepted requests", file=sys.stderr, flush=True)
        stopping.append(asyncio.get_running_loop().create_task(drain_then_stop()))

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    # The app's lifespan starts loading as soon as granian runs it, below.
    print(f"sdxl-bedrock: loading model {settings.model} ...", flush=True)
    loading_since = time.monotonic()
    await server.serve()
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
