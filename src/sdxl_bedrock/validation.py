"""Request bodies of both faces -> the wire-neutral GenerationRequest, with one set of rules.

Bedrock's InvokeModel body (`parse_bedrock_body`) and Stability's v1 bodies (`parse_stability_json` for
text-to-image, `parse_stability_form` for the multipart image-to-image and masking forms) are checked by
the same pydantic fields and the same rules across fields; only the limits of `steps` and `samples`, the
way the mode is chosen, and the way images arrive (base64 or file) differ.

Bedrock checks the body with a JSON-schema validator and reports a JSON pointer to the field
(`#/cfg_scale: 40.0 is not less or equal to 35`); every MalformedBody raised here carries only that
middle part. The HTTP layer words it for its face: Bedrock adds "Malformed input request: " and the
closing sentence, Stability replaces the pointer with the field's name (api/errors.py).
Where several fields are wrong we report the first, in the order of the fields below, so that the
message always names one field.

Our rules where neither Bedrock nor Stability says:
- A prompt text may be empty, as long as some prompt's text is not; at least one prompt needs a weight
  above 0 (weight 0 is allowed and has no effect; a negative weight makes a negative prompt).
- Integers must be written as integers: `30.0` for `steps` is "expected type: Integer, found: Number";
  `true` is never a number; `null` is never an absent field.
- `height`/`width` belong to text-to-image: given with `init_image` they are extraneous keys, because the
  init image's size decides the output size. Image-to-image keys without `init_image` are an error
  ("required key [init_image] not found").
- The fields of the init-image mode not chosen (`image_strength` under STEP_SCHEDULE, `step_schedule_*`
  under IMAGE_STRENGTH) are checked for type and bounds and then ignored, as Stability does: a client
  naming its mode explicitly may still send the other mode's defaults.
- `mask_image` needs `mask_source`; with INIT_IMAGE_ALPHA it is an extraneous key (two masks would
  contradict each other). A mask image's alpha is ignored: its grey level is the mask.

Our rules for the Stability face, where Stability's documents are silent:
- text-to-image defaults to 1024x1024 (Stability's documented 512 default is not an SDXL size).
- Each endpoint takes only its own fields, as in Stability's OpenAPI schemas: `height`/`width` only on
  text-to-image, the init-image-mode fields only on image-to-image, `mask_source`/`mask_image` only on
  masking. Masking has no strength: the masked pixels are generated afresh (denoised from pure noise).
- Form values are text and are read leniently: `"30"` and `"30.0"` are the Integer 30, `"abc"` is no number.
  `text_prompts[i][text]` / `[weight]` become prompts in the order of `i`; an error names a prompt by its
  position in that order. A repeated form key keeps its last value, as Stability documents for prompts.
  `extras` is a JSON object written as text.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from sdxl_bedrock.codecs import decode_base64_image, decode_image_bytes
from sdxl_bedrock.errors import MalformedBody
from sdxl_bedrock.schema import DEFAULT_SAMPLER, GenerationRequest, Sampler, WeightedPrompt

StylePreset = Literal[
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
]
STYLE_PRESETS: tuple[str, ...] = get_args(StylePreset)
ClipGuidancePreset = Literal["FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"]
InitImageMode = Literal["IMAGE_STRENGTH", "STEP_SCHEDULE"]
MaskSource = Literal["MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA"]

MAX_SEED = 4294967295
# (width, height), in the order Stability's message lists them.
SDXL_V1_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (1216, 832),
    (1344, 768),
    (1536, 640),
    (640, 1536),
    (768, 1344),
    (832, 1216),
    (896, 1152),
)
RELAXED_SIZE_STEP = 64
RELAXED_SIZE_MAX = 2048

# A real body nests 3 deep and holds a few dozen elements; these bounds only stop hostile bodies before
# json.loads recurses into them or allocates millions of objects.
MAX_JSON_DEPTH = 32
MAX_JSON_ELEMENTS = 10_000

_IMAGE_TO_IMAGE_KEYS = (
    "init_image_mode",
    "image_strength",
    "step_schedule_start",
    "step_schedule_end",
    "mask_source",
    "mask_image",
)
_TEXT_TO_IMAGE_KEYS = ("height", "width")

_STRING_FIELDS = (
    "sampler",
    "style_preset",
    "clip_guidance_preset",
    "init_image",
    "init_image_mode",
    "mask_source",
    "mask_image",
)
# Stability sends images as multipart files; every other form value is text.
_FORM_FILES = ("init_image", "mask_image")
_FORM_PROMPT_KEY = re.compile(r"text_prompts\[(\d{1,6})\]\[(text|weight)\]")

Prompts = tuple[WeightedPrompt, ...]
RandomSeed = Callable[[], int]


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator(*_STRING_FIELDS, mode="before", check_fields=False)
    @classmethod
    def _null_is_not_a_string(cls, value: object) -> object:
        # Before the enum check, so that null reads as a wrong type, as in JSON schema; and None stands for
        # "absent" in the fields without a default.
        if value is None:
            raise PydanticCustomError("string_type", "Input should be a valid string")
        return value


class _TextPrompt(_Fields):
    text: Annotated[str, Field(max_length=2000)]
    weight: float = 1.0


class _GenerationFields(_Fields):
    """What every face and mode takes: prompts and sampling; `steps` and `samples` with Bedrock's limits."""

    text_prompts: Annotated[list[_TextPrompt], Field(min_length=1, max_length=10)]
    cfg_scale: Annotated[float, Field(ge=0, le=35)] = 7.0
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    steps: Annotated[int, Field(ge=10, le=50)] = 30
    samples: Annotated[int, Field(ge=1, le=1)] = 1
    sampler: Annotated[Sampler, Strict(False)] = DEFAULT_SAMPLER  # lax: the JSON string becomes the enum
    style_preset: StylePreset | None = None
    clip_guidance_preset: ClipGuidancePreset = "NONE"
    extras: dict[str, Any] = Field(default_factory=dict)


