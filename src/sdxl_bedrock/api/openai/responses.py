"""The OpenAI Images API's answers as pydantic models, which both serialize them and document them; and the
images themselves in the format the request asked for."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from sdxl_bedrock.api.openai.bodies import Output
from sdxl_bedrock.api.openai.mapping import (
    MODEL_CREATED,
    MODEL_ID,
    MODEL_OWNER,
    OutputFormat,
    ReportedQuality,
)
from sdxl_bedrock.codecs import reencoded


class ImageData(BaseModel):
    b64_json: Annotated[
        str | None, Field(description="The image, base64-encoded (response_format b64_json).")
    ] = None
    url: Annotated[
        str | None, Field(description="Where this server serves the image for an hour (response_format url).")
    ] = None
    revised_prompt: Annotated[
        str | None, Field(description="The prompt as a `style` rewrote it; absent without a style.")
    ] = None
    seed: Annotated[int, Field(ge=1, description="Ours: the seed that reproduces this image.")]


class ImagesResponse(BaseModel):
    """One entry of `data` per image, in the order of their seeds."""

    created: Annotated[int, Field(description="Unix time, seconds.")]
    data: Annotated[list[ImageData], Field(min_length=1, max_length=10)]
    background: Literal["opaque"]
    output_format: OutputFormat
    quality: Annotated[ReportedQuality | None, Field(description="Absent for variations.")] = None
    size: Annotated[str, Field(pattern="^[0-9]+x[0-9]+$", description="WIDTHxHEIGHT.")]


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The models this server serves."""

    object: Literal["list"] = "list"
    data: list[Model]


MODEL = Model(id=MODEL_ID, created=MODEL_CREATED, owned_by=MODEL_OWNER)
MODELS = ModelList(data=[MODEL])


def encoded(png: bytes, output: Output) -> bytes:
    """A PNG artifact in `output`'s format: the PNG itself, or JPEG / WebP at its quality."""
    return reencoded(png, output.output_format, quality=output.compression)
