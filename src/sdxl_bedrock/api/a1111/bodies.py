"""`/sdapi/v1/txt2img` and `/sdapi/v1/img2img` bodies -> a GenerationRequest, plus what the answer reports.

The models hold A1111's fields with A1111's defaults (its StableDiffusionProcessingTxt2Img / Img2Img, as
its API exposes them), with JSON's types (A1111's pydantic would also read `"20"` as 20; here an integer is
written as one, and `inpaint_full_res` alone also takes A1111's radio index 0 or 1). A key A1111 does not
have is ignored, as A1111's pydantic models ignore it (modules/api/models.py: no `extra` setting):
SillyTavern sends its own `url` and `auth` beside A1111's fields, and SD.Next's `clip_skip`. Every field
`webuiapi` sends by default is accepted at that value. A field A1111 has whose set value this server cannot
honour is a 422 naming the field, never ignored; fields that have no effect in A1111 either at the values
given (the hires-fix fields without `enable_hr`, `s_tmin`/`s_tmax` without `s_churn`, `image_cfg_scale` for
a model that is not instruct-pix2pix, `eta` for a deterministic sampler, a schedule for DDIM,
`do_not_save_*`, which A1111's API overrides from `save_images`) are accepted as A1111 accepts them. Forge's
`hr_cfg` is honoured where given.

Our rules where A1111 is silent or differs:
- `width` and `height`: multiples of 8 from 64 to 2048 (A1111 rounds other values down to a multiple of 8).
- `seed`: -1 (random) or 0..4294967295; `batch_size` x `n_iter` images, at most the server's queue.
- `init_images`: exactly one image (A1111 also takes one per batch row). A mask of another size than the
  init image is stretched to it.
- `override_settings`: see options.py. `styles` names this server's style presets, applied as A1111 applies
  its styles: the template's `{prompt}` takes the prompt, the negative terms join the negative prompt.
- `force_task_id` is accepted: it names a task in A1111's internal queue API, which is not served here.
- `<lora:...>` tags in the prompt (and the hires prompt, for the second pass) choose the request's LoRAs as
  A1111 reads them (extra_networks.py); `disable_extra_networks` removes them unapplied, as in A1111.
- Comments (`#` to the line's end) leave every prompt before its tags are read, while the setting
  `enable_prompt_comments` is on (prompts.strip_comments).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from PIL import Image, ImageOps
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from sdxl_bedrock.api.a1111 import images
from sdxl_bedrock.api.a1111.errors import A1111Refusal
from sdxl_bedrock.api.a1111.extra_networks import PromptLoras, prompt_loras
from sdxl_bedrock.api.a1111.hires import (
    DEFAULT_LATENT_MODE,
    LATENT_MODES,
    PIXEL_UPSCALERS,
    HiresFix,
    hires_sizes,
    second_pass_schedule,
)
from sdxl_bedrock.api.a1111.names import Resolved, resolve
from sdxl_bedrock.api.a1111.options import ADJUSTABLE_DEFAULTS, check_settings, first_encoder_layer
from sdxl_bedrock.api.a1111.prompts import ParsedPrompt, parse_prompt, strip_comments
from sdxl_bedrock.api.validation import (
    MAX_SEED,
    decode_base64_field,
    load_json_object,
    malformed,
    random_nonzero_seed,
    shown,
    validate,
)
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import Location, MalformedBody, ProblemKind
from sdxl_bedrock.library import Listing, UnknownCheckpoint, only_model
from sdxl_bedrock.loras import LoraListing
from sdxl_bedrock.presets import STYLE_PRESETS
from sdxl_bedrock.schema import SAMPLERS_WITH_ETA, GenerationRequest, Sampler
from sdxl_bedrock.strength import FULL_SCHEDULE, DenoiseWindow, from_strength

SIZE_STEP, SIZE_MIN, SIZE_MAX = 8, 64, 2048
MAX_STEPS = 150
RandomSeed = Callable[[], int]

# Sizes are checked after the model (a message names the rule, not a bare bound).
Size = Annotated[int, Field(description=f"A multiple of {SIZE_STEP} from {SIZE_MIN} to {SIZE_MAX}.")]


class ProcessingFields(BaseModel):
    """The fields txt2img and img2img share, with A1111's defaults."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: Annotated[
        list[str] | None, Field(description="Style presets by name (/sdapi/v1/prompt-styles).")
    ] = None
    seed: Annotated[int, Field(ge=-1, le=MAX_SEED, description="-1 picks a random seed.")] = -1
    subseed: int = -1
    subseed_strength: Annotated[float, Field(description="Only 0: variation seeds are not run here.")] = 0.0
    seed_resize_from_h: Annotated[int, Field(description="At most 0 (no seed resize).")] = -1
    seed_resize_from_w: Annotated[int, Field(description="At most 0 (no seed resize).")] = -1
    sampler_name: Annotated[str | None, Field(description="See /sdapi/v1/samplers.")] = None
    sampler_index: Annotated[str | None, Field(description="Read when sampler_name is not given.")] = "Euler"
    scheduler: Annotated[str | None, Field(description="Automatic or Karras (/sdapi/v1/schedulers).")] = None
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1
    n_iter: Annotated[int, Field(ge=1, le=100)] = 1
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = 50
    cfg_scale: Annotated[float, Field(ge=0, le=35)] = 7.0
    width: Size = 512
    height: Size = 512
    restore_faces: Annotated[bool | None, Field(description="Not true: no face restorer here.")] = None
    tiling: Annotated[bool | None, Field(description="Not true: no tiling here.")] = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Annotated[
        float | None,
        Field(ge=0, description="DDIM and DPM++ 2S a: the fresh noise per step; Euler a, DPM2 a: only 1."),
    ] = None
    s_min_uncond: Annotated[float | None, Field(description="Only 0.")] = None
    s_churn: Annotated[float | None, Field(description="Only 0: no churn here.")] = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: Annotated[float | None, Field(description="Only 1.")] = None
    override_settings: Annotated[
        dict[str, Any] | None, Field(description="Only keys of /sdapi/v1/options, at their values.")
    ] = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: Annotated[str | None, Field(description="No refiner here.")] = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: Annotated[str | None, Field(description="Not set: no hires fix here.")] = None
    comments: dict[str, Any] | None = None
    script_name: Annotated[str | None, Field(description="No scripts here.")] = None
    script_args: Annotated[list[Any], Field(description="Empty.")] = Field(default_factory=list)
    send_images: bool = True
    save_images: Annotated[
        bool,
        Field(
            description="Write the images as A1111 does, under the server's --outputs-dir (if it has one)."
        ),
    ] = False
    alwayson_scripts: Annotated[dict[str, Any], Field(description="Empty.")] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: Annotated[str | None, Field(description="Not set: infotext is not read here.")] = None
    # txt2img: only for the hires fix (no effect here, as in A1111 without it); img2img: the strength.
    denoising_strength: Annotated[float | None, Field(ge=0, le=1)] = 0.75


