"""Bedrock's error shape: `{"message"}` with the code in `x-amzn-ErrorType`, and, once a response stream
has started, an exception frame of the matching `:exception-type`.

A body problem is worded as Bedrock's JSON-schema validator words it: "Malformed input request: " + the JSON
pointer and what is wrong + ", please reformat your input and try again."
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from sdxl_bedrock import errors
from sdxl_bedrock.api import most_specific
from sdxl_bedrock.api.openapi import JSON, REQUEST_ID_HEADER, by_status, regex_literal, string_header

BEDROCK_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
MALFORMED_PREFIX = "Malformed input request: "
MALFORMED_SUFFIX = ", please reformat your input and try again."


@dataclass(frozen=True)
class BedrockError:
    status: int
    code: str
    # The `:exception-type` of the frame that reports this error once a response stream has started.
    stream_exception: str


ERRORS: dict[type[errors.ServiceError], BedrockError] = {
    errors.InvalidRequest: BedrockError(400, "ValidationException", "validationException"),
    # HEAD or OPTIONS on an operation's path (with `Allow`): AWS's code for a request of no operation.
    errors.MethodNotAllowed: BedrockError(405, "UnknownOperationException", "validationException"),
    # Bedrock does not tell missing credentials from wrong ones.
    errors.MissingCredentials: BedrockError(403, "AccessDeniedException", "internalServerException"),
    errors.AccessDenied: BedrockError(403, "AccessDeniedException", "internalServerException"),
    errors.Forbidden: BedrockError(403, "AccessDeniedException", "internalServerException"),
    errors.NotFound: BedrockError(404, "ResourceNotFoundException", "internalServerException"),
    errors.ModelTimeout: BedrockError(408, "ModelTimeoutException", "modelTimeoutException"),
    errors.ModelFailure: BedrockError(424, "ModelErrorException", "modelStreamErrorException"),
    errors.Throttled: BedrockError(429, "ThrottlingException", "throttlingException"),
    errors.ModelNotReady: BedrockError(429, "ModelNotReadyException", "serviceUnavailableException"),
    errors.ShuttingDown: BedrockError(503, "ServiceUnavailableException", "serviceUnavailableException"),
    errors.ServiceError: BedrockError(500, "InternalServerException", "internalServerException"),
}


class BedrockErrorBody(BaseModel):
    """Bedrock's error body; the error's code travels in the `x-amzn-ErrorType` header."""

    model_config = ConfigDict(extra="forbid")

    message: str


def bedrock_error(error: errors.ServiceError) -> BedrockError:
    return most_specific(ERRORS, error)


def bedrock_message(error: errors.ServiceError) -> str:
    if isinstance(error, errors.MalformedBody):
        return f"{MALFORMED_PREFIX}{error.problem}{MALFORMED_SUFFIX}"
    return error.message


def error_response(error: errors.ServiceError, request_id: str) -> Response:
    shape = bedrock_error(error)
    return Response(
        BedrockErrorBody(message=bedrock_message(error)).model_dump_json(),
        status_code=shape.status,
        media_type=JSON,
        headers={
            "x-amzn-ErrorType": f"{shape.code}:{BEDROCK_ERROR_NAMESPACE}",
            "x-amzn-RequestId": request_id,
        },
    )


def error_docs(
    error_classes: Iterable[type[errors.ServiceError]], *, default: bool = False
) -> dict[int | str, Any]:
    """OpenAPI responses: one per status the classes map to, naming the codes `x-amzn-ErrorType` carries.

    `default` adds the same shape for any other status: FastAPI documents a 422 on every route with a path
    parameter unless a `default` response is documented, and this server never answers 422.
    """
    codes = by_status((ERRORS[cls].status, ERRORS[cls].code) for cls in error_classes)
    responses: dict[int | str, Any] = {
        status: _doc(names, f"Bedrock error: {', '.join(names)}.") for status, names in codes.items()
    }
    if default:
        every_code = sorted({shape.code for shape in ERRORS.values()})
        responses["default"] = _doc(
            every_code,
            "Bedrock error; this operation sends no other status. An unknown route, or a method a route does "
            "not take, answers 404 ResourceNotFoundException in this shape.",
        )
    return responses


def _doc(codes: list[str], description: str) -> dict[str, Any]:
    names = "|".join(codes)
    error_type = string_header(
        "The error code, which botocore raises as ClientError's code.",
        pattern=f"^({names}):{regex_literal(BEDROCK_ERROR_NAMESPACE)}$",
    )
    return {
        "description": description,
        "headers": {"x-amzn-ErrorType": error_type, **REQUEST_ID_HEADER},
        "model": BedrockErrorBody,
    }