class _SizeFields(_Fields):
    height: int = 1024
    width: int = 1024


class _InitImageModeFields(_Fields):
    init_image_mode: InitImageMode = "IMAGE_STRENGTH"
    image_strength: Annotated[float, Field(ge=0, le=1)] = 0.35
    step_schedule_start: Annotated[float, Field(ge=0, le=1)] = 0.65
    step_schedule_end: Annotated[float, Field(ge=0, le=1)] = 0.0


class _MaskSourceField(_Fields):
    mask_source: MaskSource | None = None


class _BedrockBody(_MaskSourceField, _InitImageModeFields, _SizeFields, _GenerationFields):
    """One shape for the three modes: the fields given choose the mode. Images arrive as base64."""

    init_image: str | None = None
    mask_image: str | None = None


class _StabilityGenerationFields(_GenerationFields):
    steps: Annotated[int, Field(ge=10, le=150)] = 50
    samples: Annotated[int, Field(ge=1, le=10)] = 1


class _StabilityTextToImage(_SizeFields, _StabilityGenerationFields):
    pass


class _StabilityImageToImage(_InitImageModeFields, _StabilityGenerationFields):
    pass


class _StabilityMasking(_MaskSourceField, _StabilityGenerationFields):
    mask_source: MaskSource


FieldsT = TypeVar("FieldsT", bound=_GenerationFields)


def parse_bedrock_body(
    raw: bytes, *, relaxed_sizes: bool = False, random_seed: RandomSeed | None = None
) -> GenerationRequest:
    """Validate an InvokeModel body for SDXL 1.0 and resolve it into one GenerationRequest.

    `relaxed_sizes` accepts any multiple of 64 from 64 to 2048 instead of the nine SDXL sizes.
    `random_seed` picks the seed when the body asks for a random one (seed 0 or none).
    Raises MalformedBody naming the field; cheap checks run before any image is decoded.
    """
    body = _validate_fields(_BedrockBody, _load_json_object(raw))
    given = body.model_fields_set
    _check_mode_keys(body, given)
    _check_mask_keys(body.mask_source, mask_image_given="mask_image" in given)
    prompts = _split_prompts(body.text_prompts)
    if body.init_image is None:
        check_dimensions(body.width, body.height, relaxed=relaxed_sizes)
        return _generation_request(body, prompts, body.width, body.height, random_seed=random_seed)
    denoise = _denoise_range(body)
    init_image = _decode_field(body.init_image, "init_image", kind="invalid_image")
    check_dimensions(*init_image.size, relaxed=relaxed_sizes, field="init_image")
    mask_image = (
        _decode_field(body.mask_image, "mask_image", kind="invalid_mask_image")
        if body.mask_image is not None
        else None
    )
    return _generation_request(
        body,
        prompts,
        *init_image.size,
        denoise=denoise,
        init_image=init_image,
        mask=_mask(body.mask_source, init_image, mask_image),
        random_seed=random_seed,
    )


