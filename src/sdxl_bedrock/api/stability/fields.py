"""Stability's SDXL generation fields, and what they mean: shared by Stability's v1 bodies and by Bedrock's
InvokeModel body for `stability.stable-diffusion-xl-v1` (which is Stability's JSON).

The pydantic models check each field (types, bounds, enumerations) and document it (their JSON schema is
the OpenAPI description of the bodies); the functions below apply the rules across fields and resolve
every name into the typed entries of presets.py, so the `GenerationRequest` they build holds no wire name.

Our rules where neither Bedrock nor Stability says:
- A prompt text may be empty, as long as some prompt's text is not; at least one prompt needs a weight
  above 0 (weight 0 is allowed and has no effect; a negative weight makes a negative prompt).
- Integers must be written as integers: `30.0` for `steps` is "expected type: Integer, found: Number";
  `true` is never a number; `null` is never an absent field.
- The fields of the init-image mode not chosen (`image_strength` under STEP_SCHEDULE, `step_schedule_*`
  under IMAGE_STRENGTH) are checked for type and bounds and then ignored, as Stability does: a client
  naming its mode explicitly may still send the other mode's defaults.
- `mask_image` needs `mask_source`; with INIT_IMAGE_ALPHA it is an extraneous key (two masks would
  contradict each other). A mask image's alpha is ignored: its grey level is the mask.
- `extras` takes any JSON object; its keys are ignored here (Bedrock's response stream reads two of them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from sdxl_bedrock.api.validation import (
    MAX_SEED,
    RELAXED_SIZE_MAX,
    RELAXED_SIZE_STEP,
    SDXL_V1_SIZES,
    malformed,
    random_nonzero_seed,
    shown,
)
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.presets import (
    CLIP_GUIDANCE_PRESETS,
    DEFAULT_SAMPLER_NAME,
    NO_CLIP_GUIDANCE,
    SAMPLER_NAMES,
    STYLE_PRESETS,
)
from sdxl_bedrock.schema import GenerationRequest, WeightedPrompt
from sdxl_bedrock.strength import FULL_SCHEDULE, DenoiseWindow, from_image_strength

CLIP_GUIDANCE_PRESET_NAMES = tuple(sorted((NO_CLIP_GUIDANCE, *CLIP_GUIDANCE_PRESETS)))
if TYPE_CHECKING:
    SamplerName: TypeAlias = str
    StylePresetName: TypeAlias = str
    ClipGuidancePresetName: TypeAlias = str
else:
    # The enumerations, from the preset tables themselves: a name is accepted exactly when it resolves.
    SamplerName = Literal[tuple(SAMPLER_NAMES)]
    StylePresetName = Literal[tuple(STYLE_PRESETS)]
    ClipGuidancePresetName = Literal[CLIP_GUIDANCE_PRESET_NAMES]
InitImageMode = Literal["IMAGE_STRENGTH", "STEP_SCHEDULE"]
MaskSource = Literal["MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA"]
MASK_SOURCES: tuple[str, ...] = get_args(MaskSource)
INIT_IMAGE_MODES: tuple[str, ...] = get_args(InitImageMode)

Prompts = tuple[WeightedPrompt, ...]
RandomSeed = Callable[[], int]

_SIZE_RULE = (
    "The output size must be one of "
    + ", ".join(f"{width}x{height}" for width, height in SDXL_V1_SIZES)
    + " (width x height), or, on a server started with `--relaxed-sizes`, any multiple of "
    + f"{RELAXED_SIZE_STEP}"
    f" from {RELAXED_SIZE_STEP} to {RELAXED_SIZE_MAX}."
)
IMAGE_FORMATS = "PNG, JPEG or WebP"
_STRING_FIELDS = (
    "sampler",
    "style_preset",
    "clip_guidance_preset",
    "init_image",
    "init_image_mode",
    "mask_source",
    "mask_image",
    # Bedrock's newer Stability bodies (api/bedrock/image_models.py), on the same base
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "mode",
    "image",
    "mask",
    "output_format",
)


class StrictFields(BaseModel):
    """JSON-schema semantics: no unknown key, no coercion, no NaN; `null` is never a string."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator(*_STRING_FIELDS, mode="before", check_fields=False)
    @classmethod
    def _null_is_not_a_string(cls, value: object) -> object:
        # Before the enum check, so that null reads as a wrong type, as in JSON schema; and None stands for
        # "absent" in the fields without a default.
        if value is None:
            raise PydanticCustomError("string_type", "Input should be a valid string")
        return value


