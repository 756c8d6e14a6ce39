"""One table: internal error -> status and error code, and the Bedrock error response built from it."""

from __future__ import annotations

from starlette.responses import JSONResponse

from sdxl_bedrock import errors

BEDROCK_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"

# (status, Bedrock error code); the most specific class is found by walking the MRO.
BEDROCK_ERRORS: dict[type[errors.ServiceError], tuple[int, str]] = {
    errors.InvalidRequest: (400, "ValidationException"),
    errors.AccessDenied: (403, "AccessDeniedException"),
    errors.NotFound: (404, "ResourceNotFoundException"),
    errors.ModelTimeout: (408, "ModelTimeoutException"),
    errors.ModelFailure: (424, "ModelErrorException"),
    errors.Throttled: (429, "ThrottlingException"),
    errors.ModelNotReady: (429, "ModelNotReadyException"),
    errors.ShuttingDown: (503, "ServiceUnavailableException"),
    errors.ServiceError: (500, "InternalServerException"),
}

MALFORMED_PREFIX = "Malformed input request: "
MALFORMED_SUFFIX = ", please reformat your input and try again."


def bedrock_status_and_code(error: errors.ServiceError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in BEDROCK_ERRORS:
            return BEDROCK_ERRORS[cls]
    return BEDROCK_ERRORS[errors.ServiceError]


def bedrock_message(error: errors.ServiceError) -> str:
    if isinstance(error, errors.MalformedBody):
        return f"{MALFORMED_PREFIX}{error.message}{MALFORMED_SUFFIX}"
    return error.message


def bedrock_error_response(error: errors.ServiceError, request_id: str) -> JSONResponse:
    status, code = bedrock_status_and_code(error)
    return JSONResponse(
        {"message": bedrock_message(error)},
        status_code=status,
        headers={"x-amzn-ErrorType": f"{code}:{BEDROCK_ERROR_NAMESPACE}", "x-amzn-RequestId": request_id},
    )
