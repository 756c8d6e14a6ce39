"""The OpenAPI description of both faces, built from the code it describes so that it cannot drift from it.

Request bodies come from the validators' own pydantic models (`model_json_schema()`), error responses from
the error table in api/errors.py, the model and engine ids from the constants the handlers check against.
The route decorators in api/bedrock.py, api/stability.py and app.py take their `responses` and
`openapi_extra` from here; the handlers read their bodies themselves, so nothing here validates anything.

What a JSON schema cannot say is said in the descriptions: the size rule, the mode rules across fields,
and what an image must hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from sdxl_bedrock import errors
from sdxl_bedrock.api.errors import BEDROCK_ERROR_NAMESPACE, ERRORS, MissingCredentials
from sdxl_bedrock.schema import FinishReason

# validation.py keeps its pydantic models private; reading their schemas here is what keeps the document true.
from sdxl_bedrock.validation import (
    RELAXED_SIZE_MAX,
    RELAXED_SIZE_STEP,
    SDXL_V1_SIZES,
    _BedrockBody,
    _StabilityImageToImage,
    _StabilityMasking,
    _StabilityTextToImage,
)

Schema = dict[str, Any]
ErrorClasses = Iterable[type[errors.ServiceError]]

JSON = "application/json"
EVENT_STREAM = "application/vnd.amazon.eventstream"
PNG = "image/png"
MULTIPART = "multipart/form-data"

# ---- the errors each route can answer, as classes of sdxl_bedrock.errors ----------------------------------

# Every route: a bug is InternalServerException / server_error.
ANY_ROUTE_ERRORS: tuple[type[errors.ServiceError], ...] = (errors.ServiceError,)
# Auth (when configured), the body, the queue, the engine, the timeout, the model loading, the shutdown.
GENERATION_ERRORS: tuple[type[errors.ServiceError], ...] = (
    errors.InvalidRequest,
    errors.AccessDenied,
    errors.ModelTimeout,
    errors.ModelFailure,
    errors.Throttled,
    errors.ModelNotReady,
    errors.ShuttingDown,
    *ANY_ROUTE_ERRORS,
)
# Stability also tells a missing key (401) from a wrong one (403), and names an unknown engine (404).
STABILITY_GENERATION_ERRORS: tuple[type[errors.ServiceError], ...] = (
    MissingCredentials,
    errors.NotFound,
    *GENERATION_ERRORS,
)
STABILITY_ENGINES_ERRORS: tuple[type[errors.ServiceError], ...] = (
    MissingCredentials,
    errors.AccessDenied,
    *ANY_ROUTE_ERRORS,
)
PING_ERRORS: tuple[type[errors.ServiceError], ...] = (errors.ModelNotReady, *ANY_ROUTE_ERRORS)

# ---- schemas from the pydantic models -------------------------------------------------------------------


def model_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON schema as one self-contained object, ready to sit inside an OpenAPI operation.

    pydantic's `$defs` are inlined (a `#/$defs/...` pointer would resolve against the OpenAPI document, not
    this schema), its generated titles dropped, and the `null` it allows for "absent" fields removed: our
    validators refuse `null` for every field ("null is never an absent field").
    """
    raw = model.model_json_schema()
    definitions: dict[str, Schema] = raw.pop("$defs", {})
    raw.pop("description", None)  # the model's docstring speaks of our code, not of the wire
    return _clean(raw, definitions)


