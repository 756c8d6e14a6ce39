"""The OpenAPI pieces of the OpenAI face: request bodies from its pydantic models, and its responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sdxl_bedrock.api.openai.bodies import EditForm, GenerationBody, VariationForm
from sdxl_bedrock.api.openai.errors import ModelNotFound, error_docs
from sdxl_bedrock.api.openai.mapping import MEDIA_TYPES
from sdxl_bedrock.api.openai.responses import ImagesResponse, Model, ModelList
from sdxl_bedrock.api.openapi import (
    BINARY,
    GENERATION_ERRORS,
    JSON,
    REQUEST_ID_HEADER,
    Schema,
    model_schema,
    request_body,
    string_header,
)
from sdxl_bedrock.errors import AccessDenied, Forbidden, MissingCredentials, NotFound, ServiceError

MULTIPART = "multipart/form-data"
IMAGE_TYPES = "image/png, image/jpeg, image/webp"

# A missing key is told from a wrong one by `code`; an unknown model is a 404.
IMAGES_ROUTE_ERRORS: tuple[type[ServiceError], ...] = (MissingCredentials, ModelNotFound, *GENERATION_ERRORS)
MODELS_ROUTE_ERRORS: tuple[type[ServiceError], ...] = (
    MissingCredentials,
    AccessDenied,
    Forbidden,
    ServiceError,
)
FILE_ROUTE_ERRORS: tuple[type[ServiceError], ...] = (NotFound, Forbidden, ServiceError)


# store.ImageStore's names: 256 random bits in base64url, and the format's extension.
IMAGE_NAME_SCHEMA: Schema = {
    "pattern": "^[A-Za-z0-9_-]{43}\\.(png|jpeg|webp)$",
    "description": "As a `url` answer names it. Any other name, or one past its hour: 404.",
}


def model_id_schema(model_ids: list[str]) -> Schema:
    return {
        "enum": sorted(model_ids),
        "description": "Also the server's --model-alias names; with --strict-model-names only ours and "
        "those. "
        "Any other model: 404 model_not_found.",
    }


def nullable_schema(model: type[BaseModel]) -> Schema:
    """The JSON body's schema: `null` stands for an absent optional field (model_schema drops it)."""
    schema = model_schema(model)
    required = set(schema.get("required", ()))
    for name, field in schema["properties"].items():
        if name not in required:
            description = field.pop("description", None)
            field.pop("default", None)
            schema["properties"][name] = {
                "anyOf": [field, {"type": "null"}],
                **({"description": description} if description else {}),
            }
    return schema


def generation_request_body() -> Schema:
    return request_body({JSON: nullable_schema(GenerationBody)})


def form_schema(model: type[BaseModel], files: dict[str, str], required_files: tuple[str, ...]) -> Schema:
    """A multipart form: the images as files, every other field by name as text."""
    fields = model_schema(model)
    properties: Schema = {name: {**BINARY, "description": description} for name, description in files.items()}
    properties.update(fields["properties"])
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "required": [*required_files, *fields.get("required", ())],
    }


def edit_request_body() -> Schema:
    files = {
        "image": f"The image to edit ({IMAGE_TYPES}); its size is the output size unless `size` is given. "
        "OpenAI's SDKs send a list of images as `image[]`: one is taken, more are refused.",
        "mask": "A PNG the size of `image` with an alpha channel: its fully transparent pixels are "
        "regenerated.",
    }
    return request_body(
        {MULTIPART: form_schema(EditForm, files, ("image",))},
        encoding={"image": {"contentType": IMAGE_TYPES}, "mask": {"contentType": "image/png"}},
    )


def variation_request_body() -> Schema:
    files = {
        "image": f"The image to vary ({IMAGE_TYPES}); its size is the output size unless `size` is given."
    }
    return request_body(
        {MULTIPART: form_schema(VariationForm, files, ("image",))},
        encoding={"image": {"contentType": IMAGE_TYPES}},
    )


def images_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The images.",
            "headers": {
                **REQUEST_ID_HEADER,
                "X-Checkpoint": string_header("The name of the checkpoint that made the images (ours)."),
            },
            "model": ImagesResponse,
        },
        **error_docs(IMAGES_ROUTE_ERRORS),
    }


def image_file_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The image, in the format the request asked for.",
            "headers": {
                **REQUEST_ID_HEADER,
                "Cache-Control": string_header(
                    "private, max-age: the seconds left.", pattern="^private, max-age=[0-9]+$"
                ),
            },
            "content": {media_type: {"schema": BINARY} for media_type in MEDIA_TYPES.values()},
        },
        **error_docs(FILE_ROUTE_ERRORS, default=True),
    }


def models_responses(*, not_found: bool = False) -> dict[int | str, Any]:
    model: type[BaseModel] = Model if not_found else ModelList
    errors = (*MODELS_ROUTE_ERRORS, ModelNotFound) if not_found else MODELS_ROUTE_ERRORS
    return {
        200: {
            "description": "The model." if not_found else "The models.",
            "headers": REQUEST_ID_HEADER,
            "model": model,
        },
        **error_docs(errors, default=not_found),
    }
