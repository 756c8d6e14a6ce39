"""The server's own routes: GET /ping (health) and GET /metrics (Prometheus). Their errors are answered by
the default wire (Bedrock's shape)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from sdxl_bedrock.api.bedrock.errors import error_docs
from sdxl_bedrock.api.deps import RuntimeDep
from sdxl_bedrock.api.openapi import ANY_ROUTE_ERRORS, JSON, PING_ERRORS, REQUEST_ID_HEADER
from sdxl_bedrock.errors import ModelNotReady

router = APIRouter()


def ping_responses() -> dict[int | str, Any]:
    healthy = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "Healthy"}},
        "additionalProperties": False,
    }
    return {
        200: {
            "description": "The model is loaded.",
            "headers": REQUEST_ID_HEADER,
            "content": {JSON: {"schema": healthy}},
        },
        **error_docs(PING_ERRORS),
    }


def metrics_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "Prometheus' text exposition format.",
            "headers": REQUEST_ID_HEADER,
            "content": {CONTENT_TYPE_LATEST.split(";", 1)[0]: {"schema": {"type": "string"}}},
        },
        **error_docs(ANY_ROUTE_ERRORS),
    }


@router.get(
    "/ping",
    summary="Health: 200 once the model is loaded, 429 ModelNotReadyException before",
    response_class=Response,
    responses=ping_responses(),
)
async def ping(runtime: RuntimeDep) -> Response:
    if not runtime.ready.is_set():
        raise ModelNotReady("The model is still loading; try again shortly.")
    return JSONResponse({"status": "Healthy"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=metrics_responses())
async def metrics(runtime: RuntimeDep) -> Response:
    if runtime.engine is not None:
        runtime.metrics.gpu_memory_bytes.set(runtime.engine.gpu_memory_bytes())
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
