"""The playground: a page at GET / that drives the response-stream endpoint from a browser.

The page and its assets ship inside the package (`sdxl_bedrock/playground/`) and name nothing outside this
server, so it works offline; the Content-Security-Policy holds it to that (only 'self', plus data: and blob:
images for the uploaded, preview and result pictures).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.responses import JSONResponse, Response

from sdxl_bedrock.api.bedrock.errors import error_docs
from sdxl_bedrock.api.bedrock.routes import MODEL_NAME
from sdxl_bedrock.api.checkpoints import checkpoint_named
from sdxl_bedrock.api.deps import RuntimeDep
from sdxl_bedrock.api.openapi import ANY_ROUTE_ERRORS, REQUEST_ID_HEADER
from sdxl_bedrock.api.stability.fields import (
    CLIP_GUIDANCE_PRESET_NAMES,
    INIT_IMAGE_MODES,
    MASK_SOURCES,
    GenerationFields,
    InitImageModeFields,
)
from sdxl_bedrock.api.validation import RELAXED_SIZE_MAX, RELAXED_SIZE_STEP, SDXL_V1_SIZES
from sdxl_bedrock.config import Settings
from sdxl_bedrock.presets import DEFAULT_SAMPLER_NAME, SAMPLER_NAMES, STYLE_PRESETS
from sdxl_bedrock.runtime import Runtime

ASSET_MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The assets change with the package; a browser should ask again rather than run a stale app.js.
    "Cache-Control": "no-cache",
}

# The page is documented; its assets and options are the page's own business.
router = APIRouter(include_in_schema=False)
page_router = APIRouter()


@cache
def asset(name: str) -> bytes:
    return (resources.files("sdxl_bedrock") / "playground" / name).read_bytes()


def asset_response(name: str) -> Response:
    return Response(asset(name), media_type=ASSET_MEDIA_TYPES[name], headers=SECURITY_HEADERS)


def page_responses() -> dict[int | str, Any]:
    return {
        200: {
            "description": "The playground: a page that drives the response stream from a browser.",
            "headers": REQUEST_ID_HEADER,
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **error_docs(ANY_ROUTE_ERRORS),
    }


@page_router.get("/", summary="The playground page", response_class=Response, responses=page_responses())
async def playground_page() -> Response:
    return asset_response("index.html")


# The image-to-image window's fields, whose defaults the page needs to explain a window.
WINDOW_FIELDS = ("image_strength", "step_schedule_start", "step_schedule_end")


def page_options(settings: Settings) -> dict[str, Any]:
    """What the page offers, from the validator's own tables and this server's settings, so that the page
    never drifts from what the server takes:

    - `sampler`, `style_preset`, `clip_guidance_preset`, `init_image_mode`, `mask_source`: the allowed names;
      `default_sampler`;
    - `clip_guidance`: whether the server has a CLIP model (without one, every preset but NONE is refused);
    - `sizes`: `relaxed` (`--relaxed-sizes`: any multiple of `step` px from `step` to `max`; else only the
      `sdxl` sizes, [width, height] pairs);
    - `defaults`: what the server uses for `steps`, `image_strength`, `step_schedule_start` and
      `step_schedule_end` when the body leaves them out;
    - `lora_library`: whether the server has LoRA folders (`--lora-dir`), so that an empty adapter list can
      say whether to add the flag or a file; `max_loras_per_request`: how many adapters a request may name.
    """
    image_fields = InitImageModeFields.model_fields
    return {
        "sampler": list(SAMPLER_NAMES),
        "default_sampler": DEFAULT_SAMPLER_NAME,
        "style_preset": list(STYLE_PRESETS),
        "clip_guidance_preset": list(CLIP_GUIDANCE_PRESET_NAMES),
        "clip_guidance": settings.clip_model is not None,
        "init_image_mode": list(INIT_IMAGE_MODES),
        "mask_source": list(MASK_SOURCES),
        "sizes": {
            "relaxed": settings.relaxed_sizes,
            "step": RELAXED_SIZE_STEP,
            "max": RELAXED_SIZE_MAX,
            "sdxl": [list(size) for size in SDXL_V1_SIZES],
        },
        "defaults": {
            "steps": GenerationFields.model_fields["steps"].default,
            **{name: image_fields[name].default for name in WINDOW_FIELDS},
        },
        "lora_library": bool(settings.lora_dirs),
        "max_loras_per_request": settings.max_loras_per_request,
    }


def page_models(runtime: Runtime) -> list[dict[str, Any]]:
    """The model chooser's entries: what a Bedrock request (the page's wire) can name, each as
    `{"model_id", "checkpoint", "default"}`, in this order:

    - SDXL's model id, on the default checkpoint;
    - each `--model-alias`, on its checkpoint (`checkpoint` None: it has left the library since the
      server started, and the server refuses the alias);
    - each other checkpoint of the library with no alias: `model_id` None, since a Bedrock request can only
      reach a checkpoint other than the default through an alias (the page shows it, disabled, with how to
      add one).

    Read from the listing as it is now (before the model has loaded, only the default is known)."""
    listing = runtime.library.listing
    aliases = runtime.settings.model_aliases
    models: list[dict[str, Any]] = [{"model_id": MODEL_NAME, "checkpoint": listing.default, "default": True}]
    aliased = set()
    for alias in aliases:
        checkpoint = checkpoint_named(runtime, alias)
        aliased.add(checkpoint)
        models.append({"model_id": alias, "checkpoint": checkpoint, "default": False})
    for name in listing.checkpoints:
        if name != listing.default and name not in aliased:
            models.append({"model_id": None, "checkpoint": name, "default": False})
    return models


def page_loras(runtime: Runtime) -> list[dict[str, Any]]:
    """The adapters a request may name in `extras.loras`, each as `{"name", "alias", "parts", "rank"}`, in
    the listing's order; refused files are left out (the server's log names them). Read from the listing
    as it is now: before the model has loaded, the library has not been read and the list is empty."""
    return [
        {"name": lora.name, "alias": lora.alias, "parts": list(lora.parts), "rank": lora.rank}
        for lora in runtime.loras.listing.loras.values()
    ]


@router.get("/playground/options.json")
async def playground_options(runtime: RuntimeDep) -> Response:
    options = {**page_options(runtime.settings), "models": page_models(runtime), "loras": page_loras(runtime)}
    return JSONResponse(options, headers=SECURITY_HEADERS)


@router.get("/playground/{name}")
async def playground_asset(name: str) -> Response:
    if name not in ASSET_MEDIA_TYPES:
        raise HTTPException(status_code=404)  # the app's handler answers in Bedrock's shape
    return asset_response(name)
