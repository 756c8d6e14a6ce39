"""The OpenAPI pieces of the A1111 wire: request bodies from its pydantic models, responses per route."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sdxl_bedrock import errors
from sdxl_bedrock.api.a1111.bodies import Img2ImgBody, Txt2ImgBody
from sdxl_bedrock.api.a1111.errors import ErrorBody, error_docs
from sdxl_bedrock.api.openapi import JSON, REQUEST_ID_HEADER, Schema, request_body

# Auth (when on), a bug. Generation adds the body, the queue, the engine, the timeout, loading, shutdown.
ROUTE_ERRORS: tuple[type[errors.ServiceError], ...] = (
    errors.AccessDenied,
    errors.Forbidden,
    errors.ServiceError,
)
SETTINGS_ERRORS: tuple[type[errors.ServiceError], ...] = (errors.InvalidRequest, *ROUTE_ERRORS)
GENERATION_ERRORS: tuple[type[errors.ServiceError], ...] = (
    errors.InvalidRequest,
    errors.AccessDenied,
    errors.Forbidden,
    errors.ModelTimeout,
    errors.ModelFailure,
    errors.Throttled,
    errors.ModelNotReady,
    errors.ShuttingDown,
    errors.ServiceError,
)


def body_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON schema without pydantic's titles. Unlike the other wires, A1111's optional fields
    take null (their default), so the nulls stay."""

    def untitled(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: untitled(value)
                for key, value in node.items()
                if not (key == "title" and isinstance(value, str))
            }
        if isinstance(node, list):
            return [untitled(item) for item in node]
        return node

    schema: Schema = untitled(model.model_json_schema())
    schema.pop("description", None)
    return schema


def generation_request_body(img2img: bool) -> Schema:
    return request_body({JSON: body_schema(Img2ImgBody if img2img else Txt2ImgBody)})


def settings_request_body() -> Schema:
    schema = {
        "type": "object",
        "description": "Settings by name; each must be what the server does already (GET lists them).",
    }
    return request_body({JSON: schema})


def responses(
    model: Any,
    description: str,
    route_errors: tuple[type[errors.ServiceError], ...],
    a1111_refusals: dict[int, str] | None = None,
) -> Any:
    """The route's answers; `a1111_refusals` the statuses of the refusals A1111 itself makes there."""
    answer: dict[str, Any] = {"description": description, "headers": REQUEST_ID_HEADER}
    if isinstance(model, dict):
        answer["content"] = {JSON: {"schema": model}}
    else:
        answer["model"] = model
    documented = error_docs(route_errors)
    for status, when in (a1111_refusals or {}).items():
        entry = documented.setdefault(
            status, {"description": "", "headers": dict(REQUEST_ID_HEADER), "model": ErrorBody}
        )
        entry["description"] = f"{entry['description']} A1111's own refusal: {when}.".strip()
    return {200: answer, **documented}


# The refusals A1111 makes itself (errors.A1111Refusal), by route.
IMG2IMG_REFUSALS = {404: "no init_images", 500: "an image that does not decode"}
SETTINGS_REFUSALS = {500: "a checkpoint that is not served"}


NULL: Schema = {"type": "null"}
