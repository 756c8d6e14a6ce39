"""Stability's error shape: `{"id", "name", "message"}` with Stability's statuses and names.

An InvalidRequest's finer `kind` is its name (`invalid_sdxl_v1_dimensions`, `invalid_samples`, ...). A body
problem names its field (`text_prompts[0][text]: expected maxLength: 2000, actual: 2001`) where Bedrock
quotes a JSON pointer.

Our rules where Stability's documents name no error (they list 400, 401, 403, 404 and 500, and 429 for its
rate limit): a full queue is 429 `rate_limit_exceeded`, the name Stability's later APIs use for their 429;
a model still loading or a server shutting down is 503 `service_unavailable`; a request past the server's
timeout is 408 `request_timeout`; an engine failure is Stability's 500 `server_error`.
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
from sdxl_bedrock.errors import Location


@dataclass(frozen=True)
class StabilityError:
    status: int
    name: str


ERRORS: dict[type[errors.ServiceError], StabilityError] = {
    errors.InvalidRequest: StabilityError(400, "bad_request"),
    errors.MethodNotAllowed: StabilityError(405, "method_not_allowed"),  # HEAD, OPTIONS (with `Allow`)
    errors.MissingCredentials: StabilityError(401, "unauthorized"),
    errors.AccessDenied: StabilityError(403, "permission_denied"),
    errors.Forbidden: StabilityError(403, "permission_denied"),
    errors.NotFound: StabilityError(404, "not_found"),
    errors.ModelTimeout: StabilityError(408, "request_timeout"),
    errors.ModelFailure: StabilityError(500, "server_error"),
    errors.Throttled: StabilityError(429, "rate_limit_exceeded"),
    errors.ModelNotReady: StabilityError(503, "service_unavailable"),
    errors.ShuttingDown: StabilityError(503, "service_unavailable"),
    errors.ServiceError: StabilityError(500, "server_error"),
}


class StabilityErrorBody(BaseModel):
    """Stability's error body."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The request id (x-amzn-RequestId without its dashes).")
    name: str
    message: str


def stability_error(error: errors.ServiceError) -> StabilityError:
    shape = most_specific(ERRORS, error)
    if isinstance(error, errors.InvalidRequest):
        return StabilityError(shape.status, error.kind)
    return shape


def field_name(location: Location) -> str:
    """A body location as Stability names a field: `text_prompts[0][text]`."""
    first, *rest = location
    return f"{first}{''.join(f'[{part}]' for part in rest)}"


def stability_message(error: errors.ServiceError) -> str:
    """The message; a body problem is prefixed with the name of its field, where it has one."""
    if isinstance(error, errors.MalformedBody):
        problem = error.problem
        if problem.location:
            return f"{field_name(problem.location)}: {problem.description}"
        return problem.description
    return error.message


def error_response(error: errors.ServiceError, request_id: str) -> Response:
    shape = stability_error(error)
    # Stability's error id is a uuid; ours is the request id, so a report can be found in the logs.
    body = StabilityErrorBody(
        id=request_id.replace("-", ""), name=shape.name, message=stability_message(error)
    )
    return Response(body.model_dump_json(), status_code=shape.status, media_type=JSON)


def error_docs(
    error_classes: Iterable[type[errors.ServiceError]], *, default: bool = False
) -> dict[int | str, Any]:
    """OpenAPI responses for these errors; a 400's name is finer than the table's (`invalid_samples`,
    `invalid_sdxl_v1_dimensions`, `invalid_image_dimensions`, `invalid_mask_image`, ...).

    `default` adds the same shape for any other status: FastAPI documents a 422 on every route with a path
    parameter unless a `default` response is documented, and this server never answers 422."""
    names = by_status((ERRORS[cls].status, ERRORS[cls].name) for cls in error_classes)
    responses: dict[int | str, Any] = {
        status: _doc(f"Stability error: {', '.join(found)}.") for status, found in names.items()
    }
    if default:
        responses["default"] = _doc("Stability error; this operation sends no other status.")
    return responses


def _doc(description: str) -> dict[str, Any]:
    return {"description": description, "headers": REQUEST_ID_HEADER, "model": StabilityErrorBody}