class TextPrompt(StrictFields):
    text: Annotated[str, Field(max_length=2000)]
    weight: float = 1.0


class GenerationFields(StrictFields):
    """What every face and mode takes: prompts and sampling; `steps` and `samples` with Bedrock's limits."""

    text_prompts: Annotated[
        list[TextPrompt],
        Field(
            min_length=1,
            max_length=10,
            description="1 to 10 prompts. A negative weight makes a negative prompt; at least one prompt "
            "needs a non-empty text and one a weight above 0.",
        ),
    ]
    cfg_scale: Annotated[
        float, Field(ge=0, le=35, description="How strictly the image follows the prompt.")
    ] = 7.0
    seed: Annotated[
        int,
        Field(ge=0, le=MAX_SEED, description="0 (or absent) picks a random seed, which the answer reports."),
    ] = 0
    steps: Annotated[int, Field(ge=10, le=50)] = 30
    samples: Annotated[int, Field(ge=1, le=1)] = 1
    sampler: Annotated[SamplerName, Field(description=f"Absent: {DEFAULT_SAMPLER_NAME}.")] = (
        DEFAULT_SAMPLER_NAME
    )
    style_preset: StylePresetName | None = None
    clip_guidance_preset: ClipGuidancePresetName = NO_CLIP_GUIDANCE
    extras: Annotated[
        dict[str, Any],
        Field(default_factory=dict, description="Experimental options; unknown keys are ignored."),
    ]


class SizeFields(StrictFields):
    height: Annotated[int, Field(description=f"The output height. {_SIZE_RULE}")] = 1024
    width: Annotated[int, Field(description=f"The output width. {_SIZE_RULE}")] = 1024


class InitImageModeFields(StrictFields):
    init_image_mode: Annotated[
        InitImageMode,
        Field(
            description="IMAGE_STRENGTH uses `image_strength`; STEP_SCHEDULE uses `step_schedule_start` and "
            "`step_schedule_end`."
        ),
    ] = "IMAGE_STRENGTH"
    image_strength: Annotated[
        float, Field(ge=0, le=1, description="Near 1 keeps the source, near 0 departs from it.")
    ] = 0.35
    step_schedule_start: Annotated[float, Field(ge=0, le=1)] = 0.65
    step_schedule_end: Annotated[float, Field(ge=0, le=1, description="Below `step_schedule_start`.")] = 0.0


class MaskSourceField(StrictFields):
    mask_source: Annotated[
        MaskSource | None,
        Field(
            description="MASK_IMAGE_WHITE or MASK_IMAGE_BLACK need `mask_image`; INIT_IMAGE_ALPHA takes the "
            "mask from the transparent pixels of `init_image` and refuses `mask_image`."
        ),
    ] = None


# Completed by the wire that sends images ("Base64 of ...", "A file: ...").
INIT_IMAGE_DESCRIPTION = f"a {IMAGE_FORMATS} image; its size is the output size. {_SIZE_RULE}"
MASK_IMAGE_DESCRIPTION = "an image the size of `init_image`; its grey level is the mask."


# ---- the rules across fields ---------------------------------------------------------------------------


def check_mask_keys(mask_source: str | None, *, mask_image_given: bool) -> None:
    if mask_image_given and mask_source is None:
        raise malformed(
            (),
            "required key [mask_source] not found",
            kind=ProblemKind.REQUIRED_KEY,
            value="mask_source",
            error_name="invalid_mask_image",
        )
    if mask_source in ("MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK") and not mask_image_given:
        raise malformed(
            (),
            "required key [mask_image] not found",
            kind=ProblemKind.REQUIRED_KEY,
            value="mask_image",
            error_name="invalid_mask_image",
        )
    if mask_source == "INIT_IMAGE_ALPHA" and mask_image_given:
        raise malformed(
            (),
            "extraneous key [mask_image] is not permitted",
            kind=ProblemKind.EXTRANEOUS_KEY,
            value="mask_image",
            error_name="invalid_mask_image",
        )


