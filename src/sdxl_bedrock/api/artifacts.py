"""The model's JSON answer, shared by InvokeModel and the response stream."""

from __future__ import annotations

import json

from sdxl_bedrock.codecs import png_to_base64
from sdxl_bedrock.schema import Artifact


def artifacts_json(artifacts: list[Artifact]) -> bytes:
    """The body SDXL on Bedrock returns: `{"result": "success", "artifacts": [...]}`."""
    return json.dumps(
        {
            "result": "success",
            "artifacts": [
                {"seed": a.seed, "base64": png_to_base64(a.png), "finishReason": a.finish_reason.value}
                for a in artifacts
            ],
        }
    ).encode()
