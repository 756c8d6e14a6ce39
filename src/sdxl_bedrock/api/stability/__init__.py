"""Stability's REST v1 API (`/v1/generation/...`, `/v1/engines/list`), as one wire over the shared engine."""

from __future__ import annotations

from sdxl_bedrock.api import Wire
from sdxl_bedrock.api.stability.errors import error_response
from sdxl_bedrock.api.stability.routes import router

# Unknown /v1/ paths are answered in Stability's shape, as Stability's own API does.
wire = Wire("stability", router, error_response, claimed_paths=("/v1/",))
