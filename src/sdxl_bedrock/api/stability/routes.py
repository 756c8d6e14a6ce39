"""The Stability REST v1 routes: /v1/generation/{engine_id}/... and /v1/engines/list, over the same engine.

text-to-image takes JSON; image-to-image and image-to-image/masking take multipart/form-data with the
images as parts, with or without a file name (forms.py). `Accept: application/json` (the default) answers
`{"artifacts": [...]}`; `Accept: image/png` answers the PNG itself with `Finish-Reason` and `Seed` headers,
and so allows one sample only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from sdxl_bedrock.api.auth import check_bearer
from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.checkpoints import checkpoint_named, model_named, model_names
from sdxl_bedrock.api.deps import authenticated
from sdxl_bedrock.api.forms import read_form
from sdxl_bedrock.api.openapi import JSON
from sdxl_bedrock.api.stability import openapi
from sdxl_bedrock.api.stability.bodies import FORM_FILES, parse_form, parse_text_to_image
from sdxl_bedrock.api.stability.responses import (
    ENGINE_ID,
    ENGINES,
    StabilityEngine,
    StabilityEngines,
    artifacts_body,
)
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, MissingCredentials, NotFound
from sdxl_bedrock.library import AliasTarget
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.schema import GenerationRequest

# A form holds at most 10 prompts (20 keys) and a dozen other fields; these bounds only stop hostile forms.
MAX_FORM_FIELDS = 100
MAX_FORM_FILES = 4

ResponseType = Literal["json", "png"]

router = APIRouter(prefix="/v1")
# Documentation only: check_engine answers an unknown engine with Stability's 404.
EngineIdParameter = Annotated[str, Path(json_schema_extra=openapi.engine_id_schema([ENGINE_ID]))]


def check_api_key(settings: Settings, headers: Mapping[str, str]) -> None:
    """Stability tells the two failures apart: no key is 401 unauthorized, a wrong one 403."""
    if settings.auth_enabled and not headers.get("authorization", "").strip():
        raise MissingCredentials("missing authorization header")
    check_bearer(settings, headers)


Caller = Annotated[Runtime, Depends(authenticated(check_api_key))]


def checkpoint_of(engine_id: str, runtime: Runtime) -> str | None:
    """The checkpoint an engine id names: Stability's SDXL id the default one, any other a checkpoint or
    a --model-alias of the model library; Stability's 404 for the rest."""
    target = engine_of(engine_id, runtime)
    return target.checkpoint if target is not None else None


def engine_of(engine_id: str, runtime: Runtime) -> AliasTarget | None:
    """The checkpoint and LoRA adapters an engine id names (None: Stability's SDXL id, the default
    checkpoint with none); Stability's 404 for an id that names nothing."""
    if engine_id == ENGINE_ID:
        return None
    target = model_named(runtime, engine_id)
    if target is None:
        shown = engine_id if len(engine_id) <= 100 else engine_id[:97] + "..."
        raise NotFound(f"The specified engine (ID {shown}) was not found.")
    return target


def on_engine(generation: GenerationRequest, target: AliasTarget | None) -> GenerationRequest:
    """The request on the engine's checkpoint, with its adapters."""
    if target is None:
        return generation
    return dataclasses.replace(generation, checkpoint=target.checkpoint, loras=target.loras)


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


async def answer(runtime: Runtime, generation: GenerationRequest, answer_type: ResponseType) -> Response:
    check_samples(generation, answer_type)
    artifacts = await runtime.generations.generate(generation)
    if answer_type == "png":
        (artifact,) = artifacts
        return Response(
            artifact.png,
            media_type="image/png",
            headers={"Finish-Reason": artifact.finish_reason.value, "Seed": str(artifact.seed)},
        )
    return Response(await runtime.workers.on_host(artifacts_body, artifacts), media_type=JSON)


@router.get(
    "/engines/list",
    summary="List engines (Stability v1)",
    response_class=Response,
    responses=openapi.engines_responses(),
)
async def list_engines(runtime: Caller) -> Response:
    """Stability's SDXL engine (the default checkpoint), then each other checkpoint and alias by its name."""
    listing = runtime.library.listing
    engines = [*ENGINES.root]
    for name in model_names(runtime):
        if name == listing.default and name not in runtime.settings.model_aliases:
            continue
        if "/" in name:
            continue  # an alias such as a Bedrock ARN: no path segment holds it, so it is no engine id
        checkpoint = checkpoint_named(runtime, name)
        engines.append(
            StabilityEngine(
                id=name,
                name=name,
                description=f"SDXL checkpoint {checkpoint} from this server's model library",
                type="PICTURE",
            )
        )
    return Response(StabilityEngines(engines).model_dump_json(), media_type=JSON)


@router.post(
    "/generation/{engine_id}/text-to-image",
    summary="text-to-image (Stability v1)",
    description="Stability's text-to-image JSON body; `steps` 10..150 (default 50), `samples` 1..10.",
    response_class=Response,
    responses=openapi.generation_responses(),
    openapi_extra=openapi.json_request_body(),
)
async def text_to_image(engine_id: EngineIdParameter, request: Request, runtime: Caller) -> Response:
    target = engine_of(engine_id, runtime)
    answer_type = response_type(request.headers.get("accept", ""))
    raw = await read_body(request)
    generation = await runtime.workers.on_host(
        parse_text_to_image, raw, relaxed_sizes=runtime.settings.relaxed_sizes
    )
    return await answer(runtime, on_engine(generation, target), answer_type)


async def form_generation(engine_id: str, request: Request, runtime: Runtime, *, masking: bool) -> Response:
    target = engine_of(engine_id, runtime)
    answer_type = response_type(request.headers.get("accept", ""))
    form = await read_form(
        request,
        runtime,
        binary_names=frozenset(FORM_FILES),
        max_files=MAX_FORM_FILES,
        max_fields=MAX_FORM_FIELDS,
    )
    generation = await runtime.workers.on_host(
        parse_form,
        form.last_fields(),
        form.last_files(),
        masking=masking,
        relaxed_sizes=runtime.settings.relaxed_sizes,
    )
    return await answer(runtime, on_engine(generation, target), answer_type)


@router.post(
    "/generation/{engine_id}/image-to-image",
    summary="image-to-image (Stability v1)",
    description="A multipart form: `init_image` (the file's bytes, with or without a file name), "
    "`text_prompts[0][text]`, "
    "`text_prompts[0][weight]`, `init_image_mode`, `image_strength` or `step_schedule_start`/`_end`, and the "
    "common fields by name.",
    response_class=Response,
    responses=openapi.generation_responses(),
    openapi_extra=openapi.form_request_body(masking=False),
)
async def image_to_image(engine_id: EngineIdParameter, request: Request, runtime: Caller) -> Response:
    return await form_generation(engine_id, request, runtime, masking=False)


@router.post(
    "/generation/{engine_id}/image-to-image/masking",
    summary="image-to-image/masking (Stability v1)",
    description="A multipart form: `init_image` and `mask_image` (the files' bytes, with or without a file "
    "name), `mask_source`, the prompts and the common fields by name.",
    response_class=Response,
    responses=openapi.generation_responses(),
    openapi_extra=openapi.form_request_body(masking=True),
)
async def image_to_image_masking(engine_id: EngineIdParameter, request: Request, runtime: Caller) -> Response:
    return await form_generation(engine_id, request, runtime, masking=True)
