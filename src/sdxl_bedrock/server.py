"""Serve the app with granian: HTTP/1.1 and HTTP/2 (cleartext prior knowledge, or TLS by ALPN), one port."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from sdxl_bedrock.app import create_app
from sdxl_bedrock.config import Settings
from sdxl_bedrock.logs import configure_logging
from sdxl_bedrock.runtime import Runtime

log = logging.getLogger(__name__)


def serve(settings: Settings, verbose: bool = False) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(json_lines=settings.log_json, verbose=verbose)
    if not verbose:
        # Read when transformers is first imported (by the engine, later): its import-time notices are noise.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    exit_code = 0
    server: Server | None = None

    def announce(runtime: Runtime) -> None:
        assert runtime.engine is not None
        engine = runtime.engine
        print(
            f"sdxl-bedrock listening on {settings.scheme}://{settings.host}:{settings.port} "
            f"(model {settings.model}, device {engine.device}, "
            f"dtype {str(engine.dtype).removeprefix('torch.')}, "
            f"VAE {str(engine.pipe.vae.dtype).removeprefix('torch.')})",
            flush=True,
        )

    def give_up(error: BaseException) -> None:
        nonlocal exit_code
        print(f"sdxl-bedrock: could not load model {settings.model!r}: {error}", file=sys.stderr, flush=True)
        exit_code = 1
        if server is not None:
            server.stop()

    app = create_app(settings, on_ready=announce, on_load_failed=give_up)
    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.auto,
        websockets=False,
        log_enabled=False,
        ssl_cert=settings.tls_cert,
        ssl_key=settings.tls_key,
    )
    runtime: Runtime = app.state.runtime
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
    await server.serve()
    return exit_code


def exit_now(code: int) -> None:
    """Leave without interpreter teardown: granian's Rust threads can panic while Python finalizes."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