def _clean(node: Any, definitions: Mapping[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_clean(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        node = {**definitions[name], **{key: value for key, value in node.items() if key != "$ref"}}
    schema: Schema = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "properties":
            schema[key] = {name: _clean(field, definitions) for name, field in value.items()}
        else:
            schema[key] = _clean(value, definitions)
    branches = schema.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        kept = [branch for branch in branches if branch != {"type": "null"}]
        del schema["anyOf"]
        if schema.get("default", 0) is None:
            del schema["default"]
        schema = {**kept[0], **schema} if len(kept) == 1 else {**schema, "anyOf": kept}
    return schema


def _sizes(separator: str = "x") -> str:
    return ", ".join(f"{width}{separator}{height}" for width, height in SDXL_V1_SIZES)


SIZE_RULE = (
    f"The output size must be one of {_sizes()} (width x height), or, on a server started with "
    f"`--relaxed-sizes`, any multiple of {RELAXED_SIZE_STEP} from {RELAXED_SIZE_STEP} to {RELAXED_SIZE_MAX}."
)
IMAGE_FORMATS = "PNG, JPEG or WebP"

_FIELD_DESCRIPTIONS = {
    "text_prompts": "1 to 10 prompts. A negative weight makes a negative prompt; at least one prompt needs "
    "a non-empty text and one a weight above 0.",
    "cfg_scale": "How strictly the image follows the prompt.",
    "seed": "0 (or absent) picks a random seed, which the answer reports.",
    "sampler": "Absent: K_DPMPP_2M.",
    "extras": "Experimental options; unknown keys are ignored.",
    "height": f"Text-to-image only. {SIZE_RULE}",
    "width": f"Text-to-image only. {SIZE_RULE}",
    "init_image": f"Base64 of a {IMAGE_FORMATS} image; its size is the output size. {SIZE_RULE}",
    "init_image_mode": "IMAGE_STRENGTH uses `image_strength`; STEP_SCHEDULE uses `step_schedule_start` "
    "and `step_schedule_end`.",
    "image_strength": "Near 1 keeps the source, near 0 departs from it.",
    "step_schedule_end": "Below `step_schedule_start`.",
    "mask_source": "MASK_IMAGE_WHITE or MASK_IMAGE_BLACK need `mask_image`; INIT_IMAGE_ALPHA takes the "
    "mask from the transparent pixels of `init_image` and refuses `mask_image`.",
    "mask_image": "Base64 of an image the size of `init_image`; its grey level is the mask.",
}


def _describe(schema: Schema) -> Schema:
    for name, field in schema.get("properties", {}).items():
        if name in _FIELD_DESCRIPTIONS:
            field["description"] = _FIELD_DESCRIPTIONS[name]
        if name in ("init_image", "mask_image"):
            field["contentEncoding"] = "base64"
    return schema


def bedrock_body_schema() -> Schema:
    """InvokeModel's body for SDXL: one shape for the three modes, which the fields given choose."""
    schema = _describe(model_schema(_BedrockBody))
    schema["description"] = (
        "Stability's SDXL JSON. Without `init_image`: text-to-image (`height`, `width`). With it: "
        "image-to-image (`init_image_mode`, `image_strength`, `step_schedule_start`, `step_schedule_end`), "
        "masked when `mask_source` is given. A key the mode does not take is refused."
    )
    needs_init_image = ["init_image"]
    schema["dependentRequired"] = {
        "init_image_mode": needs_init_image,
        "image_strength": needs_init_image,
        "step_schedule_start": needs_init_image,
        "step_schedule_end": needs_init_image,
        "mask_source": needs_init_image,
        "mask_image": ["init_image", "mask_source"],
    }
    # The init image's size is the output size.
    schema["dependentSchemas"] = {"init_image": {"properties": {"height": False, "width": False}}}
    return schema


def stability_json_schema() -> Schema:
    schema = _describe(model_schema(_StabilityTextToImage))
    schema["description"] = "Stability v1 text-to-image: `steps` 10..150 (default 50), `samples` 1..10."
    return schema


FORM_PROMPT_KEYS = r"^text_prompts\[[0-9]{1,6}\]\[(text|weight)\]$"
_BINARY = {"type": "string", "format": "binary"}


def stability_form_schema(model: type[BaseModel], files: tuple[str, ...]) -> Schema:
    """A multipart form: the images as files, the prompts as `text_prompts[i][text]`/`[weight]` fields,
    every other field by name as text (`extras` as a JSON object written as text)."""
    fields = model_schema(model)
    properties: Schema = {name: {**_BINARY, "description": f"A {IMAGE_FORMATS} file."} for name in files}
    for name, field in fields["properties"].items():
        if name == "text_prompts":
            continue
        if name == "extras":
            field = {"type": "string", "contentMediaType": JSON, "description": _FIELD_DESCRIPTIONS[name]}
        properties[name] = field
    prompt = fields["properties"]["text_prompts"]["items"]["properties"]
    return {
        "type": "object",
        "description": "Prompts as `text_prompts[0][text]`, `text_prompts[0][weight]`, ... in the order of "
        "their index (1 to 10 of them); a repeated key keeps its last value. `steps` 10..150 (default 50), "
        "`samples` 1..10.",
        "properties": properties,
        "patternProperties": {FORM_PROMPT_KEYS: {"anyOf": [prompt["text"], prompt["weight"]]}},
        "additionalProperties": False,
        "required": [*files[:1], *(name for name in fields.get("required", ()) if name != "text_prompts")],
    }


def request_body(content: Mapping[str, Schema], encoding: Mapping[str, Any] | None = None) -> Schema:
    return {
        "requestBody": {
            "required": True,
            "content": {
                media_type: {"schema": schema, **({"encoding": encoding} if encoding else {})}
                for media_type, schema in content.items()
            },
        }
    }


def bedrock_request_body() -> Schema:
    return request_body({JSON: bedrock_body_schema()})


def stability_json_request_body() -> Schema:
    return request_body({JSON: stability_json_schema()})


def stability_form_request_body(*, masking: bool) -> Schema:
    files = ("init_image", "mask_image") if masking else ("init_image",)
    model = _StabilityMasking if masking else _StabilityImageToImage
    image_types = "image/png, image/jpeg, image/webp"
    return request_body(
        {MULTIPART: stability_form_schema(model, files)},
        encoding={name: {"contentType": image_types} for name in files},
    )


_REGEX_SPECIAL = re.compile(r"[\\^$.|?*+()\[\]{}]")


def regex_literal(text: str) -> str:
    """`text` as an ECMA-262 pattern (JSON schema's dialect): unlike `re.escape`, no identity escapes such as
    `\\-`, which a Unicode-mode ECMA regex refuses."""
    return _REGEX_SPECIAL.sub(lambda match: "\\" + match.group(), text)


# ---- path parameters --------------------------------------------------------------------------------------


# The same ARN as api/bedrock.py's FOUNDATION_MODEL_ARN, without Python's named group.
FOUNDATION_MODEL_ARN_PREFIX = "arn:aws(-cn|-us-gov|-iso|-iso-b)?:bedrock:[a-z0-9-]+::foundation-model/"


def model_id_schema(model_ids: Iterable[str]) -> Schema:
    """InvokeModel's `modelId`: the SDXL ids, or the foundation-model ARN of either (percent-encoded)."""
    ids = sorted(model_ids)
    id_pattern = "|".join(map(regex_literal, ids))
    return {
        "anyOf": [
            {"enum": ids},
            {"pattern": rf"^{FOUNDATION_MODEL_ARN_PREFIX}({id_pattern})$"},
        ],
        "description": "The model id or its foundation-model ARN, percent-encoded (an ARN's `/` as `%2F`). "
        "Any other id: 400 ValidationException.",
    }


def engine_id_schema(engine_ids: Iterable[str]) -> Schema:
    return {"enum": sorted(engine_ids), "description": "Any other engine: 404 not_found."}


# ---- responses ------------------------------------------------------------------------------------------


def _string_header(description: str, *, required: bool = True, **schema: Any) -> Schema:
    return {"description": description, "required": required, "schema": {"type": "string", **schema}}


# The middleware puts it on every response.
REQUEST_ID_HEADER = {
    "x-amzn-RequestId": _string_header("The request's id, also in the server's logs.", format="uuid")
}


ARTIFACT_SCHEMA: Schema = {
    "type": "object",
    "required": ["seed", "base64", "finishReason"],
    "properties": {
        "seed": {"type": "integer", "minimum": 0, "description": "Reproduces this image."},
        "base64": {"type": "string", "contentEncoding": "base64", "contentMediaType": PNG},
        "finishReason": {"enum": [reason.value for reason in FinishReason]},
    },
}
BEDROCK_RESULT_SCHEMA: Schema = {
    "type": "object",
    "required": ["result", "artifacts"],
    "properties": {
        "result": {"const": "success"},
        "artifacts": {"type": "array", "minItems": 1, "maxItems": 1, "items": ARTIFACT_SCHEMA},
    },
}
STABILITY_RESULT_SCHEMA: Schema = {
    "type": "object",
    "required": ["artifacts"],
    "properties": {"artifacts": {"type": "array", "minItems": 1, "maxItems": 10, "items": ARTIFACT_SCHEMA}},
}
ENGINES_SCHEMA: Schema = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["id", "name", "description", "type"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "type": {"type": "string", "description": "PICTURE for an image engine."},
        },
    },
}
BEDROCK_ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
    "additionalProperties": False,
}
STABILITY_ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["id", "name", "message"],
    "properties": {
        "id": {"type": "string", "description": "The request id (x-amzn-RequestId without its dashes)."},
        "name": {"type": "string"},
        "message": {"type": "string"},
    },
    "additionalProperties": False,
}


