"""Bedrock's current Stability image models, answered by the server's SDXL checkpoint: one body family for
SD3.5 Large (and SD3 Large before it), Stable Image Core and Ultra, and the Image Services an SDXL
checkpoint can honestly do (inpaint, outpaint, erase object). The answer is `{"seeds", "finish_reasons",
"images"}`. Served only with `--stability-image-models` (always in sdxl_bedrock.testing).

The fields carry Bedrock's names, enumerations, limits and defaults, from its pages for each model:
- SD3.5 Large: https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-3-5-large.html
- Stable Image Core: https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-image-core-text-image-request-response.html
- Stable Image Ultra: https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-diffusion-stable-ultra-text-image-request-response.html
- inpaint, outpaint, erase: https://docs.aws.amazon.com/bedrock/latest/userguide/stable-image-services.html
Where a page is silent, Stability's API reference (https://platform.stability.ai/docs/api-reference) fills
in; where the two differ, Bedrock's page wins: Core's and Ultra's seeds go to 4294967295 and their
`output_format` is jpeg or png, Ultra's `strength` defaults to 0.35. The pixels come from SDXL, not from
SD3.5 or Stability's hosted models (docs/COMPATIBILITY.md, which also lists what no page settles).

Our rules where Bedrock is silent or where SDXL needs one:
- `aspect_ratio` picks the SDXL size nearest to it (`16:9` is 1344x768); it is ignored with an image, whose
  own proportions decide.
- An input image of a size the server does not generate at (SDXL's nine, or any multiple of 64 with
  `--relaxed-sizes`) is resized to the nearest SDXL size for the model and the answer resized back: every
  answer has the input image's size (outpaint: the input grown by `left`, `right`, `up`, `down`).
- SD3.5 without `mode` is image-to-image when the body has an `image`: Bedrock's own image-to-image example
  sends `image` and `strength` alone.
- `strength` (image-to-image, 0 keeps the image, 1 ignores it) is the fraction of the noise schedule that
  is run, as OpenAI's `strength` and A1111's `denoising_strength`; outpaint's `creativity` is that fraction
  over the new area, which starts as the image's edge pixels stretched outward.
- A mask of another size than the image is resized to it (the services' page says so); its grey levels are
  binarised at 128 and `grow_mask` dilates it without the blur Stability's service adds, because the engine
  takes a mask as regenerate-or-keep.
- These bodies carry no steps, guidance or sampler: 30 steps, cfg 7 and K_DPMPP_2M, SDXL 1.0's defaults on
  Bedrock.
- A filtered result is `{"finish_reasons": ["Filter reason: prompt"]}` (or `output image`), the shape
  Bedrock's pages show, with neither seeds nor images.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from sdxl_bedrock.api.stability.fields import StrictFields
from sdxl_bedrock.api.validation import (
    RELAXED_SIZE_MAX,
    RELAXED_SIZE_STEP,
    SDXL_V1_SIZES,
    decode_base64_field,
    load_json_object,
    malformed,
    resized,
    validate,
)
from sdxl_bedrock.codecs import reencoded
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.presets import DEFAULT_SAMPLER_NAME, SAMPLER_NAMES, STYLE_PRESETS
from sdxl_bedrock.schema import Artifact, FilteredBy, FinishReason, GenerationRequest, WeightedPrompt
from sdxl_bedrock.strength import FULL_SCHEDULE, DenoiseWindow, from_strength

# Bedrock's pages: seeds below 2^32 - 1 for SD3.5 and the services, up to 2^32 - 1 for Core and Ultra.
MAX_SEED = 4294967294
CORE_ULTRA_MAX_SEED = 4294967295
MAX_PROMPT = 10_000
MIN_IMAGE_SIDE = 64
# The services' input images: at most 9,437,184 pixels, between 1:2.5 and 2.5:1 (Bedrock's services page).
MAX_IMAGE_PIXELS = 9_437_184
MAX_IMAGE_RATIO = 2.5
# Ultra's input image: at most 16,384 pixels a side (Stability's reference; Bedrock's page names none).
ULTRA_MAX_IMAGE_SIDE = 16_384
ULTRA_DEFAULT_STRENGTH = 0.35
MAX_GROW_MASK = 20
MAX_OUTPAINT = 2000
STEPS = 30
CFG_SCALE = 7.0
# SD3.5's, Core's and Ultra's aspect ratios, in the order of Bedrock's enumeration.
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
INFERENCE_PROFILE_PREFIXES = ("us.", "eu.", "apac.")
FILTER_REASONS = {
    FilteredBy.PROMPT: "Filter reason: prompt",
    FilteredBy.OUTPUT_IMAGE: "Filter reason: output image",
}
CHECKPOINT_HEADER = "X-Sdxl-Bedrock-Checkpoint"

if TYPE_CHECKING:
    AspectRatio: TypeAlias = str
    StylePresetName: TypeAlias = str
else:
    AspectRatio = Literal[ASPECT_RATIOS]
    StylePresetName = Literal[tuple(STYLE_PRESETS)]
OutputFormat = Literal["jpeg", "png", "webp"]
CoreUltraOutputFormat = Literal["jpeg", "png"]

Prompt = Annotated[str, Field(max_length=MAX_PROMPT, description="What the image shows.")]
NegativePrompt = Annotated[str, Field(max_length=MAX_PROMPT, description="What it should not show.")]
Seed = Annotated[
    int, Field(ge=0, le=MAX_SEED, description="0 (or absent): a random seed, which is returned.")
]
CoreUltraSeed = Annotated[
    int, Field(ge=0, le=CORE_ULTRA_MAX_SEED, description="0 (or absent): a random seed, which is returned.")
]
Sd35Image = Annotated[
    str,
    Field(
        description="Image-to-image: base64 of a PNG, JPEG or WebP image, 64 pixels a side or more.",
        json_schema_extra={"contentEncoding": "base64"},
    ),
]
UltraImage = Annotated[
    str,
    Field(
        description="Image-to-image: base64 of a PNG, JPEG or WebP image, 64 to 16,384 pixels a side.",
        json_schema_extra={"contentEncoding": "base64"},
    ),
]
Base64Image = Annotated[
    str,
    Field(
        description="Base64 of a PNG, JPEG or WebP image, 64 pixels a side or more, at most 9,437,184 "
        "pixels, between 1:2.5 and 2.5:1.",
        json_schema_extra={"contentEncoding": "base64"},
    ),
]
Base64Mask = Annotated[
    str | None,
    Field(
        description="Base64 of an image: white is changed, black kept; resized to `image`'s size. Absent: "
        "the image's transparent pixels.",
        json_schema_extra={"contentEncoding": "base64"},
    ),
]
GrowMask = Annotated[
    int, Field(ge=0, le=MAX_GROW_MASK, description="Pixels by which the mask grows in every direction.")
]
Strength = Annotated[float, Field(ge=0, le=1, description="0 keeps the image, 1 is as if none was given.")]


@dataclass(frozen=True)
class ImageRules:
    """What a model's page asks of an input image (the decoder's own bound, codecs.MAX_DECODED_PIXELS, holds
    for all)."""

    max_side: int | None = None
    max_pixels: int | None = None
    max_ratio: float | None = None


SD35_IMAGE = ImageRules()
ULTRA_IMAGE = ImageRules(max_side=ULTRA_MAX_IMAGE_SIDE)
SERVICE_IMAGE = ImageRules(max_pixels=MAX_IMAGE_PIXELS, max_ratio=MAX_IMAGE_RATIO)


class ImageModelFields(StrictFields):
    """JSON-schema semantics, as for SDXL's body: no unknown key, no coercion, `null` never a string."""


