"""create_app(settings): routes, error shapes, and a lifespan that loads the model in the background."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdxl_bedrock import __version__
from sdxl_bedrock.api import bedrock, playground, stability
from sdxl_bedrock.api.errors import bedrock_error_response, stability_error_response
from sdxl_bedrock.api.openapi import metrics_responses, ping_responses
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, ModelNotReady, ServiceError
from sdxl_bedrock.logs import request_id_var
from sdxl_bedrock.runtime import Runtime

log = logging.getLogger(__name__)
access_log = logging.getLogger("sdxl_bedrock.access")

OnReady = Callable[[Runtime], None]
OnLoadFailed = Callable[[BaseException], None]


class RequestMiddleware:
    """Per request: an id (x-amzn-RequestId on every response, Bedrock's way), the in-flight count that a
    graceful shutdown waits on, the request metrics, and one access-log line."""

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
        started = time.monotonic()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-amzn-requestid"]
                headers.append((b"x-amzn-RequestId", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        self.runtime.active_requests += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.runtime.active_requests -= 1
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
    )
    app.state.runtime = runtime
    app.include_router(bedrock.router)
    app.include_router(playground.page_router)
    app.include_router(playground.router)
    app.include_router(stability.router)
    add_health_routes(app)
    add_error_handlers(app)
    app.add_middleware(RequestMiddleware, runtime=runtime)
    return app


async def load_then_announce(
    runtime: Runtime, on_ready: OnReady | None, on_load_failed: OnLoadFailed | None
) -> None:
    try:
        await runtime.load()
    except asyncio.CancelledError:
        raise
    except BaseException as error:
        log.error("loading the model failed: %s", error)
        if on_load_failed is not None:
            on_load_failed(error)
        return
    if on_ready is not None:
        on_ready(runtime)


def add_health_routes(app: FastAPI) -> None:
    @app.get(
        "/ping",
        summary="Health: 200 once the model is loaded, 429 ModelNotReadyException before",
        response_class=Response,
        responses=ping_responses(),
    )
    async def ping(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        if not runtime.ready.is_set():
            raise ModelNotReady("The model is still loading; try again shortly.")
        return JSONResponse({"status": "Healthy"})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses=metrics_responses(CONTENT_TYPE_LATEST),
    )
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        if runtime.engine is not None:
            runtime.metrics.gpu_memory_bytes.set(runtime.engine.gpu_memory_bytes())
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def error_response(request: Request, error: ServiceError) -> Response:
    """In the shape of the face the request came to: Stability's under /v1/, Bedrock's elsewhere."""
    if request.url.path.startswith(stability.PATH_PREFIX):
        return stability_error_response(error, request_id_of(request))
    return bedrock_error_response(error, request_id_of(request))


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> Response:
        return error_response(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code in (404, 405):
            return error_response(request, bedrock.not_found(request.url.path))
        return error_response(request, InvalidRequest(str(error.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path, exc_info=error)
        return error_response(request, ServiceError("An internal error occurred."))
