"""What every wire's OpenAPI description shares, so that /openapi.json is built from the code it describes.

Responses are documented by the wires' pydantic response models (FastAPI turns them into schemas), error
responses from each wire's error table, request bodies from the validators' own pydantic models
(`model_schema`: the handlers read their bodies themselves, so FastAPI does not see them). What a JSON
schema cannot say is said in the descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from sdxl_bedrock import errors

Schema = dict[str, Any]

JSON = "application/json"
BINARY: Schema = {"type": "string", "format": "binary"}

# ---- the errors each kind of route can answer, as classes of sdxl_bedrock.errors ---------------------------

# Every route: a Host or an Origin the server does not answer (api/guards.py); a bug is an internal error.
ANY_ROUTE_ERRORS: tuple[type[errors.ServiceError], ...] = (errors.Forbidden, errors.ServiceError)
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
PING_ERRORS: tuple[type[errors.ServiceError], ...] = (errors.ModelNotReady, *ANY_ROUTE_ERRORS)


def by_status(pairs: Iterable[tuple[int, str]]) -> dict[int, list[str]]:
    """(status, name) pairs grouped by status, in status order, each name once."""
    grouped: dict[int, list[str]] = {}
    for status, name in pairs:
        if name not in grouped.setdefault(status, []):
            grouped[status].append(name)
    return dict(sorted(grouped.items()))


# ---- request bodies from pydantic models -------------------------------------------------------------------


def model_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON schema as one self-contained object, ready to sit inside an OpenAPI operation.

    pydantic's `$defs` are inlined (a `#/$defs/...` pointer would resolve against the OpenAPI document, not
    this schema), its generated titles dropped, and the `null` it allows for "absent" fields removed: our
    validators refuse `null` for every field ("null is never an absent field").
    """
    raw = model.model_json_schema()
    definitions: dict[str, Schema] = raw.pop("$defs", {})
    raw.pop("description", None)  # the model's docstring speaks of our code, not of the wire
    cleaned: Schema = _clean(raw, definitions)
    return cleaned


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


def request_body(content: Mapping[str, Schema], encoding: Mapping[str, Any] | None = None) -> Schema:
    """An operation's `requestBody` (for `openapi_extra`), required, one schema per media type."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                media_type: {"schema": schema, **({"encoding": encoding} if encoding else {})}
                for media_type, schema in content.items()
            },
        }
    }


_REGEX_SPECIAL = re.compile(r"[\\^$.|?*+()\[\]{}]")


def regex_literal(text: str) -> str:
    """`text` as an ECMA-262 pattern (JSON schema's dialect): unlike `re.escape`, no identity escapes such as
    `\\-`, which a Unicode-mode ECMA regex refuses."""
    return _REGEX_SPECIAL.sub(lambda match: "\\" + match.group(), text)


# ---- headers ---------------------------------------------------------------------------------------------


def string_header(description: str, *, required: bool = True, **schema: Any) -> Schema:
    return {"description": description, "required": required, "schema": {"type": "string", **schema}}


# The request middleware puts it on every response.
REQUEST_ID_HEADER = {
    "x-amzn-RequestId": string_header("The request's id, also in the server's logs.", format="uuid")
}
