"""The OpenAI Images API's answers as pydantic models, which both serialize them and document them; and the
images themselves in the format the request asked for."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from sdxl_bedrock.api.openai.bodies import Output
from sdxl_bedrock.api.openai.mapping import (
    MODEL_CREATED,
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
    """One entry of `data` per image, in the order of their seeds. DALL·E's answers carry only `created` and
    `data`, as OpenAI's do."""

    created: Annotated[int, Field(description="Unix time, seconds.")]
    data: Annotated[list[ImageData], Field(min_length=1, max_length=160)]
    background: Annotated[Literal["opaque"] | None, Field(description="Absent for DALL·E.")] = None
    output_format: Annotated[OutputFormat | None, Field(description="Absent for DALL·E.")] = None
    quality: Annotated[ReportedQuality | None, Field(description="Absent for variations and DALL·E.")] = None
    size: Annotated[
        str | None, Field(pattern="^[0-9]+x[0-9]+$", description="WIDTHxHEIGHT; absent for DALL·E.")
    ] = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The models this server serves."""

    object: Literal["list"] = "list"
    data: list[Model]


def model_list(names: list[str]) -> ModelList:
    """The ids this wire takes, each served by the one checkpoint."""
    return ModelList(data=[model_of(name) for name in names])


def model_of(name: str) -> Model:
    return Model(id=name, created=MODEL_CREATED, owned_by=MODEL_OWNER)


def encoded(png: bytes, output: Output) -> bytes:
    """A PNG artifact in `output`'s format (the PNG itself, or JPEG / WebP at its quality), resized
    (Lanczos) to the size asked for where it was made at another."""
    return reencoded(png, output.output_format, quality=output.compression, size=output.resize_to)