class CoreBody(ImageModelFields):
    """Stable Image Core: text-to-image."""

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    aspect_ratio: AspectRatio = "1:1"
    mode: Literal["text-to-image"] = "text-to-image"
    seed: CoreUltraSeed = 0
    output_format: CoreUltraOutputFormat = "png"


class UltraBody(CoreBody):
    """Stable Image Ultra: text-to-image, or image-to-image with `image` (its `mode` stays text-to-image)."""

    aspect_ratio: Annotated[AspectRatio, Field(description="Text-to-image only.")] = "1:1"
    image: UltraImage | None = None
    strength: Annotated[Strength, Field(description="With `image` only.")] = ULTRA_DEFAULT_STRENGTH


class Sd35Body(ImageModelFields):
    """SD3.5 Large (and SD3 Large): text-to-image, or image-to-image with `image` and `strength`."""

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    aspect_ratio: Annotated[AspectRatio, Field(description="Text-to-image only.")] = "1:1"
    mode: Annotated[
        Literal["text-to-image", "image-to-image"],
        Field(description="Absent: image-to-image when `image` is given, else text-to-image."),
    ] = "text-to-image"
    image: Sd35Image | None = None
    strength: Annotated[Strength | None, Field(description="Image-to-image, and then required.")] = None
    seed: Seed = 0
    output_format: OutputFormat = "png"


