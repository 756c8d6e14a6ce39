"""What every wire's validation shares: bounded JSON reading, pydantic's findings as `Problem`s, the output
size rule, images decoded from a body, and seeds. Nothing here knows a wire's field names: callers say
where a value sits (`location`), and each wire words the resulting `Problem` (errors.py) its own way.

The words of a `Problem` are those of a JSON-schema validator, as Bedrock reports them
(`40 is not less or equal to 35`, `expected type: Integer, found: Number`, `required key [text] not
found`): Bedrock's and Stability's faces quote them, the other wires may use them or their own.
Where several fields are wrong, the first in the model's field order is reported, so that a message always
names one field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from collections import Counter
from typing import Any, TypeVar

from PIL import Image
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sdxl_bedrock.codecs import decode_base64_image, decode_image_bytes
from sdxl_bedrock.errors import Location, MalformedBody, Problem, ProblemKind
from sdxl_bedrock.schema import MAX_SEED

# (width, height), in the order Stability's message lists them.
SDXL_V1_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (1216, 832),
    (1344, 768),
    (1536, 640),
    (640, 1536),
    (768, 1344),
    (832, 1216),
    (896, 1152),
)
RELAXED_SIZE_STEP = 64
RELAXED_SIZE_MAX = 2048

# A real body nests 3 deep and holds a few dozen elements; these bounds only stop hostile bodies before
# json.loads recurses into them or allocates millions of objects.
MAX_JSON_DEPTH = 32
MAX_JSON_ELEMENTS = 10_000

ModelT = TypeVar("ModelT", bound=BaseModel)


def malformed(
    location: Location | None,
    description: str,
    *,
    kind: ProblemKind = ProblemKind.INVALID,
    value: object = None,
    error_name: str = "bad_request",
    field: str | None = None,
) -> MalformedBody:
    """A MalformedBody for one Problem; `error_name` is Stability's finer name for it (`invalid_image`)."""
    return MalformedBody(Problem(location, description, kind, value), kind=error_name, field=field)


def random_nonzero_seed() -> int:
    """A seed for a request that asks for a random one: 1..MAX_SEED (0 means "random" on the wire)."""
    return secrets.randbelow(MAX_SEED) + 1


# ---- JSON ----------------------------------------------------------------------------------------------

_QUOTE_OR_STRUCTURE = re.compile(r'["\[\]{},]')
_JSON_READER = json.JSONDecoder()


