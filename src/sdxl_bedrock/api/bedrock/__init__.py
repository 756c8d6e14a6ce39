"""Amazon Bedrock Runtime's InvokeModel and InvokeModelWithResponseStream for
stability.stable-diffusion-xl-v1, as one wire over the shared engine. The body is Stability's SDXL JSON
(api/stability/fields.py). Converse, ConverseStream, CountTokens and StartAsyncInvoke are answered with
Bedrock's refusal for a model that does not take them."""

from __future__ import annotations

from sdxl_bedrock.api import Wire
from sdxl_bedrock.api.bedrock.errors import error_response
from sdxl_bedrock.api.bedrock.routes import router

wire = Wire("bedrock", router, error_response, claimed_paths=("/model/", "/async-invoke"))