class Txt2ImgBody(ProcessingFields):
    """`POST /sdapi/v1/txt2img`."""

    enable_hr: Annotated[
        bool, Field(description="The hires fix: a second, image-to-image pass at the upscaled size.")
    ] = False
    firstphase_width: Annotated[int, Field(description="Only 0.")] = 0
    firstphase_height: Annotated[int, Field(description="Only 0.")] = 0
    hr_scale: Annotated[float, Field(gt=0, le=16)] = 2.0
    hr_upscaler: Annotated[
        str | None,
        Field(
            description="A latent mode (/sdapi/v1/latent-upscale-modes; null: Latent) or an upscaler "
            "(/sdapi/v1/upscalers)."
        ),
    ] = None
    hr_second_pass_steps: Annotated[int, Field(ge=0, le=MAX_STEPS, description="0: `steps`.")] = 0
    hr_resize_x: Annotated[int, Field(ge=0, le=SIZE_MAX)] = 0
    hr_resize_y: Annotated[int, Field(ge=0, le=SIZE_MAX)] = 0
    hr_checkpoint_name: Annotated[
        str | None,
        Field(description="The second pass's checkpoint (any the first pass takes), or null: the same."),
    ] = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: Annotated[
        float | None,
        Field(ge=0, le=35, description="Forge's: the second pass's CFG scale (null: `cfg_scale`, as A1111)."),
    ] = None


def radio_index_as_bool(value: object) -> object:
    """A1111's UI sends "inpaint area" as the index of its radio button, and clients copy it."""
    return bool(value) if type(value) is int and value in (0, 1) else value