def load_json_object(raw: bytes, *, location: Location = (), noun: str = "the body") -> dict[str, Any]:
    """`raw` as a JSON object, read strictly: UTF-8, no duplicate keys, finite numbers, bounded nesting and
    element count. `noun` names the document in messages ("the body", or "the value" of a form field at
    `location`). Raises MalformedBody."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(location, f"{noun} is not valid UTF-8", kind=ProblemKind.MALFORMED) from None
    _check_json_bounds(text, location, noun)
    try:
        document = json.loads(
            text,
            object_pairs_hook=lambda pairs: _object_without_duplicate_keys(pairs, location),
            parse_constant=lambda literal: _reject_non_finite(literal, location),
            parse_float=lambda literal: _finite_float(literal, location),
        )
    except json.JSONDecodeError as error:
        raise malformed(location, f"{noun} is not valid JSON: {error}", kind=ProblemKind.MALFORMED) from None
    except ValueError:  # an integer beyond Python's digit limit for int()
        raise malformed(
            location, f"{noun} holds a number too long to read", kind=ProblemKind.MALFORMED
        ) from None
    if not isinstance(document, dict):
        raise malformed(
            location,
            f"expected type: JSONObject, found: {json_type(document)}",
            kind=ProblemKind.WRONG_TYPE,
            value=document,
        )
    return document


def _check_json_bounds(text: str, location: Location, noun: str) -> None:
    """Refuse deep nesting and huge element counts before json.loads recurses or allocates.

    Walks only strings, brackets and commas (each string, container and comma counts as an element, which
    also bounds this loop); on malformed input it stops where json.loads will stop too.
    """
    depth = elements = 0
    position = 0
    while match := _QUOTE_OR_STRUCTURE.search(text, position):
        token = match.group()
        if token == '"':
            try:
                position = _JSON_READER.raw_decode(text, match.start())[1]
            except json.JSONDecodeError:
                return
        else:
            position = match.end()
        if token in "]}":
            depth -= 1
            if depth < 0:
                return
            continue
        elements += 1
        if token in "[{":
            depth += 1
        if depth > MAX_JSON_DEPTH:
            raise malformed(
                location, f"{noun} nests deeper than {MAX_JSON_DEPTH} levels", kind=ProblemKind.TOO_LARGE
            )
        if elements > MAX_JSON_ELEMENTS:
            raise malformed(
                location,
                f"{noun} holds more than {MAX_JSON_ELEMENTS} JSON elements",
                kind=ProblemKind.TOO_LARGE,
            )


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]], location: Location) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        key = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise malformed(
            location, f"duplicate key [{shown(key)}] is not permitted", kind=ProblemKind.MALFORMED
        )
    return document


def _reject_non_finite(literal: str, location: Location) -> float:
    raise malformed(location, f"{literal} is not a valid JSON number", kind=ProblemKind.MALFORMED)


def _finite_float(literal: str, location: Location) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise malformed(
            location, f"{shown(literal)} is out of the range of a JSON number", kind=ProblemKind.OUT_OF_RANGE
        )
    return value


# ---- pydantic's findings as Problems -----------------------------------------------------------------------

_EXPECTED_TYPES = {
    "int_type": "Integer",
    "float_type": "Number",
    "string_type": "String",
    "bool_type": "Boolean",
    "list_type": "JSONArray",
    "dict_type": "JSONObject",
    "model_type": "JSONObject",
}
_UNREADABLE_TEXT = {
    "int_parsing": "an Integer",
    "int_parsing_size": "an Integer in range",
    "float_parsing": "a Number",
    "finite_number": "a finite Number",
}
# Exact types: the values come from json.loads, and True must not read as an Integer.
_JSON_TYPE_NAMES: dict[type, str] = {
    bool: "Boolean",
    int: "Integer",
    float: "Number",
    str: "String",
    list: "JSONArray",
    dict: "JSONObject",
    type(None): "Null",
}


def validate(model: type[ModelT], document: dict[str, Any], *, lax: bool = False) -> ModelT:
    """`document` checked by `model`; the first finding raised as MalformedBody.

    `lax` for form values, which are all text: `"30"` then reads as the Integer 30; otherwise the model's
    own strictness holds."""
    try:
        # None leaves the models' own strictness (and any field's own lax mode) in force.
        return model.model_validate(document, strict=False if lax else None)
    except ValidationError as error:
        raise MalformedBody(problem_from_pydantic(error.errors(include_url=False)[0])) from None


def problem_from_pydantic(error: ErrorDetails) -> Problem:
    """One pydantic finding as a Problem, in the words of Bedrock's JSON-schema validator."""
    location, value, limits = tuple(error["loc"]), error["input"], error.get("ctx", {})
    match error["type"]:
        case "extra_forbidden":
            key = location[-1]
            return Problem(
                location[:-1],
                f"extraneous key [{shown(key)}] is not permitted",
                ProblemKind.EXTRANEOUS_KEY,
                key,
            )
        case "missing":
            key = location[-1]
            return Problem(location[:-1], f"required key [{key}] not found", ProblemKind.REQUIRED_KEY, key)
        case kind if kind in _EXPECTED_TYPES:
            detail = f"expected type: {_EXPECTED_TYPES[kind]}, found: {json_type(value)}"
            return Problem(location, detail, ProblemKind.WRONG_TYPE, value)
        case kind if kind in _UNREADABLE_TEXT:  # form values, read as text
            return Problem(
                location, f"{shown(value)} is not {_UNREADABLE_TEXT[kind]}", ProblemKind.WRONG_TYPE, value
            )
        case "greater_than_equal":
            detail = f"{shown(value)} is not greater or equal to {_limit(limits['ge'])}"
            return Problem(location, detail, ProblemKind.OUT_OF_RANGE, value)
        case "less_than_equal":
            detail = f"{shown(value)} is not less or equal to {_limit(limits['le'])}"
            return Problem(location, detail, ProblemKind.OUT_OF_RANGE, value)
        case "string_too_long":
            detail = f"expected maxLength: {limits['max_length']}, actual: {len(value)}"
            return Problem(location, detail, ProblemKind.TOO_LONG, value)
        case "too_short":
            detail = f"expected minimum item count: {limits['min_length']}, found: {limits['actual_length']}"
            return Problem(location, detail, ProblemKind.TOO_SHORT, value)
        case "too_long":
            detail = f"expected maximum item count: {limits['max_length']}, found: {limits['actual_length']}"
            return Problem(location, detail, ProblemKind.TOO_LONG, value)
        case "string_unicode":  # a lone surrogate from a \ud800 escape, which no encoder can take
            return Problem(
                location, "not a valid Unicode string (unpaired surrogate)", ProblemKind.MALFORMED, value
            )
        case "enum" | "literal_error":
            return Problem(
                location, f"{shown(value)} is not a valid enum value", ProblemKind.NOT_ALLOWED, value
            )
        case _:
            return Problem(location, error["msg"], ProblemKind.INVALID, value)


