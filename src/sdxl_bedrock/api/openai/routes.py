"""The OpenAI Images API routes: /v1/images/generations, /edits and /variations, the images behind
`response_format: url`, and /v1/models, over the same engine.

Generations take JSON; edits and variations take multipart/form-data with the images as files. With API
keys configured (`--api-key`) every route but the image files needs `Authorization: Bearer KEY`: a missing
key and a wrong one are both OpenAI's 401.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from starlette.responses import Response

from sdxl_bedrock.api.auth import check_bearer
from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.deps import authenticated
from sdxl_bedrock.api.forms import read_form
from sdxl_bedrock.api.openai import openapi
from sdxl_bedrock.api.openai.bodies import (
    ImagesRequest,
    ModelNames,
    parse_edit,
    parse_generation,
    parse_variation,
)
from sdxl_bedrock.api.openai.errors import (
    INCORRECT_KEY,
    MISSING_KEY,
    ContentPolicyViolation,
    ModelNotFound,
)
from sdxl_bedrock.api.openai.mapping import MEDIA_TYPES, MODEL_ID, OPENAI_MODELS
from sdxl_bedrock.api.openai.responses import ImageData, ImagesResponse, encoded, model_list, model_of
from sdxl_bedrock.api.openai.store import ImageStore
from sdxl_bedrock.api.openapi import JSON
from sdxl_bedrock.api.validation import shown
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import AccessDenied, MissingCredentials, ModelFailure, NotFound
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.schema import Artifact, FinishReason

log = logging.getLogger(__name__)

# An edit holds an image and a mask and a dozen text fields; these bounds only stop hostile forms. More
# images than one are read, so that the answer can say how many were sent.
MAX_FORM_FIELDS = 64
MAX_FORM_FILES = 8

router = APIRouter(prefix="/v1")
# Documentation only: the handlers answer any other value with OpenAI's 404 themselves.
ModelParameter = Annotated[str, Path(json_schema_extra=openapi.model_id_schema([MODEL_ID, *OPENAI_MODELS]))]
ImageNameParameter = Annotated[str, Path(json_schema_extra=openapi.IMAGE_NAME_SCHEMA)]


def check_api_key(settings: Settings, headers: Mapping[str, str]) -> None:
    if not settings.auth_enabled:
        return
    if not headers.get("authorization", "").strip():
        raise MissingCredentials(MISSING_KEY)
    try:
        check_bearer(settings, headers)
    except AccessDenied:
        log.info("refused: an incorrect API key")
        raise AccessDenied(INCORRECT_KEY) from None


Caller = Annotated[Runtime, Depends(authenticated(check_api_key))]


def image_store(app: FastAPI) -> ImageStore:
    """The app's store of url images, made on first use."""
    store: ImageStore | None = getattr(app.state, "openai_image_store", None)
    if store is None:
        store = app.state.openai_image_store = ImageStore()
    return store