class InpaintBody(ImageModelFields):
    image: Base64Image
    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    mask: Base64Mask = None
    grow_mask: GrowMask = 5
    style_preset: StylePresetName | None = None
    seed: Seed = 0
    output_format: OutputFormat = "png"


class OutpaintBody(ImageModelFields):
    image: Base64Image
    prompt: Prompt = ""
    left: Annotated[int, Field(ge=0, le=MAX_OUTPAINT)] = 0
    right: Annotated[int, Field(ge=0, le=MAX_OUTPAINT)] = 0
    up: Annotated[int, Field(ge=0, le=MAX_OUTPAINT)] = 0
    down: Annotated[int, Field(ge=0, le=MAX_OUTPAINT)] = 0
    creativity: Annotated[
        float, Field(ge=0.1, le=1, description="How freely the new area departs from the image's edges.")
    ] = 0.5
    style_preset: StylePresetName | None = None
    seed: Seed = 0
    output_format: OutputFormat = "png"


class EraseObjectBody(ImageModelFields):
    image: Base64Image
    mask: Base64Mask = None
    grow_mask: GrowMask = 5
    seed: Seed = 0
    output_format: OutputFormat = "png"


@dataclass(frozen=True)
class ImageInvocation:
    """A validated body of this family: the request, the answer's format, and the size the answer is
    resized back to (None: the generated size)."""

    request: GenerationRequest
    output_format: str
    answer_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Sizing:
    relaxed_sizes: bool
    random_seed: Callable[[], int]


Planner = Callable[[Any, Sizing], ImageInvocation]


@dataclass(frozen=True)
class ImageModel:
    """One model id of the family: its body and how a body becomes a request, or, for an Image Service
    that needs a model an SDXL server lacks, why it is refused."""

    model_id: str
    name: str
    body: type[BaseModel] | None = None
    plan: Planner | None = None
    needs: str | None = None


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED) + 1


def parse_image_body(
    model: ImageModel, raw: bytes, *, relaxed_sizes: bool = False, seed: Callable[[], int] = random_seed
) -> ImageInvocation:
    """Validate a body for `model` (one it serves) and resolve it into one GenerationRequest.

    Raises MalformedBody naming the field."""
    assert model.body is not None and model.plan is not None
    body = validate(model.body, load_json_object(raw))
    return model.plan(body, Sizing(relaxed_sizes, seed))


# ---- the models' plans --------------------------------------------------------------------------------


def plan_text_to_image(body: CoreBody | Sd35Body, sizing: Sizing) -> ImageInvocation:
    width, height = nearest_sdxl_size(ratio_of(body.aspect_ratio))
    return ImageInvocation(
        request(body.prompt, body.negative_prompt, (width, height), body.seed, sizing), body.output_format
    )


def plan_sd35(body: Sd35Body, sizing: Sizing) -> ImageInvocation:
    given = body.model_fields_set
    image_to_image = body.mode == "image-to-image" or ("mode" not in given and "image" in given)
    if not image_to_image:
        refuse_extraneous(given, ("image", "strength"))
        return plan_text_to_image(body, sizing)
    for key in ("image", "strength"):
        if key not in given:
            raise malformed((), f"required key [{key}] not found", kind=ProblemKind.REQUIRED_KEY, value=key)
    assert body.image is not None and body.strength is not None
    return plan_image_to_image(body, body.image, body.strength, SD35_IMAGE, sizing)


def plan_ultra(body: UltraBody, sizing: Sizing) -> ImageInvocation:
    if body.image is None:
        refuse_extraneous(body.model_fields_set, ("strength",))
        return plan_text_to_image(body, sizing)
    return plan_image_to_image(body, body.image, body.strength, ULTRA_IMAGE, sizing)


