"""Which checkpoint of the model library an HTTP request names, read from its path and body without running
its wire: what `serve --ray` routes on (serve/ray_serve.py), so that a request reaches a replica that holds
its checkpoint already. This is the one place that maps a request to a checkpoint outside the wires, and
it asks each wire's own resolution (Bedrock's `resolve_model_id`, Stability's `checkpoint_of`, OpenAI's
`ModelNames`, A1111's `Listing.find(closest=True)`), so a name means here what it means there.

It answers None where the request names no checkpoint it can tell: not a generation, a name the wire will
refuse (its error comes from whichever replica answers), a body that does not parse, or an A1111 request
without `override_settings`, which is served on that replica's own `sd_model_checkpoint` option.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import Message, Scope

from sdxl_bedrock.api.bedrock.routes import MODEL_ROUTE, resolve_model_id
from sdxl_bedrock.api.openai.bodies import ModelNames
from sdxl_bedrock.api.stability.routes import checkpoint_of
from sdxl_bedrock.errors import ServiceError
from sdxl_bedrock.library import UnknownCheckpoint
from sdxl_bedrock.runtime import Runtime

OPENAI_IMAGES = ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations")
A1111_IMAGES = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")


async def checkpoint_of_request(runtime: Runtime, scope: Scope, body: bytes) -> str | None:
    """The library name of the checkpoint the request `scope` with `body` is served on, or None (above)."""
    path: str = scope["path"]
    try:
        if path.startswith("/model/"):
            # The raw path, as Bedrock's router reads it: an ARN's %2F stays inside the id.
            raw = (scope.get("raw_path") or path.encode()).decode("latin-1").split("?", 1)[0]
            match = MODEL_ROUTE.match(raw)
            if match is None:
                return None
            target = resolve_model_id(runtime, unquote(match.group("model")))[1]
            return target.checkpoint if target is not None else runtime.library.listing.default
        if path.startswith("/v1/generation/"):
            engine_id = path.split("/")[3]
            return checkpoint_of(engine_id, runtime) or runtime.library.listing.default
        if path in OPENAI_IMAGES:
            model = await form_field(scope, body, "model")
            return ModelNames.of(runtime.settings, runtime.library.listing).checkpoint_of(model)
        if path in A1111_IMAGES:
            overrides = json_object(body).get("override_settings")
            named = overrides.get("sd_model_checkpoint") if isinstance(overrides, dict) else None
            return None if named is None else runtime.library.listing.find(named, closest=True).name
    # The wires' own refusals (NotFound, AccessDenied, an unknown name) and bodies that do not parse:
    # the wire answers them on whichever replica gets them.
    except (ServiceError, UnknownCheckpoint, ValueError, TypeError):
        return None
    return None


def json_object(body: bytes) -> dict[str, Any]:
    document = json.loads(body)
    return document if isinstance(document, dict) else {}


async def form_field(scope: Scope, body: bytes, name: str) -> object:
    """`name` of a JSON body or of a multipart/urlencoded form (OpenAI's edits and variations)."""
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    if "json" in content_type or not content_type:
        return json_object(body).get(name)

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request({**scope, "type": "http"}, receive).form()
    except Exception:  # a malformed form: the wire says so, in its own shape
        return None
    try:
        value = form.get(name)
        return value if isinstance(value, str) else None
    finally:
        await form.close()