class Img2ImgBody(ProcessingFields):
    """`POST /sdapi/v1/img2img`."""

    init_images: Annotated[
        list[str] | None, Field(description="Exactly one base64 image (a data: URL prefix is allowed).")
    ] = None
    resize_mode: Annotated[
        Literal[0, 1, 2, 3],
        Field(description="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale."),
    ] = 0
    denoising_strength: Annotated[float, Field(ge=0, le=1)] = 0.75
    image_cfg_scale: float | None = None
    mask: Annotated[str | None, Field(description="Base64: white (or opaque) where to inpaint.")] = None
    mask_blur_x: Annotated[int, Field(ge=0, le=64)] = 4
    mask_blur_y: Annotated[int, Field(ge=0, le=64)] = 4
    mask_blur: Annotated[int | None, Field(ge=0, le=64, description="Sets mask_blur_x and _y.")] = None
    mask_round: Annotated[bool, Field(description="Only true.")] = True
    inpainting_fill: Annotated[
        int, Field(ge=0, le=3, description="0 fill, 1 original (2 latent noise and 3 latent nothing: 422).")
    ] = 0
    inpaint_full_res: Annotated[
        bool,
        BeforeValidator(radio_index_as_bool),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]}),
        Field(description="True (or 1): inpaint only the masked area; false (or 0): the whole picture."),
    ] = True
    inpaint_full_res_padding: Annotated[int, Field(ge=0, le=2048)] = 0
    inpainting_mask_invert: Literal[0, 1] = 0
    initial_noise_multiplier: Annotated[float | None, Field(description="Only 1.")] = None
    latent_mask: Annotated[str | None, Field(description="Not set.")] = None
    include_init_images: bool = False


@dataclass(frozen=True)
class Hires:
    """The hires fix of a plan: the second pass, and what the answer reports of it."""

    fix: HiresFix
    resolved: Resolved
    all_prompts: tuple[str, str]


@dataclass(frozen=True)
class Plan:
    """A validated body: the engine's request, the images' post-processing (img2img with a mask, the hires
    fix's second pass), and what the answer reports. `settings` are the changeable settings the request runs
    with; `kept_settings` the overrides that outlast it (`override_settings_restore_afterwards` false)."""

    request: GenerationRequest
    body: ProcessingFields
    resolved: Resolved
    all_prompts: tuple[str, str]  # the styled prompt and negative prompt, as A1111 reports them
    seed: int
    overlay: images.Overlay | None = None
    settings: Mapping[str, Any] = field(default_factory=lambda: dict(ADJUSTABLE_DEFAULTS))
    kept_settings: Mapping[str, Any] = field(default_factory=dict)
    hires: Hires | None = None
    # A1111's `Lora hashes` (both passes') and its comments (`Lora not found: ...`).
    lora_hashes: Mapping[str, str] = field(default_factory=dict)
    comments: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return self.body.batch_size * self.body.n_iter

    @property
    def steps_per_image(self) -> int | None:
        """Steps each image runs in all its passes, where they are known before it starts."""
        if self.hires is None:
            return None
        return self.body.steps + self.hires.fix.steps


def parse_txt2img(
    raw: bytes,
    *,
    settings: Settings,
    max_images: int,
    listing: Listing | None = None,
    loras: LoraListing | None = None,
    adjustable: Mapping[str, Any] = ADJUSTABLE_DEFAULTS,
    random_seed: RandomSeed | None = None,
) -> Plan:
    """Validate a txt2img body (MalformedBody, a 422, on the first problem). `settings` are the server's
    (the model `override_settings` may name), `loras` the LoRA library's listing the prompt's tags name,
    `adjustable` the changeable A1111 settings as they are; `max_images` bounds batch_size x n_iter."""
    body = validate(Txt2ImgBody, load_json_object(raw))
    listing = listing or only_model(settings.model)
    effective, kept = check_common(body, settings, listing, adjustable, max_images)
    refuse_if(
        body.firstphase_width != 0, "firstphase_width", "the legacy first-pass size is not run here; send 0"
    )
    refuse_if(
        body.firstphase_height != 0, "firstphase_height", "the legacy first-pass size is not run here; send 0"
    )
    lookup = LoraLookup(loras or LoraListing(), settings.max_loras_per_request)
    planned = plan(
        body, body.width, body.height, settings=effective, kept=kept, random_seed=random_seed, loras=lookup
    )
    if not body.enable_hr:
        return planned
    return with_hires(planned, body, listing, lookup)