async def read_images_form(
    request: Request, runtime: Runtime
) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    """The text fields (a repeated one keeps its last value) and every file's bytes by field name."""
    form = await read_form(request, runtime, max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    return form.last_fields(), form.files


def encode_all(artifacts: list[Artifact], images: ImagesRequest) -> list[bytes]:
    """Each image in the requested format (host work), or the content filter's refusal."""
    for artifact in artifacts:
        if artifact.finish_reason is FinishReason.CONTENT_FILTERED:
            raise ContentPolicyViolation()
        if artifact.finish_reason is not FinishReason.SUCCESS:
            raise ModelFailure("The model failed to generate the image.")
    return [encoded(artifact.png, images.output) for artifact in artifacts]


# Names the checkpoint that made an answer's images, whatever model id the request named.
CHECKPOINT_HEADER = "X-Checkpoint"


async def answer(request: Request, runtime: Runtime, images: ImagesRequest) -> Response:
    if images.user_id is not None:
        log.info("images for user %s", images.user_id)
    artifacts = await runtime.generations.generate_all(images.generations)
    files = await runtime.workers.on_host(encode_all, artifacts, images)
    output = images.output
    if output.response_format == "url":
        store = image_store(request.app)
        names = [store.put(data, MEDIA_TYPES[output.output_format], output.output_format) for data in files]
        data = [
            ImageData(
                url=str(request.url_for("image_file", name=name)),
                revised_prompt=images.revised_prompt,
                seed=artifact.seed,
            )
            for name, artifact in zip(names, artifacts, strict=True)
        ]
    else:
        data = await runtime.workers.on_host(base64_data, files, artifacts, images.revised_prompt)
    reports = images.contract.reports
    body = ImagesResponse(
        created=int(time.time()),
        data=data,
        background="opaque" if reports else None,
        output_format=output.output_format if reports else None,
        quality=images.quality,
        size=images.size if reports else None,
    )
    headers = {CHECKPOINT_HEADER: ModelNames.of(runtime.settings).checkpoint}
    return Response(body.model_dump_json(exclude_none=True), media_type=JSON, headers=headers)


def base64_data(files: list[bytes], artifacts: list[Artifact], revised_prompt: str | None) -> list[ImageData]:
    return [
        ImageData(
            b64_json=base64.b64encode(data).decode("ascii"), revised_prompt=revised_prompt, seed=artifact.seed
        )
        for data, artifact in zip(files, artifacts, strict=True)
    ]


@router.post(
    "/images/generations",
    summary="Create image (OpenAI Images API)",
    description="Text-to-image. `quality` sets the steps, `style` a style preset; `seed` is ours "
    "(docs/API.md).",
    response_class=Response,
    responses=openapi.images_responses(),
    openapi_extra=openapi.generation_request_body(),
)
async def create_image(request: Request, runtime: Caller) -> Response:
    raw = await read_body(request)
    images = await runtime.workers.on_host(
        parse_generation,
        raw,
        relaxed_sizes=runtime.settings.relaxed_sizes,
        models=ModelNames.of(runtime.settings),
    )
    return await answer(request, runtime, images)


@router.post(
    "/images/edits",
    summary="Create image edit (OpenAI Images API)",
    description="Image-to-image from `image`; with `mask`, only its fully transparent pixels are "
    "regenerated. `strength` and `seed` are ours (docs/API.md).",
    response_class=Response,
    responses=openapi.images_responses(),
    openapi_extra=openapi.edit_request_body(),
)
async def create_image_edit(request: Request, runtime: Caller) -> Response:
    fields, files = await read_images_form(request, runtime)
    images = await runtime.workers.on_host(
        parse_edit,
        fields,
        files,
        relaxed_sizes=runtime.settings.relaxed_sizes,
        models=ModelNames.of(runtime.settings),
    )
    return await answer(request, runtime, images)


@router.post(
    "/images/variations",
    summary="Create image variation (OpenAI Images API)",
    description="Image-to-image from `image` with no prompt. `strength` and `seed` are ours (docs/API.md).",
    response_class=Response,
    responses=openapi.images_responses(),
    openapi_extra=openapi.variation_request_body(),
)
async def create_image_variation(request: Request, runtime: Caller) -> Response:
    fields, files = await read_images_form(request, runtime)
    images = await runtime.workers.on_host(
        parse_variation,
        fields,
        files,
        relaxed_sizes=runtime.settings.relaxed_sizes,
        models=ModelNames.of(runtime.settings),
    )
    return await answer(request, runtime, images)


@router.get(
    "/images/files/{name}",
    name="image_file",
    summary="An image behind a `url` answer",
    description="Served for an hour from its creation, without an API key: the name is the credential.",
    response_class=Response,
    responses=openapi.image_file_responses(),
)
async def image_file(name: ImageNameParameter, request: Request) -> Response:
    image = image_store(request.app).get(name)
    if image is None:
        raise NotFound("The image has expired or does not exist.")
    seconds = image_store(request.app).seconds_left(image)
    return Response(
        image.data, media_type=image.media_type, headers={"Cache-Control": f"private, max-age={seconds}"}
    )


@router.get(
    "/models",
    summary="List models (OpenAI)",
    response_class=Response,
    responses=openapi.models_responses(),
)
async def list_models(runtime: Caller) -> Response:
    return Response(model_list(ModelNames.of(runtime.settings).names()).model_dump_json(), media_type=JSON)


@router.get(
    "/models/{model}",
    summary="Retrieve model (OpenAI)",
    response_class=Response,
    responses=openapi.models_responses(not_found=True),
)
async def retrieve_model(model: ModelParameter, runtime: Caller) -> Response:
    if model not in ModelNames.of(runtime.settings).names():
        raise ModelNotFound(f"The model `{shown(model)}` does not exist or you do not have access to it.")
    return Response(model_of(model).model_dump_json(), media_type=JSON)
