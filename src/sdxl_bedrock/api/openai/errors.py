"""OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with OpenAI's statuses.

A body problem is worded as OpenAI words it and names its parameter in `param`: "Unknown parameter: 'x'.",
"Missing required parameter: 'prompt'.", "Invalid type for 'n': expected an integer, but got a string
instead.", "Invalid value: '100x100'. Supported values are: ...", "Invalid 'n': integer above maximum value.
Expected a value <= 10, but got 11 instead.". `code` is OpenAI's code for it (`unknown_parameter`,
`invalid_value`, `integer_above_max_value`, ...), carried by the error's `kind` (bodies.py sets it).

Our rules where OpenAI's documents name no error: a request past the server's timeout is 408 `timeout`, a
model still loading 503 `model_not_ready`, a server shutting down 503 `service_unavailable`; an engine
failure is OpenAI's 500 `server_error`. A full queue is OpenAI's 429 `rate_limit_exceeded`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sdxl_bedrock import errors
from sdxl_bedrock.api import most_specific
from sdxl_bedrock.api.openapi import JSON, REQUEST_ID_HEADER, by_status
from sdxl_bedrock.api.validation import shown
from sdxl_bedrock.errors import ProblemKind

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
# OpenAI quotes part of the wrong key; no message of this server holds any part of a secret.
INCORRECT_KEY = "Incorrect API key provided."
CONTENT_POLICY = "Your request was rejected as a result of our safety system."


class ModelNotFound(errors.NotFound):
    """A model id this server does not serve: OpenAI's 404 `model_not_found`."""


class ContentPolicyViolation(errors.InvalidRequest):
    """The content filter blocked an image: OpenAI's 400 `content_policy_violation`."""

    def __init__(self) -> None:
        super().__init__(CONTENT_POLICY, kind="content_policy_violation")


@dataclass(frozen=True)
class OpenAIError:
    status: int
    type: str
    code: str | None


ERRORS: dict[type[errors.ServiceError], OpenAIError] = {
    errors.InvalidRequest: OpenAIError(400, INVALID_REQUEST, "invalid_value"),
    errors.MissingCredentials: OpenAIError(401, INVALID_REQUEST, None),
    errors.AccessDenied: OpenAIError(401, INVALID_REQUEST, "invalid_api_key"),
    errors.Forbidden: OpenAIError(403, INVALID_REQUEST, None),
    errors.NotFound: OpenAIError(404, INVALID_REQUEST, None),
    ModelNotFound: OpenAIError(404, INVALID_REQUEST, "model_not_found"),
    errors.ModelTimeout: OpenAIError(408, SERVER_ERROR, "timeout"),
    errors.Throttled: OpenAIError(429, "requests", "rate_limit_exceeded"),
    errors.ModelFailure: OpenAIError(500, SERVER_ERROR, None),
    errors.ModelNotReady: OpenAIError(503, SERVER_ERROR, "model_not_ready"),
    errors.ShuttingDown: OpenAIError(503, SERVER_ERROR, "service_unavailable"),
    errors.ServiceError: OpenAIError(500, SERVER_ERROR, None),
}

# The codes this wire's validation sets as an InvalidRequest's `kind` (OpenAI's names). Any other kind (the
# other wires' names, from shared helpers) falls back to the code of the problem's kind below.
OPENAI_CODES = frozenset(
    {
        "unknown_parameter",
        "unsupported_parameter",
        "missing_required_parameter",
        "invalid_type",
        "invalid_value",
        "unsupported_value",
        "empty_string",
        "string_above_max_length",
        "integer_below_min_value",
        "integer_above_max_value",
        "decimal_below_min_value",
        "decimal_above_max_value",
        "invalid_image_file",
        "invalid_json",
        "content_policy_violation",
    }
)
PROBLEM_CODES: dict[ProblemKind, str | None] = {
    ProblemKind.EXTRANEOUS_KEY: "unknown_parameter",
    ProblemKind.REQUIRED_KEY: "missing_required_parameter",
    ProblemKind.WRONG_TYPE: "invalid_type",
    ProblemKind.NOT_ALLOWED: "invalid_value",
    ProblemKind.OUT_OF_RANGE: "invalid_value",
    ProblemKind.TOO_LONG: "string_above_max_length",
    ProblemKind.TOO_SHORT: "invalid_value",
    ProblemKind.MALFORMED: "invalid_value",
    ProblemKind.TOO_LARGE: None,
    ProblemKind.INVALID: "invalid_value",
}


class OpenAIErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str = Field(description="invalid_request_error, requests (429) or server_error.")
    param: str | None = Field(description="The parameter at fault, where one is.")
    code: str | None = Field(description="invalid_value, unknown_parameter, model_not_found, ...")


class OpenAIErrorBody(BaseModel):
    """OpenAI's error body."""

    model_config = ConfigDict(extra="forbid")

    error: OpenAIErrorDetail


def openai_error(error: errors.ServiceError) -> OpenAIError:
    shape = most_specific(ERRORS, error)
    if isinstance(error, errors.MalformedBody):
        code = error.kind if error.kind in OPENAI_CODES else PROBLEM_CODES[error.problem.kind]
        return OpenAIError(shape.status, shape.type, code)
    if isinstance(error, errors.InvalidRequest) and error.kind in OPENAI_CODES:
        return OpenAIError(shape.status, shape.type, error.kind)
    return shape


def openai_param(error: errors.ServiceError) -> str | None:
    return error.field if isinstance(error, errors.InvalidRequest) and error.field != "body" else None


def openai_message(error: errors.ServiceError) -> str:
    """The message; a body problem in OpenAI's words, naming its parameter."""
    if not isinstance(error, errors.MalformedBody):
        return error.message
    problem, param = error.problem, openai_param(error)
    description = problem.description
    match problem.kind:
        case ProblemKind.EXTRANEOUS_KEY if error.kind == "unsupported_parameter":
            return f"Unsupported parameter: '{param}' is not supported by this server."
        case ProblemKind.EXTRANEOUS_KEY:
            return f"Unknown parameter: '{param}'."
        case ProblemKind.REQUIRED_KEY:
            return f"Missing required parameter: '{param}'."
        case ProblemKind.WRONG_TYPE if param:
            return f"Invalid type for '{param}': {description}."
        case ProblemKind.NOT_ALLOWED:
            return f"Invalid value: '{shown(problem.value)}'. {description}."
    if param:
        return f"Invalid '{param}': {description}."
    return f"{description[:1].upper()}{description[1:]}."


def error_response(error: errors.ServiceError, request_id: str) -> Response:
    shape = openai_error(error)
    detail = OpenAIErrorDetail(
        message=openai_message(error), type=shape.type, param=openai_param(error), code=shape.code
    )
    return Response(
        OpenAIErrorBody(error=detail).model_dump_json(), status_code=shape.status, media_type=JSON
    )


def error_docs(
    error_classes: Iterable[type[errors.ServiceError]], *, default: bool = False
) -> dict[int | str, Any]:
    """OpenAPI responses for these errors, naming each status's codes.

    `default` adds the same shape for any other status: FastAPI documents a 422 on every route with a path
    parameter unless a `default` response is documented, and this server never answers 422."""
    codes = by_status((ERRORS[cls].status, ERRORS[cls].code or "null") for cls in error_classes)
    responses: dict[int | str, Any] = {
        status: _doc(f"OpenAI error; `code`: {', '.join(found)}.") for status, found in codes.items()
    }
    if 400 in responses:
        responses[400] = _doc(
            "OpenAI error, `type` invalid_request_error; `code`: invalid_value, unknown_parameter, "
            "unsupported_parameter, missing_required_parameter, invalid_type, integer_above_max_value, "
            "string_above_max_length, invalid_image_file, content_policy_violation, ...; `param` names the "
            "parameter."
        )
    if default:
        responses["default"] = _doc("OpenAI error; this operation sends no other status.")
    return responses


def _doc(description: str) -> dict[str, Any]:
    return {"description": description, "headers": REQUEST_ID_HEADER, "model": OpenAIErrorBody}