@dataclass(frozen=True)
class LoraLookup:
    """Where a prompt's `<lora:...>` tags are looked up, and how many one prompt may carry."""

    listing: LoraListing
    max_per_request: int

    def of(self, prompt: str, field_name: str, body: ProcessingFields) -> PromptLoras:
        return prompt_loras(
            prompt,
            field_name,
            self.listing,
            max_loras=self.max_per_request,
            enabled=not body.disable_extra_networks,
        )


def with_hires(planned: Plan, body: Txt2ImgBody, listing: Listing, loras: LoraLookup) -> Plan:
    """The plan with the hires fix's second pass (hires.py); the first pass returns its latents for a latent
    upscaler."""
    upscaler = body.hr_upscaler if body.hr_upscaler is not None else DEFAULT_LATENT_MODE
    if upscaler not in LATENT_MODES and upscaler not in PIXEL_UPSCALERS:
        offered = [*PIXEL_UPSCALERS[:1], *LATENT_MODES, *PIXEL_UPSCALERS[1:]]
        raise malformed(
            ("hr_upscaler",),
            f"{shown(upscaler)} is not an upscaler here (no upscaler model is loaded); this server has: "
            + ", ".join(offered),
            kind=ProblemKind.NOT_ALLOWED,
            value=upscaler,
        )
    strength = body.denoising_strength
    if not strength:
        raise malformed(
            ("denoising_strength",),
            f"{shown(strength)}: the hires fix's second pass needs a denoising strength above 0",
            kind=ProblemKind.NOT_ALLOWED,
            value=strength,
        )
    checkpoint = planned.request.checkpoint
    if body.hr_checkpoint_name not in (None, "", "Use same checkpoint"):
        try:
            checkpoint = listing.find(body.hr_checkpoint_name, closest=True).name
        except UnknownCheckpoint:
            raise malformed(
                ("hr_checkpoint_name",),
                f"{shown(body.hr_checkpoint_name)} is not a checkpoint here "
                "(GET /sdapi/v1/sd-models lists them)",
                kind=ProblemKind.NOT_ALLOWED,
                value=body.hr_checkpoint_name,
            ) from None
    sizes = hires_sizes(body.width, body.height, body.hr_scale, body.hr_resize_x, body.hr_resize_y)
    width, height = sizes.output
    if not (SIZE_MIN <= width <= SIZE_MAX and SIZE_MIN <= height <= SIZE_MAX):
        blamed = "hr_resize_x" if body.hr_resize_x else "hr_resize_y" if body.hr_resize_y else "hr_scale"
        raise malformed(
            (blamed,),
            f"the hires fix would make {width}x{height}; each side must be from {SIZE_MIN} to {SIZE_MAX}",
            kind=ProblemKind.OUT_OF_RANGE,
            value=getattr(body, blamed),
        )
    sampler_name = (
        body.hr_sampler_name if body.hr_sampler_name not in (None, "", "Use same sampler") else None
    )
    scheduler = body.hr_scheduler if body.hr_scheduler not in (None, "", "Use same scheduler") else None
    resolved = resolve(
        sampler_name or body.sampler_name,
        body.sampler_index,
        scheduler or body.scheduler,
        fields=(
            "hr_sampler_name" if sampler_name else "sampler_name",
            "hr_scheduler" if scheduler else "scheduler",
        ),
    )
    prompt, negative_prompt = commented_out(
        styled(
            body.hr_prompt or body.prompt, body.hr_negative_prompt or body.negative_prompt, body.styles or ()
        ),
        planned.settings,
    )
    prompt_field = "hr_prompt" if body.hr_prompt else "prompt"
    tags = loras.of(prompt, prompt_field, body)
    positive = parse_prompt(tags.text, prompt_field, positive=True)
    negative = parse_prompt(
        negative_prompt,
        "hr_negative_prompt" if body.hr_negative_prompt else "negative_prompt",
        positive=False,
    )
    steps = body.hr_second_pass_steps or body.steps
    schedule, denoise_from = second_pass_schedule(steps, strength)
    second = GenerationRequest(
        prompts=(positive.weighted(),),
        negative_prompts=(negative.weighted(),) if has_text(negative) else (),
        width=width,
        height=height,
        seed=planned.seed,
        steps=schedule,
        cfg_scale=body.hr_cfg if body.hr_cfg is not None else body.cfg_scale,
        sampler=resolved.sampler.sampler,
        denoise_from=denoise_from,
        sigma_schedule=resolved.schedule,
        eta=eta_for(resolved.sampler.sampler, body.eta),
        first_encoder_layer=planned.request.first_encoder_layer,
        checkpoint=checkpoint,
        loras=tags.loras,
    )
    fix = HiresFix(upscaler, sizes, steps, second)
    first = dataclasses.replace(planned.request, return_latents=fix.latent is not None)
    return dataclasses.replace(
        planned,
        request=first,
        hires=Hires(fix, resolved, (prompt, negative_prompt)),
        # A1111 keeps the first pass's hashes and adds the second's (extra_networks_lora.py, is_hr_pass).
        lora_hashes={**planned.lora_hashes, **tags.hashes},
        comments=tuple(dict.fromkeys((*planned.comments, *lora_comments(tags)))),
    )


