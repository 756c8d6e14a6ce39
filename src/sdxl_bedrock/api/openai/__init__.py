"""The OpenAI Images API (`/v1/images/generations`, `/edits`, `/variations`, `/v1/models`), as one wire over
the shared engine: software written for OpenAI's images endpoint (chat front-ends, agent frameworks,
LiteLLM's proxy) runs SDXL here unchanged but for its base URL and model id."""

from __future__ import annotations

from sdxl_bedrock.api import Wire
from sdxl_bedrock.api.openai.errors import error_response
from sdxl_bedrock.api.openai.routes import router

# Longer than the Stability wire's `/v1/`: unknown paths under these get OpenAI's shape.
wire = Wire("openai", router, error_response, claimed_paths=("/v1/images", "/v1/models"))
