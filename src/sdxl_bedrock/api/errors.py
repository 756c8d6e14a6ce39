"""One table: internal error -> status and error code for each face, and the error responses built from it.

Bedrock answers `{"message"}` with the code in `x-amzn-ErrorType`; Stability answers
`{"id", "name", "message"}`, where an InvalidRequest's `kind` is the name (`invalid_sdxl_v1_dimensions`, ...).
Validation words a body problem after Bedrock's JSON-schema validator (`#/cfg_scale: 99 is not ...`); Bedrock
wraps that in "Malformed input request: ...", Stability names the field instead of the pointer.

Our rules where Stability's documents name no error (they list 400, 401, 403, 404 and 500, and 429 for its
rate limit): a full queue is 429 `rate_limit_exceeded`, the name Stability's later APIs use for their 429;
a model still loading or a server shutting down is 503 `service_unavailable`; a request past the server's
timeout is 408 `request_timeout`; an engine failure is Stability's 500 `server_error`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.responses import JSONResponse

from sdxl_bedrock import errors

BEDROCK_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


class MissingCredentials(errors.AccessDenied):
    """No credentials at all. Bedrock does not tell this apart (403); Stability does (401 unauthorized)."""


@dataclass(frozen=True)
class BedrockError:
    status: int
    code: str
    # The `:exception-type` of the frame that reports this error once a response stream has started.
    stream_exception: str


@dataclass(frozen=True)
class StabilityError:
    status: int
    name: str


@dataclass(frozen=True)
class WireError:
    """One internal error as each face reports it."""

    bedrock: BedrockError
    stability: StabilityError


# The most specific class is found by walking the MRO.
ERRORS: dict[type[errors.ServiceError], WireError] = {
    errors.InvalidRequest: WireError(
        BedrockError(400, "ValidationException", "validationException"),
        StabilityError(400, "bad_request"),
    ),
    MissingCredentials: WireError(
        BedrockError(403, "AccessDeniedException", "internalServerException"),
        StabilityError(401, "unauthorized"),
    ),
    errors.AccessDenied: WireError(
        BedrockError(403, "AccessDeniedException", "internalServerException"),
        StabilityError(403, "permission_denied"),
    ),
    errors.NotFound: WireError(
        BedrockError(404, "ResourceNotFoundException", "internalServerException"),
        StabilityError(404, "not_found"),
    ),
    errors.ModelTimeout: WireError(
        BedrockError(408, "ModelTimeoutException", "modelTimeoutException"),
        StabilityError(408, "request_timeout"),
    ),
    errors.ModelFailure: WireError(
        BedrockError(424, "ModelErrorException", "modelStreamErrorException"),
        StabilityError(500, "server_error"),
    ),
    errors.Throttled: WireError(
        BedrockError(429, "ThrottlingException", "throttlingException"),
        StabilityError(429, "rate_limit_exceeded"),
    ),
    errors.ModelNotReady: WireError(
        BedrockError(429, "ModelNotReadyException", "serviceUnavailableException"),
        StabilityError(503, "service_unavailable"),
    ),
    errors.ShuttingDown: WireError(
        BedrockError(503, "ServiceUnavailableException", "serviceUnavailableException"),
        StabilityError(503, "service_unavailable"),
    ),
    errors.ServiceError: WireError(
        BedrockError(500, "InternalServerException", "internalServerException"),
        StabilityError(500, "server_error"),
    ),
}

MALFORMED_PREFIX = "Malformed input request: "
MALFORMED_SUFFIX = ", please reformat your input and try again."
# `#/text_prompts/0/text: ...`, `#: ...`: the pointer that opens a message worded by validation.
JSON_POINTER_OPENING = re.compile(r"#((?:/[^/:\s]+)*): ")


def wire_error(error: errors.ServiceError) -> WireError:
    for cls in type(error).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return ERRORS[errors.ServiceError]


def bedrock_error(error: errors.ServiceError) -> BedrockError:
    return wire_error(error).bedrock


def bedrock_message(error: errors.ServiceError) -> str:
    if isinstance(error, errors.MalformedBody):
        return f"{MALFORMED_PREFIX}{error.message}{MALFORMED_SUFFIX}"
    return error.message


def bedrock_error_response(error: errors.ServiceError, request_id: str) -> JSONResponse:
    shape = bedrock_error(error)
    return JSONResponse(
        {"message": bedrock_message(error)},
        status_code=shape.status,
        headers={
            "x-amzn-ErrorType": f"{shape.code}:{BEDROCK_ERROR_NAMESPACE}",
            "x-amzn-RequestId": request_id,
        },
    )


def stability_error(error: errors.ServiceError) -> StabilityError:
    shape = wire_error(error).stability
    if isinstance(error, errors.InvalidRequest):
        return StabilityError(shape.status, error.kind)
    return shape


def stability_message(error: errors.ServiceError) -> str:
    """The message with a field name (`text_prompts[0][text]: ...`) where validation put a JSON pointer."""
    pointer = JSON_POINTER_OPENING.match(error.message)
    if pointer is None:
        return error.message
    detail = error.message[pointer.end() :]
    first, *rest = pointer[1].split("/")[1:] or [""]
    return f"{first}{''.join(f'[{part}]' for part in rest)}: {detail}" if first else detail


def stability_error_response(error: errors.ServiceError, request_id: str) -> JSONResponse:
    shape = stability_error(error)
    return JSONResponse(
        # Stability's error id is a uuid; ours is the request id, so a report can be found in the logs.
        {"id": request_id.replace("-", ""), "name": shape.name, "message": stability_message(error)},
        status_code=shape.status,
    )