def parse_img2img(
    raw: bytes,
    *,
    settings: Settings,
    max_images: int,
    listing: Listing | None = None,
    loras: LoraListing | None = None,
    adjustable: Mapping[str, Any] = ADJUSTABLE_DEFAULTS,
    random_seed: RandomSeed | None = None,
) -> Plan:
    """Validate an img2img body, decode its images and do A1111's pixel work on them (MalformedBody, or
    A1111's own refusals)."""
    body = validate(Img2ImgBody, load_json_object(raw))
    listing = listing or only_model(settings.model)
    effective, kept = check_common(body, settings, listing, adjustable, max_images)
    init_images = body.init_images
    if init_images is None:
        raise A1111Refusal(404, "Init image not found")
    if not init_images:
        raise malformed(
            ("init_images",), "expected exactly one image, found none", kind=ProblemKind.TOO_SHORT, value=0
        )
    if len(init_images) > 1:
        raise malformed(
            ("init_images",),
            f"expected exactly one image, found {len(init_images)}",
            kind=ProblemKind.TOO_LONG,
            value=len(init_images),
        )
    refuse_if(not body.mask_round, "mask_round", "only a rounded (binary) mask is run here; send true")
    refuse_if(body.latent_mask is not None, "latent_mask", "a separate latent mask is not run here")
    refuse_if(
        body.initial_noise_multiplier not in (None, 1.0),
        "initial_noise_multiplier",
        "only 1 is run here",
    )
    refuse_if(
        body.inpainting_fill > 1,
        "inpainting_fill",
        "2 (latent noise) and 3 (latent nothing) are not run here; send 0 (fill) or 1 (original)",
    )
    if body.mask_blur is not None:
        body = body.model_copy(update={"mask_blur_x": body.mask_blur, "mask_blur_y": body.mask_blur})
    init = images.flatten(image_field(init_images[0], ("init_images", 0)))
    mask = images.binary_mask(image_field(body.mask, ("mask",))) if body.mask is not None else None
    if mask is not None and body.resize_mode == 3:
        raise malformed(
            ("resize_mode",),
            "resize_mode 3 (latent upscale) takes no mask here; use 0, 1 or 2",
            kind=ProblemKind.NOT_ALLOWED,
            value=3,
        )
    width, height = body.width, body.height
    denoise = from_strength(body.denoising_strength)
    planned = functools.partial(
        plan,
        body,
        width,
        height,
        settings=effective,
        kept=kept,
        random_seed=random_seed,
        loras=LoraLookup(loras or LoraListing(), settings.max_loras_per_request),
    )
    if mask is None:
        source = init if body.resize_mode == 3 else images.resize_image(body.resize_mode, init, width, height)
        return planned(init_image=source, denoise=denoise)
    if mask.size != init.size:
        mask = images.resize_image(0, mask, *init.size)  # our rule: a mask of another size is stretched
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    mask = images.blur_mask(mask, body.mask_blur_x, body.mask_blur_y)
    region = images.crop_region(mask, body.inpaint_full_res_padding) if body.inpaint_full_res else None
    if body.inpaint_full_res and region is None:
        # A1111: an empty mask with "only masked" falls back to plain img2img.
        source = images.resize_image(body.resize_mode, init, width, height)
        return planned(init_image=source, denoise=denoise)
    if region is not None:
        x1, y1, x2, y2 = images.expand_crop_region(region, width, height, *mask.size)
        engine_mask = images.resize_image(2, mask.crop((x1, y1, x2, y2)), width, height)
        source = images.resize_image(2, init.crop((x1, y1, x2, y2)), width, height)
        overlay = images.Overlay(images.overlay_of(init, mask), (x1, y1, x2 - x1, y2 - y1))
    else:
        engine_mask = images.resize_image(body.resize_mode, mask, width, height)
        source = images.resize_image(body.resize_mode, init, width, height)
        overlay = images.Overlay(images.overlay_of(source, images.double_mask(engine_mask)))
    if body.inpainting_fill == 0:
        source = images.fill(source, engine_mask)
    return planned(init_image=source, mask=engine_mask, denoise=denoise, overlay=overlay)


