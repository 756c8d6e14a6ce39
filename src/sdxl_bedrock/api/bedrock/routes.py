"""The Bedrock Runtime routes: POST /model/{modelId}/invoke and /invoke-with-response-stream for
stability.stable-diffusion-xl-v1, and with `--stability-image-models` for Bedrock's current Stability
image models (image_models.py); and the operations SDXL does not take (Converse, ConverseStream,
CountTokens, StartAsyncInvoke), each refused as Bedrock refuses a model that does not support it."""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response, StreamingResponse

from sdxl_bedrock.api.auth import SigV4Authorization, check_bedrock_credentials, check_bedrock_signature
from sdxl_bedrock.api.bedrock import openapi
from sdxl_bedrock.api.bedrock.body import Invocation, parse_invoke_body
from sdxl_bedrock.api.bedrock.image_models import (
    CHECKPOINT_HEADER,
    ImageInvocation,
    image_model,
    image_models_json,
    parse_image_body,
)
from sdxl_bedrock.api.bedrock.loras import loras_of
from sdxl_bedrock.api.bedrock.responses import artifacts_json
from sdxl_bedrock.api.bedrock.stream import ProgressOptions, progress_options, stream_events
from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.checkpoints import check_loras, model_named
from sdxl_bedrock.api.deps import runtime_of
from sdxl_bedrock.api.openapi import JSON
from sdxl_bedrock.api.validation import load_json_object
from sdxl_bedrock.errors import AccessDenied, InvalidRequest, NotFound
from sdxl_bedrock.library import AliasTarget
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.schema import Artifact

MODEL_NAME = "stability.stable-diffusion-xl-v1"
MODEL_IDS = frozenset({MODEL_NAME, f"{MODEL_NAME}:0"})
# Bedrock's earlier SDXL ids (SDXL 0.8 and its alias), past their end of life: Bedrock answers them with a
# 404, not with the 400 of an id it never knew.
RETIRED_MODEL_IDS = frozenset({"stability.stable-diffusion-xl-v0", "stability.stable-diffusion-xl"})
INVALID_MODEL_ID = "The provided model identifier is invalid."
END_OF_LIFE = (
    "This model version has reached the end of its life. "
    "Please refer to the AWS documentation for more details."
)
FOUNDATION_MODEL_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:bedrock:[a-z0-9-]+::foundation-model/(?P<model>[^/]+)$"
)
# The cross-region inference profiles of the Stability image models (`us.stability.sd3-5-large-v1:0`).
INFERENCE_PROFILE_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:bedrock:[a-z0-9-]+:[0-9]{12}:inference-profile/(?P<model>[^/]+)$"
)
# Bedrock's words for a model the account may not use, then why this server does not serve it.
NO_ACCESS = "You don't have access to the model with the specified model ID."
IMAGE_MODELS_OFF = (
    f"{NO_ACCESS} This server answers Bedrock's Stability image models ({{name}}) only when started with "
    "--stability-image-models, and then with its SDXL checkpoint."
)
SERVICE_NEEDS = (
    f"{NO_ACCESS} This server cannot serve {{model_id}} ({{name}}): it needs {{needs}}, "
    "and the server has an SDXL checkpoint only."
)
# Match on the raw, still percent-encoded path: an ARN's %2F must not become a path separator.
MODEL_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>[^/]+)$")

# The Bedrock Runtime operations SDXL does not take, and the refusal each answers with our model's id:
# Bedrock's own words for Converse, ConverseStream and CountTokens; ours for StartAsyncInvoke, where
# Bedrock's "The provided request is not valid" would not tell the caller why.
CONVERSE_UNSUPPORTED = (
    "This action doesn't support the model that you provided. Try again with a supported text or chat model."
)
UNSUPPORTED_OPERATIONS = {
    "Converse": CONVERSE_UNSUPPORTED,
    "ConverseStream": CONVERSE_UNSUPPORTED,
    "CountTokens": "The provided model doesn't support counting tokens.",
    "StartAsyncInvoke": "The provided model doesn't support asynchronous invocation. Use InvokeModel or "
    "InvokeModelWithResponseStream.",
}
# AWS's own validation words for a required member that is absent.
MODEL_ID_MISSING = (
    "1 validation error detected: "
    "Value null at 'modelId' failed to satisfy constraint: Member must not be null"
)

router = APIRouter()
# Documentation only: the handlers check the id themselves, on the raw path (a constraint here would answer
# FastAPI's 422 instead of ValidationException).
ModelIdParameter = Annotated[
    str, Path(json_schema_extra=openapi.model_id_schema(MODEL_IDS, RETIRED_MODEL_IDS))
]


def parse_model_id(raw_segment: str, *, image_models: bool = False) -> str:
    """The canonical model id named by a path segment (percent-encoded); see `canonical_model_id`."""
    return canonical_model_id(unquote(raw_segment), image_models=image_models)