def split_prompts(prompts: list[TextPrompt]) -> tuple[Prompts, Prompts]:
    """Positive prompts (weight >= 0) and negative ones (weight < 0, kept as |weight|)."""
    if not any(prompt.text for prompt in prompts):
        raise malformed(("text_prompts",), "at least one prompt must have a non-empty text")
    if not any(prompt.weight > 0 for prompt in prompts):
        raise malformed(("text_prompts",), "at least one prompt must have a weight above 0")
    positive = tuple(WeightedPrompt(p.text, abs(p.weight)) for p in prompts if p.weight >= 0)
    negative = tuple(WeightedPrompt(p.text, abs(p.weight)) for p in prompts if p.weight < 0)
    return positive, negative


def denoise_range(fields: InitImageModeFields) -> DenoiseWindow:
    """The window of the init-image mode chosen: `image_strength`'s, or STEP_SCHEDULE's own two ends."""
    if fields.init_image_mode == "IMAGE_STRENGTH":
        return from_image_strength(fields.image_strength)
    start, end = fields.step_schedule_start, fields.step_schedule_end
    if end >= start:
        raise malformed(
            ("step_schedule_end",),
            f"{shown(end)} is not less than {shown(start)}",
            kind=ProblemKind.OUT_OF_RANGE,
            value=end,
        )
    return DenoiseWindow(start, end)


def mask_of(
    mask_source: str | None, init_image: Image.Image, mask_image: Image.Image | None
) -> Image.Image | None:
    """The mask as an "L" image, 255 where a pixel is to be regenerated; None when there is none.

    `mask_image` is given exactly when `mask_source` needs one (`check_mask_keys` made sure).
    """
    if mask_source is None:
        return None
    if mask_source == "INIT_IMAGE_ALPHA":
        if init_image.mode != "RGBA":
            raise malformed(
                ("init_image",),
                "mask_source INIT_IMAGE_ALPHA needs an image with an alpha channel",
                error_name="invalid_mask_image",
            )
        return ImageOps.invert(init_image.getchannel("A"))
    assert mask_image is not None
    if mask_image.size != init_image.size:
        raise malformed(
            ("mask_image",),
            f"the mask is {mask_image.width}x{mask_image.height} but init_image is "
            f"{init_image.width}x{init_image.height}; they must be the same size",
            error_name="invalid_mask_image",
        )
    grey = mask_image.convert("L")
    return grey if mask_source == "MASK_IMAGE_WHITE" else ImageOps.invert(grey)


def generation_request(
    fields: GenerationFields,
    prompts: tuple[Prompts, Prompts],
    width: int,
    height: int,
    *,
    denoise: DenoiseWindow = FULL_SCHEDULE,
    init_image: Image.Image | None = None,
    mask: Image.Image | None = None,
    random_seed: RandomSeed | None = None,
) -> GenerationRequest:
    """The wire-neutral request, every name resolved into its preset; `prompts` from `split_prompts`."""
    positive, negative = prompts
    return GenerationRequest(
        prompts=positive,
        negative_prompts=negative,
        width=width,
        height=height,
        seed=fields.seed or (random_seed or random_nonzero_seed)(),
        steps=fields.steps,
        cfg_scale=fields.cfg_scale,
        sampler=SAMPLER_NAMES[fields.sampler],
        denoise_from=denoise.denoise_from,
        denoise_to=denoise.denoise_to,
        init_image=init_image.convert("RGB") if init_image is not None else None,
        mask=mask,
        style=STYLE_PRESETS[fields.style_preset] if fields.style_preset is not None else None,
        clip_guidance=CLIP_GUIDANCE_PRESETS.get(fields.clip_guidance_preset),
        samples=fields.samples,
    )
