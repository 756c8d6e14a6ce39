"""InvokeModel's answer for SDXL as a pydantic model, which both serializes it and documents it; the
response stream's `chunk` events carry the same JSON."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from sdxl_bedrock.codecs import png_to_base64
from sdxl_bedrock.schema import Artifact, FinishReason


class BedrockArtifact(BaseModel):
    seed: Annotated[int, Field(ge=0, description="Reproduces this image.")]
    base64: Annotated[
        str, Field(json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/png"})
    ]
    finishReason: FinishReason


class InvokeModelResult(BaseModel):
    """The model's JSON: one artifact."""

    result: Literal["success"]
    artifacts: Annotated[list[BedrockArtifact], Field(min_length=1, max_length=1)]


def artifacts_json(artifacts: list[Artifact]) -> bytes:
    """The body SDXL on Bedrock returns: `{"result": "success", "artifacts": [{"seed", "base64",
    "finishReason"}]}`."""
    body = InvokeModelResult(
        result="success",
        artifacts=[
            BedrockArtifact(seed=a.seed, base64=png_to_base64(a.png), finishReason=a.finish_reason)
            for a in artifacts
        ],
    )
    return body.model_dump_json().encode()
