"""create_app(settings): routes, error shapes, and a lifespan that loads the model in the background."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdxl_bedrock import __version__
from sdxl_bedrock.api import Wire, Wires, a1111, bedrock, docs, health, openai, playground, stability
from sdxl_bedrock.api.guards import CLIENT_CLOSED, CLIENT_CLOSED_REQUEST, BodyGuard, CallerWatch, OriginGuard
from sdxl_bedrock.api.private_routes import PrivateRoutes
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, MethodNotAllowed, NotFound, ServiceError
from sdxl_bedrock.logs import address_text, client_var, request_id_var
from sdxl_bedrock.runtime import Runtime

log = logging.getLogger(__name__)
access_log = logging.getLogger("sdxl_bedrock.access")

OnReady = Callable[[Runtime], None]
OnLoadFailed = Callable[[BaseException], None]


class RequestMiddleware:
    """Per request: an id (x-amzn-RequestId on every response, Bedrock's way) and the client's address for
    every line it logs, the in-flight count that a graceful shutdown waits on, the request metrics, and one
    access-log line. Every response says `X-Content-Type-Options: nosniff`: a browser must not read an
    error's JSON as a page or a script."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        client_token = client_var.set(address_text(scope.get("client")))
        started = time.monotonic()
        status = 500

        started_answer = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_answer
            if message["type"] == "http.response.start":
                status, started_answer = message["status"], True
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-amzn-requestid", b"x-content-type-options")
                ]
                headers.append((b"x-amzn-RequestId", request_id.encode()))
                headers.append((b"X-Content-Type-Options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        self.runtime.active_requests += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.runtime.active_requests -= 1
            if not started_answer and scope["state"].get(CLIENT_CLOSED):
                status = CLIENT_CLOSED_REQUEST
            seconds = time.monotonic() - started
            route = route_label(scope)
            self.runtime.metrics.requests.labels(route, str(status)).inc()
            self.runtime.metrics.request_seconds.labels(route).observe(seconds)
            access_log.info(
                "%s %s -> %d in %.3f s",
                scope["method"],
                route,
                status,
                seconds,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "seconds": round(seconds, 4),
                },
            )
            client_var.reset(client_token)
            request_id_var.reset(token)


def route_label(scope: Scope) -> str:
    """The route template, never the raw path: metric labels must not grow with client input."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or uuid.uuid4())


def create_app(
    settings: Settings,
    on_ready: OnReady | None = None,
    on_load_failed: OnLoadFailed | None = None,
) -> FastAPI:
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(load_then_announce(runtime, on_ready, on_load_failed))
        try:
            yield
        finally:
            loading.cancel()
            await runtime.close()

    app = FastAPI(
        title="sdxl-bedrock",
        version=__version__,
        description="Amazon Bedrock Runtime wire protocol for stability.stable-diffusion-xl-v1.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A trailing slash is another path (Bedrock's 404), not a redirect whose Location echoes the Host.
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    # One line per wire; the first answers the requests no wire claims (unknown paths, /ping, /metrics).
    wires = install_wires(
        app,
        bedrock.wire,
        stability.wire,
        openai.wire,
        a1111.wire,
    )
    app.include_router(health.router)
    app.include_router(playground.page_router)
    app.include_router(playground.router)
    app.include_router(docs.router)
    add_error_handlers(app, wires)
    if settings.auth_all_routes:
        # Inside the guards: a private route's credentials are checked after Host and Origin.
        app.add_middleware(PrivateRoutes, settings=settings, wires=wires)
    # The last added runs first: the request's id and metrics, then Host and Origin, then the caller watch
    # and the body's deadline and budget around the route.
    app.add_middleware(BodyGuard, settings=settings)
    app.add_middleware(CallerWatch)
    if settings.allowed_origins:
        # A page of a configured origin sends JSON (a CORS preflight first) and reads the answer: Starlette's
        # CORS middleware answers the preflight and adds the headers, behind the Origin check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["*"],
            # A public page of that origin calling a server on this machine or network: Chrome's Private
            # Network Access asks first, in the preflight.
            allow_private_network=True,
            max_age=600,
        )
    app.add_middleware(OriginGuard, settings=settings)
    app.add_middleware(RequestMiddleware, runtime=runtime)
    return app


def install_wires(app: FastAPI, *wires: Wire) -> Wires:
    for wire in wires:
        app.include_router(wire.router)
    installed = Wires(wires)
    app.state.wires = installed
    return installed


async def load_then_announce(
    runtime: Runtime, on_ready: OnReady | None, on_load_failed: OnLoadFailed | None
) -> None:
    try:
        await runtime.load()
    except asyncio.CancelledError:
        raise
    except BaseException as error:
        if on_load_failed is None:
            log.error("loading the model failed: %s", error)
        else:  # the caller reports it (serve: one line of its own)
            on_load_failed(error)
        return
    if on_ready is not None:
        on_ready(runtime)


def add_error_handlers(app: FastAPI, wires: Wires) -> None:
    """Every error in the shape of the wire whose route failed (or that claims the path)."""

    def error_response(request: Request, error: ServiceError) -> Response:
        return wires.for_scope(request.scope).error_response(error, request_id_of(request))

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> Response:
        return error_response(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 405 and request.method in ("HEAD", "OPTIONS"):
            allow = (error.headers or {}).get("Allow", "")
            refusal = MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}; it takes {allow}.",
                allowed=tuple(method.strip() for method in allow.split(",") if method.strip()),
            )
            response = error_response(request, refusal)
            response.headers["Allow"] = allow
            return response
        if error.status_code in (404, 405):
            return error_response(
                request, NotFound(f"The requested resource {request.url.path} was not found.")
            )
        return error_response(request, InvalidRequest(str(error.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path, exc_info=error)
        return error_response(request, ServiceError("An internal error occurred."))