def _by_status(pairs: Iterable[tuple[int, str]]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for status, name in pairs:
        if name not in grouped.setdefault(status, []):
            grouped[status].append(name)
    return dict(sorted(grouped.items()))


def bedrock_error_responses(error_classes: ErrorClasses, *, default: bool = False) -> dict[int | str, Any]:
    """One response per status the classes map to, naming the codes `x-amzn-ErrorType` carries there.

    `default` adds the same shape for any other status: FastAPI documents a 422 on every route with a path
    parameter unless a `default` response is documented, and this server never answers 422.
    """
    codes = _by_status((ERRORS[cls].bedrock.status, ERRORS[cls].bedrock.code) for cls in error_classes)
    responses: dict[int | str, Any] = {
        status: _bedrock_error_response(names, f"Bedrock error: {', '.join(names)}.")
        for status, names in codes.items()
    }
    if default:
        every_code = sorted({shape.bedrock.code for shape in ERRORS.values()})
        responses["default"] = _bedrock_error_response(
            every_code,
            "Bedrock error; this operation sends no other status. An unknown route, or a method a route does "
            "not take, answers 404 ResourceNotFoundException in this shape.",
        )
    return responses


def _bedrock_error_response(codes: list[str], description: str) -> Schema:
    names = "|".join(codes)
    error_type = _string_header(
        "The error code, which botocore raises as ClientError's code.",
        pattern=f"^({names}):{regex_literal(BEDROCK_ERROR_NAMESPACE)}$",
    )
    return {
        "description": description,
        "headers": {"x-amzn-ErrorType": error_type, **REQUEST_ID_HEADER},
        "content": {JSON: {"schema": BEDROCK_ERROR_SCHEMA}},
    }


def stability_error_responses(error_classes: ErrorClasses, *, default: bool = False) -> dict[int | str, Any]:
    """Stability's `{"id", "name", "message"}`; a 400's name is finer than the table's (`invalid_samples`,
    `invalid_sdxl_v1_dimensions`, `invalid_image_dimensions`, `invalid_mask_image`, ...)."""
    names = _by_status((ERRORS[cls].stability.status, ERRORS[cls].stability.name) for cls in error_classes)
    responses: dict[int | str, Any] = {
        status: _stability_error_response(f"Stability error: {', '.join(found)}.")
        for status, found in names.items()
    }
    if default:
        responses["default"] = _stability_error_response(
            "Stability error; this operation sends no other status."
        )
    return responses


def _stability_error_response(description: str) -> Schema:
    return {
        "description": description,
        "headers": REQUEST_ID_HEADER,
        "content": {JSON: {"schema": STABILITY_ERROR_SCHEMA}},
    }


def invoke_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The model's JSON: one artifact.",
            "headers": {
                **REQUEST_ID_HEADER,
                "X-Amzn-Bedrock-Invocation-Latency": _string_header(
                    "Milliseconds from the request to the answer.", pattern="^[0-9]+$"
                ),
            },
            "content": {JSON: {"schema": BEDROCK_RESULT_SCHEMA}},
        },
        **bedrock_error_responses(GENERATION_ERRORS, default=True),
    }