def resolve_model_id(runtime: Runtime, model_id: str) -> tuple[str, AliasTarget | None]:
    """(canonical model id, checkpoint and adapters) for a model id as sent (decoded): a `--model-alias`
    (any id the SDKs send: a custom-model, provisioned-model or application-inference-profile ARN, as
    Bedrock forms them) is SDXL 1.0 on its checkpoint, with its LoRA adapters; any other id is
    `canonical_model_id`'s, on the default one."""
    if model_id in runtime.settings.model_aliases:
        target = model_named(runtime, model_id)
        if target is None:
            raise AccessDenied(f"{NO_ACCESS} Its checkpoint has left this server's model library.")
        return MODEL_NAME, target
    return canonical_model_id(model_id, image_models=runtime.settings.stability_image_models), None


def canonical_model_id(model_id: str, *, image_models: bool = False) -> str:
    """The canonical model id named by an id or its foundation-model ARN; with `image_models`, also the
    Stability image models this server serves, by id, inference profile id or either's ARN.

    Raises NotFound for a retired SDXL id; AccessDenied for an image model while `image_models` is off, or
    one that needs a model this server lacks (saying why); InvalidRequest for any other id."""
    arn = FOUNDATION_MODEL_ARN.match(model_id) or INFERENCE_PROFILE_ARN.match(model_id)
    if arn:
        model_id = arn.group("model")
    if model_id in RETIRED_MODEL_IDS:
        raise NotFound(END_OF_LIFE)
    if model_id in MODEL_IDS:
        return MODEL_NAME
    image = image_model(model_id)
    if image is None:
        raise InvalidRequest(INVALID_MODEL_ID, field="modelId")
    if not image_models:
        raise AccessDenied(IMAGE_MODELS_OFF.format(name=image.name))
    if image.needs is not None:
        raise AccessDenied(SERVICE_NEEDS.format(model_id=image.model_id, name=image.name, needs=image.needs))
    return image.model_id


def model_segment(request: Request) -> str:
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    match = MODEL_ROUTE.match(raw_path.decode("latin-1").split("?", 1)[0])
    if match is None:
        # The router matched on the decoded path; the raw path holds a separator inside the id.
        raise InvalidRequest(INVALID_MODEL_ID, field="modelId")
    return match.group("model")


def check_accept(request: Request, header: str = "accept") -> None:
    accept = request.headers.get(header, "")
    if accept and not any(kind in accept for kind in ("application/json", "*/*", "application/*")):
        raise InvalidRequest(f"The requested accept type is not supported: {accept}.", field=header)


@dataclass(frozen=True)
class BedrockCaller:
    """A caller whose credentials the headers admit; `authorization` (None while auth is off) is what the
    body's signature is checked against once the body is read."""

    runtime: Runtime
    authorization: SigV4Authorization | None

    async def read_body(self, request: Request) -> bytes:
        """The body, then its hash and the signature (a hash of up to 25 MB) off the event loop. Raises
        AccessDenied."""
        raw = await read_body(request)
        if self.authorization is not None:
            await self.runtime.workers.on_host(
                check_bedrock_signature,
                self.runtime.settings,
                request.scope,
                request.headers,
                raw,
                self.authorization,
            )
        return raw


async def bedrock_caller(request: Request) -> BedrockCaller:
    """What the headers decide of SigV4 (or a Bearer key), before the body is read: a refusal costs no body
    bytes. Raises AccessDenied."""
    runtime = runtime_of(request)
    return BedrockCaller(runtime, check_bedrock_credentials(runtime.settings, request.scope, request.headers))


Caller = Annotated[BedrockCaller, Depends(bedrock_caller)]


async def validated_invocation(
    request: Request, caller: BedrockCaller, accept_header: str
) -> Invocation | ImageInvocation:
    """What both operations check, in AWS's order: auth, then the model id, the accept type, the body.
    Credentials are checked before the body is read; the signature (a hash of the body) after, off the loop.
    """
    runtime = caller.runtime
    settings = runtime.settings
    raw = await caller.read_body(request)
    model_id, checkpoint = resolve_model_id(runtime, unquote(model_segment(request)))
    check_accept(request, accept_header)
    if model_id == MODEL_NAME:
        invocation = await runtime.workers.on_host(
            parse_invoke_body, raw, relaxed_sizes=settings.relaxed_sizes
        )
        loras = (*(checkpoint.loras if checkpoint else ()), *loras_of(invocation.extras))
        check_loras(runtime, loras)
        request_on = dataclasses.replace(
            invocation.request, checkpoint=checkpoint.checkpoint if checkpoint else None, loras=loras
        )
        return dataclasses.replace(invocation, request=request_on)
    image = image_model(model_id)
    assert image is not None
    return await runtime.workers.on_host(parse_image_body, image, raw, relaxed_sizes=settings.relaxed_sizes)


def answer_encoder(invocation: Invocation | ImageInvocation) -> Callable[[list[Artifact]], bytes]:
    """The wire's JSON for the invocation's body family."""
    if isinstance(invocation, ImageInvocation):
        return functools.partial(image_models_json, invocation=invocation)
    return artifacts_json


def checkpoint_headers(runtime: Runtime, invocation: Invocation | ImageInvocation) -> dict[str, str]:
    """An image model's answer names the SDXL checkpoint that made it; SDXL's answer stays Bedrock's."""
    if isinstance(invocation, ImageInvocation):
        return {CHECKPOINT_HEADER: runtime.library.listing.default}
    return {}


