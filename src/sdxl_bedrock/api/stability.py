"""The Stability REST v1 face: /v1/generation/{engine_id}/... and /v1/engines/list, over the same engine.

text-to-image takes JSON; image-to-image and image-to-image/masking take multipart/form-data with the
images as files. `Accept: application/json` (the default) answers `{"artifacts": [...]}`; `Accept:
image/png` answers the PNG itself with `Finish-Reason` and `Seed` headers, and so allows one sample only.
Errors take Stability's shape `{"id", "name", "message"}` (api/errors.py, chosen by path in app.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import JSONResponse, Response

from sdxl_bedrock.api.auth import check_bearer
from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.errors import MissingCredentials
from sdxl_bedrock.api.openapi import (
    engine_id_schema,
    engines_responses,
    stability_form_request_body,
    stability_generation_responses,
    stability_json_request_body,
)
from sdxl_bedrock.codecs import png_to_base64
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, MalformedBody, NotFound
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.schema import Artifact, GenerationRequest
from sdxl_bedrock.validation import parse_stability_form, parse_stability_json

PATH_PREFIX = "/v1/"
ENGINE_ID = "stable-diffusion-xl-1024-v1-0"
ENGINES = [
    {
        "id": ENGINE_ID,
        "name": "Stable Diffusion XL v1.0",
        "description": "Stability-AI Stable Diffusion XL v1.0",
        "type": "PICTURE",
    }
]
# A form holds at most 10 prompts (20 keys) and a dozen other fields; these bounds only stop hostile forms.
MAX_FORM_FIELDS = 100
MAX_FORM_FILES = 4

ResponseType = Literal["json", "png"]

router = APIRouter(prefix="/v1")
# Documentation only: check_engine answers an unknown engine with Stability's 404.
EngineIdParameter = Annotated[str, Path(json_schema_extra=engine_id_schema([ENGINE_ID]))]


def check_api_key(settings: Settings, headers: Headers) -> None:
    """Stability tells the two failures apart: no key is 401 unauthorized, a wrong one 403."""
    if settings.auth_enabled and not headers.get("authorization", "").strip():
        raise MissingCredentials("missing authorization header")
    check_bearer(settings, headers)


def check_engine(engine_id: str) -> None:
    if engine_id != ENGINE_ID:
        raise NotFound(f"The specified engine (ID {engine_id}) was not found.")


def response_type(accept: str) -> ResponseType:
    """The first media range in `Accept` that we can answer; no header means JSON."""
    for media_range in accept.split(","):
        media = media_range.split(";", 1)[0].strip().lower()
        if media in ("", "application/json", "application/*", "*/*"):
            return "json"
        if media in ("image/png", "image/*"):
            return "png"
    raise InvalidRequest(f"accept: {accept} is not supported; use application/json or image/png")


def check_samples(request: GenerationRequest, answer: ResponseType) -> None:
    if answer == "png" and request.samples > 1:
        raise InvalidRequest(
            "Sample count may only be greater than 1 when the accept header is set to application/json",
            field="samples",
            kind="invalid_samples",
        )


def artifacts_body(artifacts: list[Artifact]) -> bytes:
    return json.dumps(
        {
            "artifacts": [
                {"base64": png_to_base64(a.png), "seed": a.seed, "finishReason": a.finish_reason.value}
                for a in artifacts
            ]
        }
    ).encode()


async def read_form(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    """The text fields and the files' bytes of a multipart/form-data body, read under the body limit."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise MalformedBody(
            f"#: expected a multipart/form-data body, found {content_type or 'no content type'}"
        )
    raw = await read_body(request)

    async def body_once() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(
        request.headers, body_once(), max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise MalformedBody(f"#: the multipart body could not be read: {error.message}") from None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = await value.read()
            else:
                fields[name] = value
    finally:
        await form.close()
    return fields, files


async def answer(runtime: Runtime, generation: GenerationRequest, answer_type: ResponseType) -> Response:
    check_samples(generation, answer_type)
    artifacts = await runtime.generate(generation)
    if answer_type == "png":
        (artifact,) = artifacts
        return Response(
            artifact.png,
            media_type="image/png",
            headers={"Finish-Reason": artifact.finish_reason.value, "Seed": str(artifact.seed)},
        )
    return Response(await runtime.in_host_thread(artifacts_body, artifacts), media_type="application/json")


@router.get(
    "/engines/list",
    summary="List engines (Stability v1)",
    response_class=Response,
    responses=engines_responses(),
)
async def list_engines(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    check_api_key(runtime.settings, request.headers)
    return JSONResponse(ENGINES)


@router.post(
    "/generation/{engine_id}/text-to-image",
    summary="text-to-image (Stability v1)",
    description="Stability's text-to-image JSON body; `steps` 10..150 (default 50), `samples` 1..10.",
    response_class=Response,
    responses=stability_generation_responses(),
    openapi_extra=stability_json_request_body(),
)
async def text_to_image(engine_id: EngineIdParameter, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    check_api_key(runtime.settings, request.headers)
    check_engine(engine_id)
    answer_type = response_type(request.headers.get("accept", ""))
    raw = await read_body(request)
    generation = await runtime.in_host_thread(
        parse_stability_json, raw, relaxed_sizes=runtime.settings.relaxed_sizes
    )
    return await answer(runtime, generation, answer_type)


async def form_generation(engine_id: str, request: Request, *, masking: bool) -> Response:
    runtime: Runtime = request.app.state.runtime
    check_api_key(runtime.settings, request.headers)
    check_engine(engine_id)
    answer_type = response_type(request.headers.get("accept", ""))
    fields, files = await read_form(request)
    generation = await runtime.in_host_thread(
        parse_stability_form, fields, files, masking=masking, relaxed_sizes=runtime.settings.relaxed_sizes
    )
    return await answer(runtime, generation, answer_type)


@router.post(
    "/generation/{engine_id}/image-to-image",
    summary="image-to-image (Stability v1)",
    description="A multipart form: `init_image` as a file, `text_prompts[0][text]`, "
    "`text_prompts[0][weight]`, `init_image_mode`, `image_strength` or `step_schedule_start`/`_end`, and the "
    "common fields by name.",
    response_class=Response,
    responses=stability_generation_responses(),
    openapi_extra=stability_form_request_body(masking=False),
)
async def image_to_image(engine_id: EngineIdParameter, request: Request) -> Response:
    return await form_generation(engine_id, request, masking=False)


@router.post(
    "/generation/{engine_id}/image-to-image/masking",
    summary="image-to-image/masking (Stability v1)",
    description="A multipart form: `init_image` and `mask_image` as files, `mask_source`, the prompts and "
    "the common fields by name.",
    response_class=Response,
    responses=stability_generation_responses(),
    openapi_extra=stability_form_request_body(masking=True),
)
async def image_to_image_masking(engine_id: EngineIdParameter, request: Request) -> Response:
    return await form_generation(engine_id, request, masking=True)