def parse_stability_json(
    raw: bytes, *, relaxed_sizes: bool = False, random_seed: RandomSeed | None = None
) -> GenerationRequest:
    """Validate a Stability v1 text-to-image JSON body (`steps` 10..150, `samples` 1..10)."""
    body = _validate_fields(_StabilityTextToImage, _load_json_object(raw))
    prompts = _split_prompts(body.text_prompts)
    check_dimensions(body.width, body.height, relaxed=relaxed_sizes)
    return _generation_request(body, prompts, body.width, body.height, random_seed=random_seed)


def parse_stability_form(
    fields: Mapping[str, str],
    files: Mapping[str, bytes],
    *,
    masking: bool,
    relaxed_sizes: bool = False,
    random_seed: RandomSeed | None = None,
) -> GenerationRequest:
    """Validate a Stability v1 image-to-image form, or with `masking` an image-to-image/masking form.

    `fields` are the text values by form key (`text_prompts[0][text]`, `cfg_scale`, ...); `files` the
    uploaded files' bytes by form key (`init_image`, and `mask_image` for masking).
    """
    _check_form_files(fields, files, _FORM_FILES if masking else ("init_image",))
    document = _form_document(fields)
    if masking:
        return _masking_form(document, files, relaxed_sizes=relaxed_sizes, random_seed=random_seed)
    return _image_to_image_form(document, files, relaxed_sizes=relaxed_sizes, random_seed=random_seed)


def _image_to_image_form(
    document: dict[str, Any],
    files: Mapping[str, bytes],
    *,
    relaxed_sizes: bool,
    random_seed: RandomSeed | None,
) -> GenerationRequest:
    body = _validate_fields(_StabilityImageToImage, document, lax=True)
    prompts = _split_prompts(body.text_prompts)
    denoise = _denoise_range(body)
    init_image = _decode_file(files["init_image"], "init_image", kind="invalid_image")
    check_dimensions(*init_image.size, relaxed=relaxed_sizes, field="init_image")
    return _generation_request(
        body, prompts, *init_image.size, denoise=denoise, init_image=init_image, random_seed=random_seed
    )


def _masking_form(
    document: dict[str, Any],
    files: Mapping[str, bytes],
    *,
    relaxed_sizes: bool,
    random_seed: RandomSeed | None,
) -> GenerationRequest:
    body = _validate_fields(_StabilityMasking, document, lax=True)
    _check_mask_keys(body.mask_source, mask_image_given="mask_image" in files)
    prompts = _split_prompts(body.text_prompts)
    init_image = _decode_file(files["init_image"], "init_image", kind="invalid_image")
    check_dimensions(*init_image.size, relaxed=relaxed_sizes, field="init_image")
    mask_image = (
        _decode_file(files["mask_image"], "mask_image", kind="invalid_mask_image")
        if "mask_image" in files
        else None
    )
    return _generation_request(
        body,
        prompts,
        *init_image.size,
        init_image=init_image,
        mask=_mask(body.mask_source, init_image, mask_image),
        random_seed=random_seed,
    )


def _generation_request(
    body: _GenerationFields,
    prompts: tuple[Prompts, Prompts],
    width: int,
    height: int,
    *,
    denoise: tuple[float, float] = (1.0, 0.0),
    init_image: Image.Image | None = None,
    mask: Image.Image | None = None,
    random_seed: RandomSeed | None,
) -> GenerationRequest:
    positive, negative = prompts
    return GenerationRequest(
        prompts=positive,
        negative_prompts=negative,
        width=width,
        height=height,
        seed=body.seed or (random_seed or _random_nonzero_seed)(),
        steps=body.steps,
        cfg_scale=body.cfg_scale,
        sampler=body.sampler,
        denoise_from=denoise[0],
        denoise_to=denoise[1],
        init_image=init_image.convert("RGB") if init_image is not None else None,
        mask=mask,
        style_preset=body.style_preset,
        clip_guidance_preset=body.clip_guidance_preset,
        samples=body.samples,
        extras=body.extras,
    )


