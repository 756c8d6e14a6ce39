"""The AUTOMATIC1111 web UI API (`/sdapi/v1/...`), as one wire over the shared engine (docs/API.md)."""

from __future__ import annotations

from sdxl_bedrock.api import Wire
from sdxl_bedrock.api.a1111.errors import error_response
from sdxl_bedrock.api.a1111.routes import router

# Unknown /sdapi/ paths are answered in A1111's (FastAPI's) shape.
wire = Wire("a1111", router, error_response, claimed_paths=("/sdapi/",))