def refuse_extraneous(given: set[str], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in given:
            raise malformed(
                (), f"extraneous key [{key}] is not permitted", kind=ProblemKind.EXTRANEOUS_KEY, value=key
            )


def plan_image_to_image(
    body: Sd35Body | UltraBody, value: str, strength: float, rules: ImageRules, sizing: Sizing
) -> ImageInvocation:
    image = input_image(value, rules)
    size, answer_size = generation_size(image.size, sizing)
    source, _ = resized(image.convert("RGB"), None, size)
    generation = request(
        body.prompt,
        body.negative_prompt,
        size,
        body.seed,
        sizing,
        init_image=source,
        denoise=from_strength(strength),
    )
    return ImageInvocation(generation, body.output_format, answer_size)


def plan_inpaint(body: InpaintBody, sizing: Sizing) -> ImageInvocation:
    image = input_image(body.image, SERVICE_IMAGE)
    mask = grown(mask_for(image, body.mask), body.grow_mask)
    return masked(body.prompt, body.negative_prompt, image, mask, body, sizing, style=body.style_preset)


def plan_erase_object(body: EraseObjectBody, sizing: Sizing) -> ImageInvocation:
    image = input_image(body.image, SERVICE_IMAGE)
    mask = grown(mask_for(image, body.mask), body.grow_mask)
    # Erasing is regenerating the masked area with nothing asked for: the surroundings fill it.
    return masked("", "", image, mask, body, sizing)


def plan_outpaint(body: OutpaintBody, sizing: Sizing) -> ImageInvocation:
    if not (body.left or body.right or body.up or body.down):
        raise malformed(("left",), "at least one of left, right, up and down must be above 0")
    image = input_image(body.image, SERVICE_IMAGE).convert("RGB")
    canvas_width, canvas_height = image.width + body.left + body.right, image.height + body.up + body.down
    if canvas_width * canvas_height > MAX_IMAGE_PIXELS:
        raise malformed(
            None,
            f"the extended image would be {canvas_width}x{canvas_height}, "
            f"more than {MAX_IMAGE_PIXELS} pixels",
            field="left",
        )
    pixels = np.pad(np.asarray(image), ((body.up, body.down), (body.left, body.right), (0, 0)), mode="edge")
    keep = np.zeros((canvas_height, canvas_width), dtype=np.uint8)
    keep[body.up : body.up + image.height, body.left : body.left + image.width] = 255
    mask = ImageOps.invert(Image.fromarray(keep, "L"))
    return masked(
        body.prompt,
        "",
        Image.fromarray(pixels, "RGB"),
        mask,
        body,
        sizing,
        style=body.style_preset,
        denoise=from_strength(body.creativity),
    )


def masked(
    prompt: str,
    negative_prompt: str,
    image: Image.Image,
    mask: Image.Image,
    body: InpaintBody | OutpaintBody | EraseObjectBody,
    sizing: Sizing,
    *,
    style: str | None = None,
    denoise: DenoiseWindow = FULL_SCHEDULE,
) -> ImageInvocation:
    size, answer_size = generation_size(image.size, sizing)
    source, source_mask = resized(image.convert("RGB"), mask, size)
    generation = request(
        prompt,
        negative_prompt,
        size,
        body.seed,
        sizing,
        init_image=source,
        mask=source_mask,
        denoise=denoise,
        style=style,
    )
    return ImageInvocation(generation, body.output_format, answer_size)


def request(
    prompt: str,
    negative_prompt: str,
    size: tuple[int, int],
    seed: int,
    sizing: Sizing,
    *,
    init_image: Image.Image | None = None,
    mask: Image.Image | None = None,
    denoise: DenoiseWindow = FULL_SCHEDULE,
    style: str | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        prompts=(WeightedPrompt(prompt, 1.0),),
        negative_prompts=(WeightedPrompt(negative_prompt, 1.0),) if negative_prompt else (),
        width=size[0],
        height=size[1],
        seed=seed or sizing.random_seed(),
        steps=STEPS,
        cfg_scale=CFG_SCALE,
        sampler=SAMPLER_NAMES[DEFAULT_SAMPLER_NAME],
        denoise_from=denoise.denoise_from,
        denoise_to=denoise.denoise_to,
        init_image=init_image,
        mask=mask,
        style=STYLE_PRESETS[style] if style is not None else None,
    )


# ---- sizes and images ----------------------------------------------------------------------------------


def ratio_of(aspect_ratio: str) -> float:
    width, height = aspect_ratio.split(":")
    return int(width) / int(height)


def nearest_sdxl_size(ratio: float) -> tuple[int, int]:
    """The SDXL 1.0 size whose proportions are nearest to `ratio` (width / height), on a log scale so that
    2:1 and 1:2 are as far from 1:1."""
    return min(SDXL_V1_SIZES, key=lambda size: abs(math.log(size[0] / size[1]) - math.log(ratio)))


def generation_size(
    image_size: tuple[int, int], sizing: Sizing
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The size to generate at for an input image, and the size the answer is resized back to (None: the
    same)."""
    width, height = image_size
    if image_size in SDXL_V1_SIZES or (sizing.relaxed_sizes and relaxed_side(width) and relaxed_side(height)):
        return image_size, None
    return nearest_sdxl_size(width / height), image_size


def relaxed_side(side: int) -> bool:
    return RELAXED_SIZE_STEP <= side <= RELAXED_SIZE_MAX and side % RELAXED_SIZE_STEP == 0


def input_image(value: str, rules: ImageRules) -> Image.Image:
    image = decode_base64_field(value, ("image",), error_name="invalid_image")
    width, height = image.size
    problem = None
    if min(width, height) < MIN_IMAGE_SIDE:
        problem = f"the image is {width}x{height}; each side must be at least {MIN_IMAGE_SIDE} pixels"
    elif rules.max_side is not None and max(width, height) > rules.max_side:
        problem = f"the image is {width}x{height}; each side must be at most {rules.max_side} pixels"
    elif rules.max_pixels is not None and width * height > rules.max_pixels:
        problem = f"the image is {width}x{height}, more than {rules.max_pixels} pixels"
    elif rules.max_ratio is not None and max(width / height, height / width) > rules.max_ratio:
        problem = (
            f"the image is {width}x{height}; its aspect ratio must be between 1:{rules.max_ratio:g} and "
            f"{rules.max_ratio:g}:1"
        )
    if problem is not None:
        raise malformed(("image",), problem, value=f"{width}x{height}", error_name="invalid_image")
    return image


def mask_for(image: Image.Image, mask_value: str | None) -> Image.Image:
    """The mask as an "L" image of the image's size, 255 where pixels change: `mask`'s grey level, else the
    image's transparency."""
    if mask_value is None:
        if image.mode != "RGBA":
            raise malformed(
                (),
                "required key [mask] not found (or an image with an alpha channel: its transparent pixels "
                "are the mask)",
                kind=ProblemKind.REQUIRED_KEY,
                value="mask",
            )
        return ImageOps.invert(image.getchannel("A"))
    mask = decode_base64_field(mask_value, ("mask",), error_name="invalid_mask_image").convert("L")
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    return mask


def grown(mask: Image.Image, pixels: int) -> Image.Image:
    """The mask (binarised at 128, as the engine reads it) grown by `pixels` in every direction: a square
    dilation, one shifted maximum per pixel and axis."""
    area = np.asarray(mask) >= 128
    for axis in (0, 1):
        spread = area.copy()
        length = area.shape[axis]
        for shift in range(1, min(pixels, length - 1) + 1):
            ahead = [slice(None)] * 2
            behind = [slice(None)] * 2
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            spread[tuple(ahead)] |= area[tuple(behind)]
            spread[tuple(behind)] |= area[tuple(ahead)]
        area = spread
    return Image.fromarray(area.astype(np.uint8) * 255, "L")


# ---- the answer ------------------------------------------------------------------------------------------


class ImageModelsResult(BaseModel):
    """The models' JSON: one seed, finish reason and image per image; a filtered result has only
    `finish_reasons`."""

    seeds: Annotated[list[int] | None, Field(description="Absent when filtered.")] = None
    finish_reasons: list[str | None]
    images: Annotated[list[str] | None, Field(description="Base64, in `output_format`.")] = None


def image_models_json(artifacts: list[Artifact], invocation: ImageInvocation) -> bytes:
    reasons = [
        FILTER_REASONS.get(a.filtered_by or FilteredBy.PROMPT)
        if a.finish_reason == FinishReason.CONTENT_FILTERED
        else None
        for a in artifacts
    ]
    if any(reason is not None for reason in reasons):
        return json.dumps({"finish_reasons": reasons}).encode()
    images = [
        base64.b64encode(reencoded(a.png, invocation.output_format, size=invocation.answer_size)).decode(
            "ascii"
        )
        for a in artifacts
    ]
    return json.dumps(
        {"seeds": [a.seed for a in artifacts], "finish_reasons": reasons, "images": images}
    ).encode()


# ---- the model table -------------------------------------------------------------------------------------


def served(model_id: str, name: str, body: type[BaseModel], plan: Planner) -> ImageModel:
    return ImageModel(model_id, name, body, plan)


def refused(model_id: str, name: str, needs: str) -> ImageModel:
    return ImageModel(model_id, name, needs=needs)


_SEGMENTATION = "a segmentation model to find what `search_prompt` names"
IMAGE_MODELS: dict[str, ImageModel] = {
    entry.model_id: entry
    for entry in (
        served("stability.sd3-5-large-v1:0", "SD3.5 Large", Sd35Body, plan_sd35),
        served("stability.sd3-large-v1:0", "SD3 Large", Sd35Body, plan_sd35),
        served("stability.stable-image-core-v1:1", "Stable Image Core", CoreBody, plan_text_to_image),
        served("stability.stable-image-core-v1:0", "Stable Image Core", CoreBody, plan_text_to_image),
        served("stability.stable-image-ultra-v1:1", "Stable Image Ultra", UltraBody, plan_ultra),
        served("stability.stable-image-ultra-v1:0", "Stable Image Ultra", UltraBody, plan_ultra),
        served("stability.stable-image-inpaint-v1:0", "Stable Image Inpaint", InpaintBody, plan_inpaint),
        served("stability.stable-outpaint-v1:0", "Stable Image Outpaint", OutpaintBody, plan_outpaint),
        served(
            "stability.stable-image-erase-object-v1:0",
            "Stable Image Erase Object",
            EraseObjectBody,
            plan_erase_object,
        ),
        refused(
            "stability.stable-image-search-replace-v1:0", "Stable Image Search and Replace", _SEGMENTATION
        ),
        refused(
            "stability.stable-image-search-recolor-v1:0",
            "Stable Image Search and Recolor",
            "a segmentation model to find what `select_prompt` names",
        ),
        refused(
            "stability.stable-image-remove-background-v1:0",
            "Stable Image Remove Background",
            "a background segmentation model",
        ),
        refused(
            "stability.stable-image-control-sketch-v1:0",
            "Stable Image Control Sketch",
            "a ControlNet for sketches",
        ),
        refused(
            "stability.stable-image-control-structure-v1:0",
            "Stable Image Control Structure",
            "a ControlNet for an image's structure",
        ),
        refused(
            "stability.stable-image-style-guide-v1:0",
            "Stable Image Style Guide",
            "an image-prompt adapter to take the style of an image",
        ),
        refused(
            "stability.stable-style-transfer-v1:0",
            "Stable Image Style Transfer",
            "an image-prompt adapter to take the style of an image",
        ),
        refused(
            "stability.stable-creative-upscale-v1:0", "Stable Image Creative Upscale", "an upscaling model"
        ),
        refused(
            "stability.stable-conservative-upscale-v1:0",
            "Stable Image Conservative Upscale",
            "an upscaling model",
        ),
        refused("stability.stable-fast-upscale-v1:0", "Stable Image Fast Upscale", "an upscaling model"),
    )
}


def image_model(model_id: str) -> ImageModel | None:
    """The family's entry for a model id or its cross-region inference profile id (`us.`, `eu.`, `apac.`)."""
    for prefix in INFERENCE_PROFILE_PREFIXES:
        if model_id.startswith(prefix):
            model_id = model_id.removeprefix(prefix)
            break
    return IMAGE_MODELS.get(model_id)