def _random_nonzero_seed() -> int:
    return secrets.randbelow(MAX_SEED) + 1


def check_dimensions(width: int, height: int, *, relaxed: bool, field: str | None = None) -> None:
    """The output size rule: the nine SDXL 1.0 sizes, or with `relaxed` any multiple of 64 up to 2048.

    `field` is the key to blame; without one, `width` if the width alone is wrong, else `height`.
    """
    if relaxed:
        width_ok, height_ok = _relaxed_side_ok(width), _relaxed_side_ok(height)
        if width_ok and height_ok:
            return
        kind = "invalid_image_dimensions"
        message = (
            f"the allowed dimensions are multiples of {RELAXED_SIZE_STEP} between {RELAXED_SIZE_STEP} "
            f"and {RELAXED_SIZE_MAX}, but we received {width}x{height}"
        )
    else:
        if (width, height) in SDXL_V1_SIZES:
            return
        width_ok = any(width == allowed_width for allowed_width, _ in SDXL_V1_SIZES)
        kind = "invalid_sdxl_v1_dimensions"
        allowed = ", ".join(f"{w}x{h}" for w, h in SDXL_V1_SIZES)
        message = (
            f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {allowed}, "
            f"but we received {width}x{height}"
        )
    raise MalformedBody(message, field=field or ("height" if width_ok else "width"), kind=kind)


def _relaxed_side_ok(side: int) -> bool:
    return RELAXED_SIZE_STEP <= side <= RELAXED_SIZE_MAX and side % RELAXED_SIZE_STEP == 0


# ---- JSON ----------------------------------------------------------------------------------------------

_QUOTE_OR_STRUCTURE = re.compile(r'["\[\]{},]')
_JSON_READER = json.JSONDecoder()


def _load_json_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("#: the body is not valid UTF-8") from None
    _check_json_bounds(text)
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object_without_duplicate_keys,
            parse_constant=_reject_non_finite,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as error:
        raise MalformedBody(f"#: the body is not valid JSON: {error}") from None
    except ValueError:  # an integer beyond Python's digit limit for int()
        raise MalformedBody("#: the body holds a number too long to read") from None
    if not isinstance(document, dict):
        raise MalformedBody(f"#: expected type: JSONObject, found: {_json_type(document)}")
    return document


def _check_json_bounds(text: str) -> None:
    """Refuse deep nesting and huge element counts before json.loads recurses or allocates.

    Walks only strings, brackets and commas (each string, container and comma counts as an element, which
    also bounds this loop); on malformed input it stops where json.loads will stop too.
    """
    depth = elements = 0
    position = 0
    while match := _QUOTE_OR_STRUCTURE.search(text, position):
        token = match.group()
        if token == '"':
            try:
                position = _JSON_READER.raw_decode(text, match.start())[1]
            except json.JSONDecodeError:
                return
        else:
            position = match.end()
        if token in "]}":
            depth -= 1
            if depth < 0:
                return
            continue
        elements += 1
        if token in "[{":
            depth += 1
        if depth > MAX_JSON_DEPTH:
            raise MalformedBody(f"#: the body nests deeper than {MAX_JSON_DEPTH} levels")
        if elements > MAX_JSON_ELEMENTS:
            raise MalformedBody(f"#: the body holds more than {MAX_JSON_ELEMENTS} JSON elements")


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        key = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise MalformedBody(f"#: duplicate key [{_shown(key)}] is not permitted")
    return document