@router.post(
    "/model/{model_id:path}/invoke",
    summary="InvokeModel",
    description="Bedrock Runtime InvokeModel for stability.stable-diffusion-xl-v1 (image-to-image, "
    "text-to-image, masked image-to-image). The body is Stability's SDXL JSON (docs/API.md).",
    response_class=Response,
    responses=openapi.invoke_responses(),
    openapi_extra=openapi.invoke_request_body(),
)
async def invoke_model(model_id: ModelIdParameter, request: Request, caller: Caller) -> Response:
    started = time.monotonic()
    runtime = caller.runtime
    invocation = await validated_invocation(request, caller, accept_header="accept")
    artifacts = await runtime.generations.generate(invocation.request)
    body = await runtime.workers.on_host(answer_encoder(invocation), artifacts)
    latency_ms = int((time.monotonic() - started) * 1000)
    headers = {
        "X-Amzn-Bedrock-Invocation-Latency": str(latency_ms),
        **checkpoint_headers(runtime, invocation),
    }
    return Response(body, media_type=JSON, headers=headers)


@router.post(
    "/model/{model_id:path}/invoke-with-response-stream",
    summary="InvokeModelWithResponseStream",
    description="The same request as InvokeModel; the answer is an AWS event stream with one `chunk` event "
    "holding the same JSON. With `extras.progress: true`, progress chunks come first (see docs/API.md).",
    response_class=Response,
    responses=openapi.stream_responses(),
    openapi_extra=openapi.invoke_request_body(),
)
async def invoke_model_with_response_stream(
    model_id: ModelIdParameter, request: Request, caller: Caller
) -> Response:
    runtime = caller.runtime
    invocation = await validated_invocation(request, caller, accept_header="x-amzn-bedrock-accept")
    generation = invocation.request
    runtime.generations.admit(generation)  # refusals before the 200 are ordinary error responses
    progress = (
        progress_options(invocation.extras) if isinstance(invocation, Invocation) else ProgressOptions()
    )
    return StreamingResponse(
        stream_events(runtime, generation, progress, answer_encoder(invocation)),
        media_type="application/vnd.amazon.eventstream",
        headers={"X-Amzn-Bedrock-Content-Type": JSON, **checkpoint_headers(runtime, invocation)},
    )


# ---- the operations SDXL does not take ------------------------------------------------------------------


async def refuse_model_operation(request: Request, caller: BedrockCaller, operation: str) -> Response:
    """What Converse, ConverseStream and CountTokens check, in InvokeModel's order: auth, then the model
    id (a retired or unknown id answers as InvokeModel's does), then the refusal."""
    await caller.read_body(request)
    resolve_model_id(caller.runtime, unquote(model_segment(request)))
    raise InvalidRequest(UNSUPPORTED_OPERATIONS[operation], field="modelId")


def unsupported(operation: str, what: str) -> dict[str, Any]:
    """The route options of an operation SDXL does not take: its documentation."""
    return {
        "summary": f"{operation} (not supported)",
        "description": f"Bedrock Runtime {operation} ({what}): SDXL does not take it. With this server's "
        "model id the answer is a 400 ValidationException saying so; a retired or unknown id answers as "
        "InvokeModel's does.",
        "response_class": Response,
        # The only answer with a valid request; FastAPI would otherwise document a 200 that never comes.
        "status_code": 400,
        "responses": openapi.unsupported_responses(),
    }


@router.post("/model/{model_id:path}/converse", **unsupported("Converse", "chat"))
async def converse(model_id: ModelIdParameter, request: Request, caller: Caller) -> Response:
    return await refuse_model_operation(request, caller, "Converse")


@router.post("/model/{model_id:path}/converse-stream", **unsupported("ConverseStream", "chat, streamed"))
async def converse_stream(model_id: ModelIdParameter, request: Request, caller: Caller) -> Response:
    return await refuse_model_operation(request, caller, "ConverseStream")


@router.post("/model/{model_id:path}/count-tokens", **unsupported("CountTokens", "token counting"))
async def count_tokens(model_id: ModelIdParameter, request: Request, caller: Caller) -> Response:
    return await refuse_model_operation(request, caller, "CountTokens")


@router.post(
    "/async-invoke",
    **unsupported("StartAsyncInvoke", "a job that writes its output to S3; `modelId` in the body"),
    openapi_extra=openapi.start_async_invoke_body(),
)
async def start_async_invoke(request: Request, caller: Caller) -> Response:
    raw = await caller.read_body(request)
    model_id = (await caller.runtime.workers.on_host(load_json_object, raw)).get("modelId")
    if model_id is None:
        raise InvalidRequest(MODEL_ID_MISSING, field="modelId")
    if not isinstance(model_id, str):
        raise InvalidRequest(INVALID_MODEL_ID, field="modelId")
    resolve_model_id(caller.runtime, model_id)
    raise InvalidRequest(UNSUPPORTED_OPERATIONS["StartAsyncInvoke"], field="modelId")