def check_common(
    body: ProcessingFields,
    settings: Settings,
    listing: Listing,
    adjustable: Mapping[str, Any],
    max_images: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rules both bodies share. Returns the changeable settings the request runs with, and those of
    its overrides that are kept after it."""
    for name in ("width", "height"):
        side = getattr(body, name)
        if side % SIZE_STEP or not SIZE_MIN <= side <= SIZE_MAX:
            raise malformed(
                (name,),
                f"{side} is not a multiple of {SIZE_STEP} from {SIZE_MIN} to {SIZE_MAX}",
                kind=ProblemKind.OUT_OF_RANGE,
                value=side,
            )
    images_asked = body.batch_size * body.n_iter
    if images_asked > max_images:
        raise malformed(
            ("n_iter",),
            f"batch_size x n_iter is {images_asked} images; this server takes at most {max_images} a request",
            kind=ProblemKind.OUT_OF_RANGE,
            value=images_asked,
        )
    refuse_if(body.subseed_strength != 0, "subseed_strength", "variation seeds are not run here; send 0")
    refuse_if(
        body.seed_resize_from_h > 0, "seed_resize_from_h", "seed resizing is not run here; send 0 or -1"
    )
    refuse_if(
        body.seed_resize_from_w > 0, "seed_resize_from_w", "seed resizing is not run here; send 0 or -1"
    )
    refuse_if(bool(body.restore_faces), "restore_faces", "no face restorer runs here")
    refuse_if(bool(body.tiling), "tiling", "tiling is not run here")
    refuse_if(body.s_min_uncond not in (None, 0.0), "s_min_uncond", "only 0 is run here")
    refuse_if(body.s_churn not in (None, 0.0), "s_churn", "churn is not run here; send 0")
    refuse_if(body.s_noise not in (None, 1.0), "s_noise", "only 1 is run here")
    refuse_if(
        body.refiner_checkpoint not in (None, "", "None", "none"),
        "refiner_checkpoint",
        "no refiner runs here",
    )
    refuse_if(body.firstpass_image is not None, "firstpass_image", "the hires fix is not run here")
    refuse_if(bool(body.comments), "comments", "comments are not taken here")
    refuse_if(bool(body.script_name), "script_name", "no scripts run here (/sdapi/v1/scripts)")
    refuse_if(bool(body.script_args), "script_args", "no scripts run here (/sdapi/v1/scripts)")
    refuse_if(bool(body.alwayson_scripts), "alwayson_scripts", "no scripts run here (/sdapi/v1/scripts)")
    refuse_if(bool(body.infotext), "infotext", "infotext is not read here; send the fields themselves")
    overrides = check_settings(
        body.override_settings or {}, ("override_settings",), settings, adjustable, listing
    )
    for index, name in enumerate(body.styles or ()):
        if name not in STYLE_PRESETS:
            raise malformed(
                ("styles", index),
                f"{shown(name)} is not a style here; the styles are: {', '.join(STYLE_PRESETS)}",
                kind=ProblemKind.NOT_ALLOWED,
                value=name,
            )
    kept = {} if body.override_settings_restore_afterwards else overrides
    return {**adjustable, **overrides}, kept


def plan(
    body: ProcessingFields,
    width: int,
    height: int,
    *,
    init_image: Image.Image | None = None,
    mask: Image.Image | None = None,
    denoise: DenoiseWindow = FULL_SCHEDULE,
    overlay: images.Overlay | None = None,
    settings: Mapping[str, Any] = ADJUSTABLE_DEFAULTS,
    kept: Mapping[str, Any] | None = None,
    random_seed: RandomSeed | None = None,
    loras: LoraLookup,
) -> Plan:
    resolved = resolve(body.sampler_name, body.sampler_index, body.scheduler)
    eta = eta_for(resolved.sampler.sampler, body.eta)
    prompt, negative_prompt = commented_out(
        styled(body.prompt, body.negative_prompt, body.styles or ()), settings
    )
    # A1111 takes the tags out of the styled prompt without its comments (its p.prompts), before emphasis
    # is parsed; the prompt it reports keeps the tags.
    tags = loras.of(prompt, "prompt", body)
    positive = parse_prompt(tags.text, "prompt", positive=True)
    negative = parse_prompt(negative_prompt, "negative_prompt", positive=False)
    seed = (random_seed or random_nonzero_seed)() if body.seed == -1 else body.seed
    request = GenerationRequest(
        prompts=(positive.weighted(),),
        negative_prompts=(negative.weighted(),) if has_text(negative) else (),
        width=width,
        height=height,
        seed=seed,
        steps=body.steps,
        cfg_scale=body.cfg_scale,
        sampler=resolved.sampler.sampler,
        denoise_from=denoise.denoise_from,
        denoise_to=denoise.denoise_to,
        init_image=init_image,
        mask=mask,
        samples=body.batch_size * body.n_iter,
        sigma_schedule=resolved.schedule,
        eta=eta,
        first_encoder_layer=first_encoder_layer(settings),
        checkpoint=settings.get("sd_model_checkpoint"),
        loras=tags.loras,
    )
    return Plan(
        request,
        body,
        resolved,
        (prompt, negative_prompt),
        seed,
        overlay,
        settings,
        kept or {},
        lora_hashes=tags.hashes,
        comments=lora_comments(tags),
    )


def lora_comments(tags: PromptLoras) -> tuple[str, ...]:
    """A1111's comment for the LoRAs a prompt names that are not here (networks.py load_networks)."""
    return (f"Lora not found: {', '.join(tags.not_found)}",) if tags.not_found else ()


def has_text(prompt: ParsedPrompt) -> bool:
    """A1111 encodes an empty negative prompt as zeros (SDXL), which is the engine's default."""
    return prompt.text != "" or any(span.starts_chunk for span in prompt.spans)


def styled(prompt: str, negative_prompt: str, styles: list[str] | tuple[str, ...]) -> tuple[str, str]:
    """A1111's apply_styles_to_prompt with our style presets: a template's `{prompt}` takes the prompt,
    and each style's negative terms join the negative prompt after a comma."""
    for name in styles:
        style = STYLE_PRESETS[name]
        prompt = style.template.replace("{prompt}", prompt)
        negative_prompt = ", ".join(part for part in (negative_prompt, style.negative) if part)
    return prompt, negative_prompt


def commented_out(prompts: tuple[str, str], settings: Mapping[str, Any]) -> tuple[str, str]:
    """The styled prompt and negative prompt without their comments where `enable_prompt_comments` is on:
    A1111's Comments script runs on them after the styles and before the extra networks are read
    (modules/processing.py, process_images_inner: setup_prompts, then scripts.process, then each batch's
    parse_extra_network_prompts)."""
    if not settings["enable_prompt_comments"]:
        return prompts
    prompt, negative_prompt = prompts
    return strip_comments(prompt), strip_comments(negative_prompt)


def eta_for(sampler: Sampler, eta: float | None) -> float | None:
    """What `eta` means for this sampler: its value for DDIM and DPM++ 2S a; for Euler a and DPM2 a only 1
    (their ancestral noise); no effect on the deterministic samplers, as in A1111."""
    if eta is None:
        return None
    if sampler in SAMPLERS_WITH_ETA:
        return eta
    if sampler in (Sampler.EULER_ANCESTRAL, Sampler.DPM_2_ANCESTRAL) and not math.isclose(eta, 1.0):
        raise malformed(
            ("eta",),
            f"{shown(eta)}: this sampler always adds its ancestral noise at eta 1 here; send 1 or null",
            kind=ProblemKind.NOT_ALLOWED,
            value=eta,
        )
    return None


def image_field(value: str, location: Location) -> Image.Image:
    """A base64 image, with or without A1111's `data:image/...;base64,` prefix; one that does not decode is
    A1111's own refusal (api.py, decode_base64_to_image)."""
    if value.startswith("data:image/"):
        value = value.split(";", 1)[-1].split(",", 1)[-1]
    try:
        return decode_base64_field(value, location, error_name="invalid_image")
    except MalformedBody:
        raise A1111Refusal(500, "Invalid encoded image") from None


def refuse_if(condition: bool, field: str, reason: str) -> None:
    if condition:
        raise malformed((field,), reason, kind=ProblemKind.NOT_ALLOWED)
