"""The Bedrock Runtime routes: POST /model/{modelId}/invoke and /invoke-with-response-stream for
stability.stable-diffusion-xl-v1."""

from __future__ import annotations

import re
import time
from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Path, Request
from starlette.responses import Response, StreamingResponse

from sdxl_bedrock.api.auth import check_bedrock_credentials, check_bedrock_signature
from sdxl_bedrock.api.bedrock import openapi
from sdxl_bedrock.api.bedrock.body import Invocation, parse_invoke_body
from sdxl_bedrock.api.bedrock.responses import artifacts_json
from sdxl_bedrock.api.bedrock.stream import progress_options, stream_events
from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.openapi import JSON
from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.runtime import Runtime

MODEL_NAME = "stability.stable-diffusion-xl-v1"
MODEL_IDS = frozenset({MODEL_NAME, f"{MODEL_NAME}:0"})
FOUNDATION_MODEL_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:bedrock:[a-z0-9-]+::foundation-model/(?P<model>[^/]+)$"
)
# Match on the raw, still percent-encoded path: an ARN's %2F must not become a path separator.
MODEL_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>invoke|invoke-with-response-stream)$")

router = APIRouter()
# Documentation only: the handlers check the id themselves, on the raw path (a constraint here would answer
# FastAPI's 422 instead of ValidationException).
ModelIdParameter = Annotated[str, Path(json_schema_extra=openapi.model_id_schema(MODEL_IDS))]


def parse_model_id(raw_segment: str) -> str:
    """The canonical model id named by a path segment, or InvalidRequest."""
    model_id = unquote(raw_segment)
    arn = FOUNDATION_MODEL_ARN.match(model_id)
    if arn:
        model_id = arn.group("model")
    if model_id not in MODEL_IDS:
        raise InvalidRequest("The provided model identifier is invalid.", field="modelId")
    return MODEL_NAME


def model_segment(request: Request) -> str:
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    match = MODEL_ROUTE.match(raw_path.decode("latin-1").split("?", 1)[0])
    if match is None:
        # The router matched on the decoded path; the raw path holds a separator inside the id.
        raise InvalidRequest("The provided model identifier is invalid.", field="modelId")
    return match.group("model")


def check_accept(request: Request, header: str = "accept") -> None:
    accept = request.headers.get(header, "")
    if accept and not any(kind in accept for kind in ("application/json", "*/*", "application/*")):
        raise InvalidRequest(f"The requested accept type is not supported: {accept}.", field=header)


async def validated_invocation(request: Request, runtime: Runtime, accept_header: str) -> Invocation:
    """What both operations check, in AWS's order: auth, then the model id, the accept type, the body.
    Credentials are checked before the body is read; the signature (a hash of the body) after, off the loop.
    """
    settings = runtime.settings
    authorization = check_bedrock_credentials(settings, request.scope, request.headers)
    raw = await read_body(request)
    if authorization is not None:
        await runtime.workers.on_host(
            check_bedrock_signature, settings, request.scope, request.headers, raw, authorization
        )
    parse_model_id(model_segment(request))
    check_accept(request, accept_header)
    return await runtime.workers.on_host(parse_invoke_body, raw, relaxed_sizes=runtime.settings.relaxed_sizes)


@router.post(
    "/model/{model_id:path}/invoke",
    summary="InvokeModel",
    description="Bedrock Runtime InvokeModel for stability.stable-diffusion-xl-v1 (image-to-image, "
    "text-to-image, masked image-to-image). The body is Stability's SDXL JSON (docs/API.md).",
    response_class=Response,
    responses=openapi.invoke_responses(),
    openapi_extra=openapi.invoke_request_body(),
)
async def invoke_model(model_id: ModelIdParameter, request: Request) -> Response:
    started = time.monotonic()
    runtime: Runtime = request.app.state.runtime
    invocation = await validated_invocation(request, runtime, accept_header="accept")
    artifacts = await runtime.generations.generate(invocation.request)
    body = await runtime.workers.on_host(artifacts_json, artifacts)
    latency_ms = int((time.monotonic() - started) * 1000)
    return Response(body, media_type=JSON, headers={"X-Amzn-Bedrock-Invocation-Latency": str(latency_ms)})


@router.post(
    "/model/{model_id:path}/invoke-with-response-stream",
    summary="InvokeModelWithResponseStream",
    description="The same request as InvokeModel; the answer is an AWS event stream with one `chunk` event "
    "holding the same JSON. With `extras.progress: true`, progress chunks come first (see docs/API.md).",
    response_class=Response,
    responses=openapi.stream_responses(),
    openapi_extra=openapi.invoke_request_body(),
)
async def invoke_model_with_response_stream(model_id: ModelIdParameter, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    invocation = await validated_invocation(request, runtime, accept_header="x-amzn-bedrock-accept")
    generation = invocation.request
    runtime.generations.admit(generation)  # refusals before the 200 are ordinary error responses
    progress = progress_options(invocation.extras)
    return StreamingResponse(
        stream_events(runtime, generation, progress),
        media_type="application/vnd.amazon.eventstream",
        headers={"X-Amzn-Bedrock-Content-Type": JSON},
    )