def json_type(value: object) -> str:
    """The JSON-schema name of a decoded JSON value's type (`Integer`, `JSONArray`, `Null`, ...)."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _limit(bound: float) -> str:
    # pydantic widens the bounds of a float field to floats; Bedrock quotes `35`, not `35.0`.
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def shown(value: object, limit: int = 100) -> str:
    """A client's value as a message quotes it, cut short when long."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- the output size ---------------------------------------------------------------------------------------


def check_dimensions(width: int, height: int, *, relaxed: bool, field: str | None = None) -> None:
    """The output size rule: the nine SDXL 1.0 sizes, or with `relaxed` any multiple of 64 up to 2048.

    `field` is the key to blame; without one, `width` if the width alone is wrong, else `height`.
    Raises MalformedBody (Stability's names `invalid_sdxl_v1_dimensions` / `invalid_image_dimensions`).
    """
    if relaxed:
        width_ok, height_ok = _relaxed_side_ok(width), _relaxed_side_ok(height)
        if width_ok and height_ok:
            return
        error_name = "invalid_image_dimensions"
        description = (
            f"the allowed dimensions are multiples of {RELAXED_SIZE_STEP} between {RELAXED_SIZE_STEP} "
            f"and {RELAXED_SIZE_MAX}, but we received {width}x{height}"
        )
    else:
        if (width, height) in SDXL_V1_SIZES:
            return
        width_ok = any(width == allowed_width for allowed_width, _ in SDXL_V1_SIZES)
        error_name = "invalid_sdxl_v1_dimensions"
        allowed = ", ".join(f"{w}x{h}" for w, h in SDXL_V1_SIZES)
        description = (
            f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {allowed}, "
            f"but we received {width}x{height}"
        )
    # The size is a property of two fields (or of the init image), so the problem has no one location.
    raise malformed(
        None,
        description,
        kind=ProblemKind.NOT_ALLOWED,
        value=f"{width}x{height}",
        error_name=error_name,
        field=field or ("height" if width_ok else "width"),
    )


def _relaxed_side_ok(side: int) -> bool:
    return RELAXED_SIZE_STEP <= side <= RELAXED_SIZE_MAX and side % RELAXED_SIZE_STEP == 0


# ---- images ------------------------------------------------------------------------------------------------


def decode_base64_field(value: str, location: Location, *, error_name: str) -> Image.Image:
    """A base64 image at `location` (see codecs.decode_image_bytes); MalformedBody named `error_name`."""
    return _named(lambda: decode_base64_image(value, location), error_name)


# A data URL, or base64 text (with MIME line breaks), where an image file's bytes belong. No PNG, JPEG or
# WebP file is either: each holds bytes outside the base64 alphabet within its first 8 bytes.
_DATA_URL_PREFIX = b"data:"
_BASE64_ALPHABET = re.compile(rb"[A-Za-z0-9+/=\r\n]+")


def decode_file_field(data: bytes, location: Location, *, error_name: str) -> Image.Image:
    """An uploaded image (a form part, with or without a file name) at `location`; MalformedBody named
    `error_name`. A part that holds a data URL or base64 text instead of the file's bytes is told so."""
    sent_as_text = None
    if data[: len(_DATA_URL_PREFIX)].lower() == _DATA_URL_PREFIX:
        sent_as_text = "a data URL"
    elif _is_base64_text(data):
        sent_as_text = "text that looks like base64"
    if sent_as_text is not None:
        raise malformed(
            location,
            f"expected the bytes of an image file, found {sent_as_text}; send the file's own bytes",
            kind=ProblemKind.WRONG_TYPE,
            error_name=error_name,
        )
    return _named(lambda: decode_image_bytes(data, location), error_name)


def _is_base64_text(data: bytes) -> bool:
    if not _BASE64_ALPHABET.fullmatch(data):
        return False
    try:
        base64.b64decode(data.replace(b"\r", b"").replace(b"\n", b""), validate=True)
    except binascii.Error:
        return False
    return True


def resized(
    image: Image.Image, mask: Image.Image | None, size: tuple[int, int]
) -> tuple[Image.Image, Image.Image | None]:
    """The image (Lanczos) and its mask (nearest: it stays two-valued) at `size`."""
    if image.size == size:
        return image, mask
    resized_mask = mask.resize(size, Image.Resampling.NEAREST) if mask is not None else None
    return image.resize(size, Image.Resampling.LANCZOS), resized_mask


def _named(decode: Any, error_name: str) -> Image.Image:
    try:
        image: Image.Image = decode()
    except MalformedBody as error:
        raise MalformedBody(error.problem, kind=error_name) from None
    return image
