"""InvokeModel's body for stability.stable-diffusion-xl-v1 -> GenerationRequest.

The body is Stability's SDXL JSON (api/stability/fields.py) in one shape for the three modes; the fields
given choose the mode: without `init_image`, text-to-image (`height`, `width`); with it, image-to-image
(`init_image_mode`, `image_strength`, `step_schedule_start`, `step_schedule_end`), masked when
`mask_source` is given. Images arrive as base64. Cheap checks run before any image is decoded.

Our rules where Bedrock is silent:
- The init image's size decides the output size. `height`/`width` given with `init_image` must equal the
  image's own height and width (clients that send the size with every request, as a popular agent
  framework's SDXL driver does, keep working); a different number is an error naming both.
  Image-to-image keys without `init_image` are an error ("required key [init_image] not found").
- A masked request without `image_strength` (and not in STEP_SCHEDULE mode) regenerates the masked
  region from pure noise, as Stability's masking endpoint does: the image-to-image default strength
  (0.35) would keep a third of the source inside the mask. An explicit `image_strength` or step
  schedule is honoured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from PIL import Image
from pydantic import Field

from sdxl_bedrock.api.stability.fields import (
    INIT_IMAGE_DESCRIPTION,
    MASK_IMAGE_DESCRIPTION,
    GenerationFields,
    InitImageModeFields,
    MaskSourceField,
    RandomSeed,
    SizeFields,
    check_mask_keys,
    denoise_range,
    generation_request,
    mask_of,
    split_prompts,
)
from sdxl_bedrock.api.validation import (
    check_dimensions,
    decode_base64_field,
    load_json_object,
    malformed,
    validate,
)
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.schema import GenerationRequest
from sdxl_bedrock.strength import FULL_SCHEDULE, DenoiseWindow

IMAGE_TO_IMAGE_KEYS = (
    "init_image_mode",
    "image_strength",
    "step_schedule_start",
    "step_schedule_end",
    "mask_source",
    "mask_image",
)
BASE64: dict[str, Any] = {"contentEncoding": "base64"}


class InvokeModelBody(MaskSourceField, InitImageModeFields, SizeFields, GenerationFields):
    """One shape for the three modes: the fields given choose the mode. Images arrive as base64."""

    init_image: Annotated[
        str | None, Field(description=f"Base64 of {INIT_IMAGE_DESCRIPTION}", json_schema_extra=BASE64)
    ] = None
    mask_image: Annotated[
        str | None, Field(description=f"Base64 of {MASK_IMAGE_DESCRIPTION}", json_schema_extra=BASE64)
    ] = None


@dataclass(frozen=True)
class Invocation:
    """A validated body: the request, and `extras` as sent (the response stream reads its progress keys)."""

    request: GenerationRequest
    extras: dict[str, Any]


def parse_invoke_body(
    raw: bytes, *, relaxed_sizes: bool = False, random_seed: RandomSeed | None = None
) -> Invocation:
    """Validate an InvokeModel body for SDXL 1.0 and resolve it into one GenerationRequest.

    `relaxed_sizes` accepts any multiple of 64 from 64 to 2048 instead of the nine SDXL sizes.
    `random_seed` picks the seed when the body asks for a random one (seed 0 or none).
    Raises MalformedBody naming the field.
    """
    body = validate(InvokeModelBody, load_json_object(raw))
    given = body.model_fields_set
    check_mode_keys(given)
    check_mask_keys(body.mask_source, mask_image_given="mask_image" in given)
    prompts = split_prompts(body.text_prompts)
    if body.init_image is None:
        check_dimensions(body.width, body.height, relaxed=relaxed_sizes)
        request = generation_request(body, prompts, body.width, body.height, random_seed=random_seed)
        return Invocation(request, body.extras)
    denoise = masked_denoise_range(body) if body.mask_source is not None else denoise_range(body)
    init_image = decode_base64_field(body.init_image, ("init_image",), error_name="invalid_image")
    check_dimensions(*init_image.size, relaxed=relaxed_sizes, field="init_image")
    check_size_matches(body, init_image)
    mask_image = (
        decode_base64_field(body.mask_image, ("mask_image",), error_name="invalid_mask_image")
        if body.mask_image is not None
        else None
    )
    request = generation_request(
        body,
        prompts,
        *init_image.size,
        denoise=denoise,
        init_image=init_image,
        mask=mask_of(body.mask_source, init_image, mask_image),
        random_seed=random_seed,
    )
    return Invocation(request, body.extras)


def check_mode_keys(given: set[str]) -> None:
    """Bedrock's body chooses its mode by its fields: image-to-image keys need `init_image`."""
    if "init_image" not in given:
        for key in IMAGE_TO_IMAGE_KEYS:
            if key in given:
                raise malformed(
                    (),
                    "required key [init_image] not found",
                    kind=ProblemKind.REQUIRED_KEY,
                    value="init_image",
                )


def masked_denoise_range(body: InvokeModelBody) -> DenoiseWindow:
    """A masked request's window: all of the schedule, unless `image_strength` or STEP_SCHEDULE says
    otherwise."""
    if body.init_image_mode == "IMAGE_STRENGTH" and "image_strength" not in body.model_fields_set:
        return FULL_SCHEDULE
    return denoise_range(body)


def check_size_matches(body: InvokeModelBody, init_image: Image.Image) -> None:
    """`height`/`width` sent with an init image must be its own: the image's size is the output size."""
    for key, image_side in (("height", init_image.height), ("width", init_image.width)):
        side: int = getattr(body, key)
        if key in body.model_fields_set and side != image_side:
            raise malformed(
                (key,),
                f"{side} does not match init_image's {key} {image_side}",
                kind=ProblemKind.INVALID,
                value=side,
            )
