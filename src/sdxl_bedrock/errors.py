"""Failures a client can see, as values. Each wire maps them to its own status and body (its errors.py).

A problem with a request body is structured (`Problem`: where, what, the offending value), so that each wire
words it its own way without parsing another wire's sentence: Bedrock quotes a JSON pointer
(`Malformed input request: #/cfg_scale: 40 is not less or equal to 35, ...`), Stability names the field
(`cfg_scale: 40 is not less or equal to 35`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

Location = tuple[str | int, ...]


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


class ProblemKind(enum.StrEnum):
    """What is wrong, for wires that report a machine-readable reason (OpenAI's `code`, FastAPI's `type`)."""

    EXTRANEOUS_KEY = "extraneous_key"
    REQUIRED_KEY = "required_key"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    TOO_SHORT = "too_short"
    NOT_ALLOWED = "not_allowed"  # not one of an enumeration's values
    MALFORMED = "malformed"  # not readable at all: JSON, UTF-8, base64, an image file, a form
    TOO_LARGE = "too_large"
    INVALID = "invalid"  # a rule across fields, or any other rule


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request body.

    `location` is where, as the path of keys and list indices from the body's root (`()` for the body
    itself; for a key that is missing or not allowed, the object that holds it; None for a problem of
    several fields at once, such as the output size, which no single place holds). `description` says what
    is wrong in the words of a JSON-schema validator, without the location (`40 is not less or equal to
    35`). `value` is the offending value where there is one (for a key: the key).
    """

    location: Location | None
    description: str
    kind: ProblemKind = ProblemKind.INVALID
    value: object = None

    def pointer(self) -> str | None:
        """The location as a JSON pointer with `#` for the root (`#/text_prompts/0/text`), or None."""
        if self.location is None:
            return None
        return "#" + "".join(f"/{part}" for part in self.location)

    def field_path(self) -> Location:
        """The field to blame: the location, or for a key missing or not allowed, the key itself."""
        location = self.location or ()
        if self.kind in (ProblemKind.EXTRANEOUS_KEY, ProblemKind.REQUIRED_KEY):
            return (*location, str(self.value))
        return location

    def __str__(self) -> str:
        pointer = self.pointer()
        return self.description if pointer is None else f"{pointer}: {self.description}"


class MalformedBody(InvalidRequest):
    """A problem with the request body; Bedrock wraps these in "Malformed input request: ...".

    `message` is the problem with its JSON pointer (`#/cfg_scale: 40 is not ...`), the form logs show;
    `field` the place to blame (`text_prompts/0/text`) unless given."""

    def __init__(self, problem: Problem, *, kind: str = "bad_request", field: str | None = None) -> None:
        blamed = field or "/".join(map(str, problem.field_path())) or None
        super().__init__(str(problem), field=blamed, kind=kind)
        self.problem = problem


class AccessDenied(ServiceError):
    pass


class Forbidden(AccessDenied):
    """Refused for where the request comes from (a Host or an Origin the server does not answer), whatever
    its credentials: 403 on every wire, never a 401 that asks for a key."""


class MissingCredentials(AccessDenied):
    """No credentials at all. Bedrock does not tell this apart (403); Stability does (401 unauthorized)."""


class NotFound(ServiceError):
    pass


class ModelNotReady(ServiceError):
    pass


class Throttled(ServiceError):
    pass


class ModelTimeout(ServiceError):
    pass


class BodyTimeout(ModelTimeout):
    """The request body did not arrive within the server's body deadline: the wires' 408 (each maps
    ModelTimeout to its 408), and the connection is closed."""


class ModelFailure(ServiceError):
    """The engine failed on this request (Bedrock: ModelErrorException)."""


class ShuttingDown(ServiceError):
    pass


class Overloaded(ShuttingDown):
    """The server holds as many connections as it takes: the wires' 503, as for a shutdown."""


class MethodNotAllowed(InvalidRequest):
    """A HEAD or OPTIONS on a route that takes other methods (`allowed`, for the `Allow` header): 405 where a
    wire's table says so, else the wire's 400."""

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message, kind="method_not_allowed")
        self.allowed = allowed
