"""The OpenAPI pieces of Stability's face: request bodies from its pydantic models, and its responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sdxl_bedrock.api.openapi import (
    BINARY,
    GENERATION_ERRORS,
    JSON,
    REQUEST_ID_HEADER,
    Schema,
    model_schema,
    string_header,
)
from sdxl_bedrock.api.openapi import request_body as operation_request_body
from sdxl_bedrock.api.stability.bodies import (
    ImageToImageForm,
    MaskingForm,
    TextToImageBody,
)
from sdxl_bedrock.api.stability.errors import error_docs
from sdxl_bedrock.api.stability.fields import IMAGE_FORMATS
from sdxl_bedrock.api.stability.responses import StabilityArtifacts, StabilityEngines
from sdxl_bedrock.errors import AccessDenied, Forbidden, MissingCredentials, NotFound, ServiceError
from sdxl_bedrock.schema import FinishReason

MULTIPART = "multipart/form-data"
PNG = "image/png"

# Stability also tells a missing key (401) from a wrong one (403), and names an unknown engine (404).
GENERATION_ROUTE_ERRORS: tuple[type[ServiceError], ...] = (MissingCredentials, NotFound, *GENERATION_ERRORS)
ENGINES_ROUTE_ERRORS: tuple[type[ServiceError], ...] = (
    MissingCredentials,
    AccessDenied,
    Forbidden,
    ServiceError,
)


def json_request_body() -> Schema:
    schema = model_schema(TextToImageBody)
    schema["description"] = "Stability v1 text-to-image: `steps` 10..150 (default 50), `samples` 1..10."
    return operation_request_body({JSON: schema})


FORM_PROMPT_KEYS = r"^text_prompts\[[0-9]{1,6}\]\[(text|weight)\]$"  # bodies.FORM_PROMPT_KEY, in ECMA


def form_schema(model: type[BaseModel], files: tuple[str, ...]) -> Schema:
    """A multipart form: the images as binary parts, the prompts as `text_prompts[i][text]`/`[weight]`
    fields, every other field by name as text (`extras` as a JSON object written as text)."""
    fields = model_schema(model)
    image = f"A {IMAGE_FORMATS} file: its bytes, in a part with or without a file name."
    properties: Schema = {name: {**BINARY, "description": image} for name in files}
    for name, field in fields["properties"].items():
        if name == "text_prompts":
            continue
        if name == "extras":
            field = {"type": "string", "contentMediaType": JSON, "description": field["description"]}
        properties[name] = field
    prompt = fields["properties"]["text_prompts"]["items"]["properties"]
    return {
        "type": "object",
        "description": "Prompts as `text_prompts[0][text]`, `text_prompts[0][weight]`, ... in the order of "
        "their index (1 to 10 of them); a repeated key keeps its last value. `steps` 10..150 (default 50), "
        "`samples` 1..10.",
        "properties": properties,
        "patternProperties": {FORM_PROMPT_KEYS: {"anyOf": [prompt["text"], prompt["weight"]]}},
        "additionalProperties": False,
        "required": [*files[:1], *(name for name in fields.get("required", ()) if name != "text_prompts")],
    }


def form_request_body(*, masking: bool) -> Schema:
    files = ("init_image", "mask_image") if masking else ("init_image",)
    model = MaskingForm if masking else ImageToImageForm
    image_types = "image/png, image/jpeg, image/webp"
    return operation_request_body(
        {MULTIPART: form_schema(model, files)},
        encoding={name: {"contentType": image_types} for name in files},
    )


def engine_id_schema(engine_ids: list[str]) -> Schema:
    return {"enum": sorted(engine_ids), "description": "Any other engine: 404 not_found."}


def generation_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "`Accept: application/json` (the default): the artifacts. `Accept: image/png`: "
            "the image itself, with `Finish-Reason` and `Seed` headers (one sample only).",
            "headers": {
                **REQUEST_ID_HEADER,
                "Finish-Reason": string_header(
                    "With image/png.", required=False, enum=[reason.value for reason in FinishReason]
                ),
                "Seed": string_header("With image/png.", required=False, pattern="^[0-9]+$"),
            },
            "model": StabilityArtifacts,
            "content": {PNG: {"schema": BINARY}},
        },
        **error_docs(GENERATION_ROUTE_ERRORS, default=True),
    }


def engines_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The engines this server runs.",
            "headers": REQUEST_ID_HEADER,
            "model": StabilityEngines,
        },
        **error_docs(ENGINES_ROUTE_ERRORS),
    }
