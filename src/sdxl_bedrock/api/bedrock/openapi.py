"""The OpenAPI pieces of Bedrock's face: the InvokeModel body from its pydantic model, the model id, and
the responses of both operations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sdxl_bedrock import errors
from sdxl_bedrock.api.bedrock.body import IMAGE_TO_IMAGE_KEYS, InvokeModelBody
from sdxl_bedrock.api.bedrock.errors import error_docs
from sdxl_bedrock.api.bedrock.responses import InvokeModelResult
from sdxl_bedrock.api.openapi import (
    ANY_ROUTE_ERRORS,
    BINARY,
    GENERATION_ERRORS,
    JSON,
    REQUEST_ID_HEADER,
    Schema,
    model_schema,
    regex_literal,
    request_body,
    string_header,
)

EVENT_STREAM = "application/vnd.amazon.eventstream"
# A retired model id is a 404 ResourceNotFoundException.
INVOKE_ERRORS: tuple[type[errors.ServiceError], ...] = (errors.NotFound, *GENERATION_ERRORS)
# The operations SDXL does not take: auth, the model id (400 or 404), the refusal (400).
UNSUPPORTED_ERRORS: tuple[type[errors.ServiceError], ...] = (
    errors.InvalidRequest,
    errors.AccessDenied,
    errors.NotFound,
    *ANY_ROUTE_ERRORS,
)
# The same ARN as routes.FOUNDATION_MODEL_ARN, without Python's named group.
FOUNDATION_MODEL_ARN_PREFIX = "arn:aws(-cn|-us-gov|-iso|-iso-b)?:bedrock:[a-z0-9-]+::foundation-model/"


def body_schema() -> Schema:
    """InvokeModel's body for SDXL: one shape for the three modes, which the fields given choose."""
    schema = model_schema(InvokeModelBody)
    schema["description"] = (
        "Stability's SDXL JSON. Without `init_image`: text-to-image (`height`, `width`). With it: "
        "image-to-image (`init_image_mode`, `image_strength`, `step_schedule_start`, `step_schedule_end`), "
        "masked when `mask_source` is given; the image's size is the output size. A key the mode does not "
        "take is refused."
    )
    schema["dependentRequired"] = {key: ["init_image"] for key in IMAGE_TO_IMAGE_KEYS}
    schema["dependentRequired"]["mask_image"] = ["init_image", "mask_source"]
    for side in ("height", "width"):
        # A JSON schema cannot compare a number with an image's size; the description says the rule.
        schema["properties"][side]["description"] += (
            f" With `init_image`: optional, and when given it must equal the image's {side}."
        )
    schema["properties"]["image_strength"]["description"] += (
        " With `mask_source` and without `image_strength`, the masked region is regenerated from pure noise."
    )
    return schema


def invoke_request_body() -> Schema:
    return request_body({JSON: body_schema()})


def model_id_schema(model_ids: Iterable[str], retired_ids: Iterable[str]) -> Schema:
    """InvokeModel's `modelId`: the SDXL ids, or the foundation-model ARN of either (percent-encoded)."""
    ids = sorted(model_ids)
    id_pattern = "|".join(map(regex_literal, ids))
    retired = ", ".join(f"`{model_id}`" for model_id in sorted(retired_ids))
    return {
        "anyOf": [
            {"enum": ids},
            {"pattern": rf"^{FOUNDATION_MODEL_ARN_PREFIX}({id_pattern})$"},
        ],
        "description": "The model id or its foundation-model ARN, percent-encoded (an ARN's `/` as `%2F`). "
        f"The retired SDXL ids ({retired}) and their ARNs: 404 ResourceNotFoundException (end of life). "
        "Any other id: 400 ValidationException.",
    }


def invoke_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The model's JSON: one artifact.",
            "headers": {
                **REQUEST_ID_HEADER,
                "X-Amzn-Bedrock-Invocation-Latency": string_header(
                    "Milliseconds from the request to the answer.", pattern="^[0-9]+$"
                ),
            },
            "model": InvokeModelResult,
        },
        **error_docs(INVOKE_ERRORS, default=True),
    }


def stream_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": 'An AWS event stream: one `chunk` event whose payload `{"bytes": ...}` holds '
            "the base64 of InvokeModel's JSON (with `extras.progress`, progress chunks first). An error "
            "after the 200 is an exception frame (`:message-type exception`).",
            "headers": {
                **REQUEST_ID_HEADER,
                "X-Amzn-Bedrock-Content-Type": string_header(
                    "The content type of the chunks' bytes.", enum=[JSON]
                ),
            },
            "content": {EVENT_STREAM: {"schema": BINARY}},
        },
        **error_docs(INVOKE_ERRORS, default=True),
    }


def unsupported_responses() -> dict[int | str, Any]:
    return error_docs(UNSUPPORTED_ERRORS, default=True)


def start_async_invoke_body() -> Schema:
    """StartAsyncInvoke's body as botocore sends it; only `modelId` is read."""
    return request_body(
        {
            JSON: {
                "type": "object",
                "description": "Only `modelId` is read: every request is refused (see the responses).",
                "properties": {
                    "modelId": {"type": "string", "minLength": 1, "maxLength": 256},
                    "modelInput": {"type": "object"},
                    "outputDataConfig": {"type": "object"},
                    "clientRequestToken": {"type": "string"},
                    "tags": {"type": "array"},
                },
                "required": ["modelId", "modelInput", "outputDataConfig"],
            }
        }
    )