def _reject_non_finite(literal: str) -> float:
    raise MalformedBody(f"#: {literal} is not a valid JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise MalformedBody(f"#: {_shown(literal)} is out of the range of a JSON number")
    return value


# ---- schema errors in Bedrock's wording (Stability's face restates the pointer as a name) ------------------

_EXPECTED_TYPES = {
    "int_type": "Integer",
    "float_type": "Number",
    "string_type": "String",
    "bool_type": "Boolean",
    "list_type": "JSONArray",
    "dict_type": "JSONObject",
    "model_type": "JSONObject",
}
_UNREADABLE_TEXT = {
    "int_parsing": "an Integer",
    "int_parsing_size": "an Integer in range",
    "float_parsing": "a Number",
    "finite_number": "a finite Number",
}
# Exact types: the values come from json.loads, and True must not read as an Integer.
_JSON_TYPE_NAMES: dict[type, str] = {
    bool: "Boolean",
    int: "Integer",
    float: "Number",
    str: "String",
    list: "JSONArray",
    dict: "JSONObject",
    type(None): "Null",
}


def _validate_fields(model: type[FieldsT], document: dict[str, Any], *, lax: bool = False) -> FieldsT:
    """`lax` for form values, which are all text: `"30"` then reads as the Integer 30."""
    try:
        # None leaves the models' own strictness (and the sampler's lax enum) in force.
        return model.model_validate(document, strict=False if lax else None)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise MalformedBody(_bedrock_message(first), field="/".join(map(str, first["loc"]))) from None


def _bedrock_message(error: ErrorDetails) -> str:
    """One pydantic error in the words of Bedrock's JSON-schema validator, JSON pointer first."""
    location, value, limits = error["loc"], error["input"], error.get("ctx", {})
    match error["type"]:
        case "extra_forbidden":
            return f"{_pointer(location[:-1])}: extraneous key [{_shown(location[-1])}] is not permitted"
        case "missing":
            return f"{_pointer(location[:-1])}: required key [{location[-1]}] not found"
        case kind if kind in _EXPECTED_TYPES:
            detail = f"expected type: {_EXPECTED_TYPES[kind]}, found: {_json_type(value)}"
        case kind if kind in _UNREADABLE_TEXT:  # form values, read as text
            detail = f"{_shown(value)} is not {_UNREADABLE_TEXT[kind]}"
        case "greater_than_equal":
            detail = f"{_shown(value)} is not greater or equal to {_limit(limits['ge'])}"
        case "less_than_equal":
            detail = f"{_shown(value)} is not less or equal to {_limit(limits['le'])}"
        case "string_too_long":
            detail = f"expected maxLength: {limits['max_length']}, actual: {len(value)}"
        case "too_short":
            detail = f"expected minimum item count: {limits['min_length']}, found: {limits['actual_length']}"
        case "too_long":
            detail = f"expected maximum item count: {limits['max_length']}, found: {limits['actual_length']}"
        case "string_unicode":  # a lone surrogate from a \ud800 escape, which no encoder can take
            detail = "not a valid Unicode string (unpaired surrogate)"
        case "enum" | "literal_error":
            detail = f"{_shown(value)} is not a valid enum value"
        case _:
            detail = error["msg"]
    return f"{_pointer(location)}: {detail}"


def _pointer(location: tuple[int | str, ...]) -> str:
    return "#" + "".join(f"/{part}" for part in location)


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _limit(bound: float) -> str:
    # pydantic widens the bounds of a float field to floats; Bedrock quotes `35`, not `35.0`.
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _shown(value: object, limit: int = 100) -> str:
    """A client's value as a message quotes it, cut short when long."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- the rules across fields ---------------------------------------------------------------------------


def _check_mode_keys(body: _BedrockBody, given: set[str]) -> None:
    """Bedrock's body chooses its mode by its fields: they must not mix text- and image-to-image."""
    if "init_image" in given:
        for key in _TEXT_TO_IMAGE_KEYS:
            if key in given:
                raise MalformedBody(f"#: extraneous key [{key}] is not permitted", field=key)
    else:
        for key in _IMAGE_TO_IMAGE_KEYS:
            if key in given:
                raise MalformedBody("#: required key [init_image] not found", field="init_image")


def _check_mask_keys(mask_source: MaskSource | None, *, mask_image_given: bool) -> None:
    if mask_image_given and mask_source is None:
        raise MalformedBody(
            "#: required key [mask_source] not found", field="mask_source", kind="invalid_mask_image"
        )
    needs_mask_image = mask_source in ("MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK")
    if needs_mask_image and not mask_image_given:
        raise MalformedBody(
            "#: required key [mask_image] not found", field="mask_image", kind="invalid_mask_image"
        )
    if mask_source == "INIT_IMAGE_ALPHA" and mask_image_given:
        raise MalformedBody(
            "#: extraneous key [mask_image] is not permitted", field="mask_image", kind="invalid_mask_image"
        )


def _split_prompts(prompts: list[_TextPrompt]) -> tuple[Prompts, Prompts]:
    """Positive prompts (weight >= 0) and negative ones (weight < 0, kept as |weight|)."""
    if not any(prompt.text for prompt in prompts):
        raise MalformedBody(
            "#/text_prompts: at least one prompt must have a non-empty text", field="text_prompts"
        )
    if not any(prompt.weight > 0 for prompt in prompts):
        raise MalformedBody(
            "#/text_prompts: at least one prompt must have a weight above 0", field="text_prompts"
        )
    positive = tuple(WeightedPrompt(p.text, abs(p.weight)) for p in prompts if p.weight >= 0)
    negative = tuple(WeightedPrompt(p.text, abs(p.weight)) for p in prompts if p.weight < 0)
    return positive, negative


def _denoise_range(body: _InitImageModeFields) -> tuple[float, float]:
    if body.init_image_mode == "IMAGE_STRENGTH":
        return 1.0 - body.image_strength, 0.0
    start, end = body.step_schedule_start, body.step_schedule_end
    if end >= start:
        raise MalformedBody(
            f"#/step_schedule_end: {_shown(end)} is not less than {_shown(start)}", field="step_schedule_end"
        )
    return start, end


def _mask(
    mask_source: MaskSource | None, init_image: Image.Image, mask_image: Image.Image | None
) -> Image.Image | None:
    """The mask as an "L" image, 255 where a pixel is to be regenerated; None when there is none.

    `mask_image` is given exactly when `mask_source` needs one (`_check_mask_keys` made sure).
    """
    if mask_source is None:
        return None
    if mask_source == "INIT_IMAGE_ALPHA":
        if init_image.mode != "RGBA":
            raise MalformedBody(
                "#/init_image: mask_source INIT_IMAGE_ALPHA needs an image with an alpha channel",
                field="init_image",
                kind="invalid_mask_image",
            )
        return ImageOps.invert(init_image.getchannel("A"))
    assert mask_image is not None
    if mask_image.size != init_image.size:
        raise MalformedBody(
            f"#/mask_image: the mask is {mask_image.width}x{mask_image.height} but init_image is "
            f"{init_image.width}x{init_image.height}; they must be the same size",
            field="mask_image",
            kind="invalid_mask_image",
        )
    grey = mask_image.convert("L")
    return grey if mask_source == "MASK_IMAGE_WHITE" else ImageOps.invert(grey)


def _decode_field(value: str, field: str, *, kind: str) -> Image.Image:
    try:
        return decode_base64_image(value, field)
    except MalformedBody as error:
        raise MalformedBody(f"#/{error.message}", field=field, kind=kind) from None


def _decode_file(data: bytes, field: str, *, kind: str) -> Image.Image:
    try:
        return decode_image_bytes(data, field)
    except MalformedBody as error:
        raise MalformedBody(f"#/{error.message}", field=field, kind=kind) from None


# ---- Stability's multipart forms -----------------------------------------------------------------------


def _check_form_files(
    fields: Mapping[str, str], files: Mapping[str, bytes], accepted: tuple[str, ...]
) -> None:
    for name in files:
        if name not in accepted:
            raise MalformedBody(f"#: extraneous file [{_shown(name)}] is not permitted", field=name)
    for name in _FORM_FILES:
        if name in fields:
            raise MalformedBody(f"#/{name}: expected a file, found a text field", field=name)
    if "init_image" not in files:
        raise MalformedBody("#: required key [init_image] not found", field="init_image")


def _form_document(fields: Mapping[str, str]) -> dict[str, Any]:
    """The form's text values shaped like the JSON body: `text_prompts[i][text]` keys become a list."""
    document: dict[str, Any] = {}
    prompts: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        if prompt_key := _FORM_PROMPT_KEY.fullmatch(key):
            prompts.setdefault(int(prompt_key[1]), {})[prompt_key[2]] = value
        elif key == "extras":
            document[key] = _form_extras(value)
        else:
            document[key] = value
    if prompts:
        # A plain `text_prompts` value, if any, stays and fails as a wrong type.
        document.setdefault("text_prompts", [prompts[index] for index in sorted(prompts)])
    return document


def _form_extras(text: str) -> dict[str, Any]:
    try:
        return _load_json_object(text.encode())
    except MalformedBody as error:
        detail = error.message.removeprefix("#: ").replace("the body", "the value")
        raise MalformedBody(f"#/extras: {detail}", field="extras") from None
