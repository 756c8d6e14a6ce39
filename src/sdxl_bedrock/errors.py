"""Failures a client can see, as values. Each wire maps them to its own status and body (api/errors.py)."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error that reaches a client with a modelled shape."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServiceError):
    """The client sent something we will never accept (Bedrock: ValidationException)."""

    def __init__(self, message: str, *, field: str | None = None, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.field = field
        # A finer name for faces that have one (Stability's `invalid_sdxl_v1_dimensions` and friends).
        self.kind = kind


class MalformedBody(InvalidRequest):
    """A problem with the request body; Bedrock wraps these in "Malformed input request: ..."."""


class AccessDenied(ServiceError):
    pass


class NotFound(ServiceError):
    pass


class ModelNotReady(ServiceError):
    pass


class Throttled(ServiceError):
    pass


class ModelTimeout(ServiceError):
    pass


class ModelFailure(ServiceError):
    """The engine failed on this request (Bedrock: ModelErrorException)."""


class ShuttingDown(ServiceError):
    pass
