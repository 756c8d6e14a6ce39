"""Stability v1's answers as pydantic models, which both serialize them and document them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, RootModel

from sdxl_bedrock.codecs import png_to_base64
from sdxl_bedrock.schema import Artifact, FinishReason

ENGINE_ID = "stable-diffusion-xl-1024-v1-0"


class StabilityArtifact(BaseModel):
    base64: Annotated[
        str, Field(json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/png"})
    ]
    seed: Annotated[int, Field(ge=0, description="Reproduces this image.")]
    finishReason: FinishReason


class StabilityArtifacts(BaseModel):
    """`Accept: application/json`: one artifact per sample."""

    artifacts: Annotated[list[StabilityArtifact], Field(min_length=1, max_length=10)]


class StabilityEngine(BaseModel):
    id: str
    name: str
    description: str
    type: Annotated[str, Field(description="PICTURE for an image engine.")]


class StabilityEngines(RootModel[list[StabilityEngine]]):
    """The engines this server runs."""


ENGINES = StabilityEngines(
    [
        StabilityEngine(
            id=ENGINE_ID,
            name="Stable Diffusion XL v1.0",
            description="Stability-AI Stable Diffusion XL v1.0",
            type="PICTURE",
        )
    ]
)


def artifacts_body(artifacts: list[Artifact]) -> bytes:
    """The JSON answer: `{"artifacts": [{"base64", "seed", "finishReason"}, ...]}`."""
    body = StabilityArtifacts(
        artifacts=[
            StabilityArtifact(base64=png_to_base64(a.png), seed=a.seed, finishReason=a.finish_reason)
            for a in artifacts
        ]
    )
    return body.model_dump_json().encode()
