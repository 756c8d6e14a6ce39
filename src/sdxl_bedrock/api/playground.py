"""The playground: a page at GET / that drives the response-stream endpoint from a browser.

The page and its assets ship inside the package (`sdxl_bedrock/playground/`) and name nothing outside this
server, so it works offline; the Content-Security-Policy holds it to that (only 'self', plus data: and blob:
images for the uploaded, preview and result pictures).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import get_args

from fastapi import APIRouter, HTTPException
from starlette.responses import JSONResponse, Response

from sdxl_bedrock.api.openapi import playground_page_responses
from sdxl_bedrock.schema import DEFAULT_SAMPLER, Sampler
from sdxl_bedrock.validation import (
    SDXL_V1_SIZES,
    STYLE_PRESETS,
    ClipGuidancePreset,
    InitImageMode,
    MaskSource,
)

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


@page_router.get(
    "/", summary="The playground page", response_class=Response, responses=playground_page_responses()
)
async def playground_page() -> Response:
    return asset_response("index.html")


@router.get("/playground/options.json")
async def playground_options() -> Response:
    """The allowed values of the enum fields, from the validator itself, so the page never drifts from it."""
    return JSONResponse(
        {
            "sampler": [sampler.value for sampler in Sampler],
            "default_sampler": DEFAULT_SAMPLER.value,
            "style_preset": list(STYLE_PRESETS),
            "clip_guidance_preset": list(get_args(ClipGuidancePreset)),
            "init_image_mode": list(get_args(InitImageMode)),
            "mask_source": list(get_args(MaskSource)),
            "sdxl_sizes": [list(size) for size in SDXL_V1_SIZES],
        },
        headers=SECURITY_HEADERS,
    )


@router.get("/playground/{name}")
async def playground_asset(name: str) -> Response:
    if name not in ASSET_MEDIA_TYPES:
        raise HTTPException(status_code=404)  # the app's handler answers in Bedrock's shape
    return asset_response(name)
