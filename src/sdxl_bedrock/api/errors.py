"""One table: internal error -> status and error code, and the Bedrock error response built from it."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse

from sdxl_bedrock import errors

BEDROCK_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


@dataclass(frozen=True)
class BedrockError:
    status: int
    code: str
    # The `:exception-type` of the frame that reports this error once a response stream has started.
    stream_exception: str


# The most specific class is found by walking the MRO.
BEDROCK_ERRORS: dict[type[errors.ServiceError], BedrockError] = {
    errors.InvalidRequest: BedrockError(400, "ValidationException", "validationException"),
    errors.AccessDenied: BedrockError(403, "AccessDeniedException", "internalServerException"),
    errors.NotFound: BedrockError(404, "ResourceNotFoundException", "internalServerException"),
    errors.ModelTimeout: BedrockError(408, "ModelTimeoutException", "modelTimeoutException"),
    errors.ModelFailure: BedrockError(424, "ModelErrorException", "modelStreamErrorException"),
    errors.Throttled: BedrockError(429, "ThrottlingException", "throttlingException"),
    errors.ModelNotReady: BedrockError(429, "ModelNotReadyException", "serviceUnavailableException"),
    errors.ShuttingDown: BedrockError(503, "ServiceUnavailableException", "serviceUnavailableException"),
    errors.ServiceError: BedrockError(500, "InternalServerException", "internalServerException"),
}

MALFORMED_PREFIX = "Malformed input request: "
MALFORMED_SUFFIX = ", please reformat your input and try again."


def bedrock_error(error: errors.ServiceError) -> BedrockError:
    for cls in type(error).__mro__:
        if cls in BEDROCK_ERRORS:
            return BEDROCK_ERRORS[cls]
    return BEDROCK_ERRORS[errors.ServiceError]


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
