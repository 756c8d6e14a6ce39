"""A1111's error shapes, which are FastAPI's and those of A1111's own exception middleware.

- A body problem: 422 `{"detail": [{"loc": ["body", "steps"], "msg": "...", "type": "..."}]}`, FastAPI's
  validation shape (pydantic v1's `type` names); `loc` starts with "body" and names the field.
- An unknown route under /sdapi/: 404 `{"detail": "Not Found"}`, FastAPI's.
- A refusal A1111 makes itself (A1111Refusal: an img2img without `init_images` is 404 "Init image not
  found", an image that does not decode 500 "Invalid encoded image", POST /options naming another
  checkpoint 500 RuntimeError "model '...' not found"): A1111's middleware shape with A1111's status.
- Anything else: A1111's middleware shape `{"error", "detail", "body", "errors"}` with the status: 401 for
  auth (with `WWW-Authenticate: Basic`, as A1111's `--api-auth`), 429 for a full queue, 503 while the model
  loads or the server shuts down, 408 past the server's timeout, 500 for an engine failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from sdxl_bedrock import errors
from sdxl_bedrock.api import most_specific
from sdxl_bedrock.api.openapi import JSON, REQUEST_ID_HEADER, by_status, string_header
from sdxl_bedrock.errors import ProblemKind

STATUSES: dict[type[errors.ServiceError], int] = {
    errors.InvalidRequest: 422,
    errors.MissingCredentials: 401,
    errors.AccessDenied: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.ModelTimeout: 408,
    errors.ModelFailure: 500,
    errors.Throttled: 429,
    errors.ModelNotReady: 503,
    errors.ShuttingDown: 503,
    errors.ServiceError: 500,
}

# pydantic v1's error types, which A1111's FastAPI reports.
PROBLEM_TYPES = {
    ProblemKind.EXTRANEOUS_KEY: "value_error.extra",
    ProblemKind.REQUIRED_KEY: "value_error.missing",
    ProblemKind.WRONG_TYPE: "type_error",
    ProblemKind.OUT_OF_RANGE: "value_error.number",
    ProblemKind.TOO_LONG: "value_error.list.max_items",
    ProblemKind.TOO_SHORT: "value_error.list.min_items",
    ProblemKind.NOT_ALLOWED: "value_error.const",
    ProblemKind.MALFORMED: "value_error.jsondecode",
    ProblemKind.TOO_LARGE: "value_error",
    ProblemKind.INVALID: "value_error",
}


class A1111Refusal(errors.ServiceError):
    """A refusal A1111 makes itself, answered as its middleware answers it: `status`, the exception's type
    (`error`), its `detail`, and the exception as text (`errors`, by default `STATUS: detail`, as
    FastAPI's HTTPException prints)."""

    def __init__(self, status: int, detail: str, *, error: str = "HTTPException", text: str | None = None):
        super().__init__(detail or (text or ""))
        self.status = status
        self.error = error
        self.detail = detail
        self.text = text if text is not None else f"{status}: {detail}"


class ValidationProblem(BaseModel):
    """One finding (FastAPI also sends pydantic's `input`, `ctx`, `url` for the errors it finds itself)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """422: FastAPI's validation error."""

    detail: list[ValidationProblem]


class NotFoundBody(BaseModel):
    """404: FastAPI's answer for an unknown route."""

    model_config = ConfigDict(extra="forbid")

    detail: str


class ErrorBody(BaseModel):
    """A1111's exception middleware: the exception's type, its detail, the request body (empty) and the
    exception as text (`401: Incorrect username or password`)."""

    model_config = ConfigDict(extra="forbid")

    error: str
    detail: str
    body: str
    errors: str


def status_of(error: errors.ServiceError) -> int:
    if isinstance(error, A1111Refusal):
        return error.status
    return most_specific(STATUSES, error)


def validation_problem(error: errors.InvalidRequest) -> ValidationProblem:
    if isinstance(error, errors.MalformedBody):
        problem = error.problem
        return ValidationProblem(
            loc=["body", *problem.field_path()], msg=problem.description, type=PROBLEM_TYPES[problem.kind]
        )
    return ValidationProblem(
        loc=["body", *([error.field] if error.field else [])], msg=error.message, type="value_error"
    )


def error_response(error: errors.ServiceError, request_id: str) -> Response:
    status = status_of(error)
    body: BaseModel
    headers: dict[str, str] = {}
    if isinstance(error, A1111Refusal):
        body = ErrorBody(error=error.error, detail=error.detail, body="", errors=error.text)
    elif isinstance(error, errors.InvalidRequest):
        body = ValidationErrorBody(detail=[validation_problem(error)])
    elif isinstance(error, errors.NotFound):
        body = NotFoundBody(detail="Not Found")
    else:
        body = ErrorBody(
            error="HTTPException", detail=error.message, body="", errors=f"{status}: {error.message}"
        )
        if status == 401:
            headers["WWW-Authenticate"] = "Basic"
    return Response(body.model_dump_json(), status_code=status, media_type=JSON, headers=headers)


def error_docs(error_classes: Iterable[type[errors.ServiceError]]) -> dict[int | str, Any]:
    """OpenAPI responses for these errors, one per status."""
    statuses = by_status((STATUSES[cls], cls.__name__) for cls in error_classes)
    responses: dict[int | str, Any] = {}
    for status, names in statuses.items():
        model: type[BaseModel] = (
            ValidationErrorBody if status == 422 else NotFoundBody if status == 404 else ErrorBody
        )
        headers = dict(REQUEST_ID_HEADER)
        if status == 401:
            headers["WWW-Authenticate"] = string_header("Basic: A1111's --api-auth scheme.", enum=["Basic"])
        responses[status] = {
            "description": f"A1111 error: {', '.join(names)}.",
            "headers": headers,
            "model": model,
        }
    return responses