def stream_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": 'An AWS event stream: one `chunk` event whose payload `{"bytes": ...}` holds '
            "the base64 of InvokeModel's JSON (with `extras.progress`, progress chunks first). An error "
            "after the 200 is an exception frame (`:message-type exception`).",
            "headers": {
                **REQUEST_ID_HEADER,
                "X-Amzn-Bedrock-Content-Type": _string_header(
                    "The content type of the chunks' bytes.", enum=[JSON]
                ),
            },
            "content": {EVENT_STREAM: {"schema": _BINARY}},
        },
        **bedrock_error_responses(GENERATION_ERRORS, default=True),
    }


def stability_generation_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "`Accept: application/json` (the default): the artifacts. `Accept: image/png`: "
            "the image itself, with `Finish-Reason` and `Seed` headers (one sample only).",
            "headers": {
                **REQUEST_ID_HEADER,
                "Finish-Reason": _string_header(
                    "With image/png.", required=False, enum=[reason.value for reason in FinishReason]
                ),
                "Seed": _string_header("With image/png.", required=False, pattern="^[0-9]+$"),
            },
            "content": {JSON: {"schema": STABILITY_RESULT_SCHEMA}, PNG: {"schema": _BINARY}},
        },
        **stability_error_responses(STABILITY_GENERATION_ERRORS, default=True),
    }


def engines_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The engines this server runs.",
            "headers": REQUEST_ID_HEADER,
            "content": {JSON: {"schema": ENGINES_SCHEMA}},
        },
        **stability_error_responses(STABILITY_ENGINES_ERRORS),
    }


def ping_responses() -> dict[int | str, Any]:
    healthy = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "Healthy"}},
        "additionalProperties": False,
    }
    return {
        200: {
            "description": "The model is loaded.",
            "headers": REQUEST_ID_HEADER,
            "content": {JSON: {"schema": healthy}},
        },
        **bedrock_error_responses(PING_ERRORS),
    }


def metrics_responses(media_type: str) -> dict[int | str, Any]:
    return {
        200: {
            "description": "Prometheus' text exposition format.",
            "headers": REQUEST_ID_HEADER,
            "content": {media_type.split(";", 1)[0]: {"schema": {"type": "string"}}},
        },
        **bedrock_error_responses(ANY_ROUTE_ERRORS),
    }


def playground_page_responses() -> dict[int | str, Any]:
    """GET /: the playground's HTML page (api/playground.py)."""
    return {
        200: {
            "description": "The playground: a page that drives the response stream from a browser.",
            "headers": REQUEST_ID_HEADER,
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **bedrock_error_responses(ANY_ROUTE_ERRORS),
    }
