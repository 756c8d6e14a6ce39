"""OpenAI Images API request bodies -> GenerationRequest: the JSON of /v1/images/generations and the multipart
forms of /v1/images/edits and /v1/images/variations.

The pydantic models check each field and document it (their JSON schema is the OpenAPI description); the
functions apply the rules across fields and the tables of mapping.py, so the `GenerationRequest` they
build holds no OpenAI name. Problems are worded as OpenAI words them (errors.py).

`model` picks a contract (mapping.py): this server's own id (or none) takes the fields below; OpenAI's ids
(`dall-e-2`, `dall-e-3`, `gpt-image-1`, `gpt-image-1-mini`, `gpt-image-1.5`, unless the server runs with
`--strict-model-names`) and `--model-alias` names for them each take what OpenAI's reference gives that
model: its sizes, its `n` bound, which of `quality`, `style`, `response_format`, `output_format`,
`output_compression`, `background` and `moderation` it takes (a parameter it does not take is OpenAI's
`Unknown parameter`), its defaults (DALL·E answers `url`, DALL·E 3 is `vivid`), whether it edits or makes
variations. A size SDXL does not make well is made at the SDXL size of the nearest aspect ratio and resized
to the size asked for (on a server with `--relaxed-sizes`, a size its rule takes is made as it is).

Our rules where OpenAI's documents are silent or speak of other models:
- `null` for an optional field of the JSON body means absent, as OpenAI's SDKs send it.
- Form values are text and read leniently: `"2"` is the integer 2. A repeated text field keeps its last value.
- `size`: the nine SDXL 1.0 sizes as `WxH` and `auto` (1024x1024 for a generation, the image's own size for an
  edit or a variation); on a server started with `--relaxed-sizes`, any multiple of 64 from 64 to 2048 as on
  the other faces. An edit or a variation with an explicit `size` other than the image's resizes the image
  (and the mask) to it, stretching it if the aspect differs; without one the image must have such a size.
- Edits take one image (`image`, or a single `image[]`), GPT image models up to 16: each image is edited on
  its own with the prompt (SDXL reads no image as a reference), at the first image's output size, `n`
  images each, in the order sent; the mask applies to the first (OpenAI's rule). An image's own
  transparency is no mask.
- `mask`: a PNG with an alpha channel the size of the image; its fully transparent pixels (alpha 0) are
  regenerated, every other pixel is kept.
- `seed` (ours) 0..4294967295, 0 or absent picks one at random; the images of a request have the seeds
  seed, seed + 1, ... (each reported in `data[i].seed`). `strength` (ours) 0..1 for edits and variations.
- `output_compression` is the JPEG / WebP encoder's quality (100, the default, is the best); PNG is
  lossless, so it takes only 100 there, as OpenAI does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from sdxl_bedrock.api.openai.errors import ModelNotFound
from sdxl_bedrock.api.openai.mapping import (
    BACKGROUNDS,
    CFG_SCALE,
    DEFAULT_COMPRESSION,
    DEFAULT_QUALITY,
    EDIT_STRENGTH,
    MASKED_EDIT_STRENGTH,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MODEL_ID,
    MODERATIONS,
    OPENAI_MODELS,
    OURS,
    OUTPUT_FORMATS,
    QUALITY_REPORTED,
    QUALITY_STEPS,
    RESPONSE_FORMATS,
    SAMPLER,
    STYLES,
    UNSUPPORTED_PARAMETERS,
    VARIATION_STRENGTH,
    Contract,
    OutputFormat,
    ReportedQuality,
)
from sdxl_bedrock.api.validation import (
    MAX_SEED,
    RELAXED_SIZE_MAX,
    RELAXED_SIZE_STEP,
    SDXL_V1_SIZES,
    check_dimensions,
    load_json_object,
    random_nonzero_seed,
    resized,
    shown,
)
from sdxl_bedrock.codecs import decode_image_bytes
from sdxl_bedrock.config import Settings, checkpoint_name
from sdxl_bedrock.errors import MalformedBody, Problem, ProblemKind
from sdxl_bedrock.library import Listing, UnknownCheckpoint, alias_target
from sdxl_bedrock.schema import GenerationRequest, LoraUse, WeightedPrompt
from sdxl_bedrock.strength import from_strength

if TYPE_CHECKING:
    QualityName: TypeAlias = str
    StyleName: TypeAlias = str
    ResponseFormat: TypeAlias = str
    Background: TypeAlias = str
    Moderation: TypeAlias = str
else:
    # The enumerations, from the tables themselves: a name is accepted exactly when it resolves.
    QualityName = Literal[tuple(QUALITY_STEPS)]
    StyleName = Literal[tuple(STYLES)]
    ResponseFormat = Literal[RESPONSE_FORMATS]
    Background = Literal[BACKGROUNDS]
    Moderation = Literal[MODERATIONS]

RandomSeed = Callable[[], int]
ModelT = TypeVar("ModelT", bound=BaseModel)

AUTO = "auto"
DEFAULT_SIZE = (1024, 1024)
SIZE_TEXT = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Files each form takes; `image[]` is how OpenAI's SDKs name `image` when it is sent as a list.
EDIT_FILES = ("image", "image[]", "mask")
VARIATION_FILES = ("image",)
IMAGE_FILES = ("image", "image[]")

_SIZE_RULE = (
    "`auto` or one of "
    + ", ".join(f"{width}x{height}" for width, height in SDXL_V1_SIZES)
    + f"; on a server started with `--relaxed-sizes`, any WIDTHxHEIGHT with each side a multiple of "
    f"{RELAXED_SIZE_STEP} from {RELAXED_SIZE_STEP} to {RELAXED_SIZE_MAX}."
)


# ---- the fields ------------------------------------------------------------------------------------------


class StrictFields(BaseModel):
    """JSON's types as they are (no coercion, no NaN), no unknown parameter."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Prompt = Annotated[
    str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to draw (1..4000 characters).")
]
Strength = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="Ours: how far the result departs from the image, the fraction of the noise schedule "
        "run (1 regenerates from noise, 0 returns the image).",
    ),
]


class SharedFields(StrictFields):
    """What generations, edits and variations all take."""

    model: Annotated[
        str | None,
        Field(
            description=f"`{MODEL_ID}` (or absent), or one of OpenAI's ids, each with its own contract "
            "(docs/API.md). Another id: 404."
        ),
    ] = None
    n: Annotated[int, Field(ge=1, le=MAX_IMAGES, description="How many images (default 1).")] | None = None
    size: Annotated[str, Field(max_length=11, description=_SIZE_RULE)] | None = None
    response_format: (
        Annotated[
            ResponseFormat,
            Field(
                description="b64_json (the default) or url: the image is served by this server for an hour."
            ),
        ]
        | None
    ) = None
    user: Annotated[str | None, Field(description="Logged as an opaque id (a keyed hash); never stored.")] = (
        None
    )
    seed: (
        Annotated[
            int,
            Field(
                ge=0,
                le=MAX_SEED,
                description="Ours: 0 or absent picks a random seed; image i gets seed + i, reported as its "
                "`seed`.",
            ),
        ]
        | None
    ) = None


class OutputFields(StrictFields):
    """What generations and edits take besides: the steps and the encoding."""

    quality: (
        Annotated[
            QualityName,
            Field(
                description="Sampler steps: low 15, medium 30, high 50; auto (the default) and standard 30, "
                "hd 50."
            ),
        ]
        | None
    ) = None
    output_format: Annotated[OutputFormat, Field(description="png (the default), jpeg or webp.")] | None = (
        None
    )
    output_compression: (
        Annotated[
            int,
            Field(
                ge=0,
                le=100,
                description="The jpeg or webp encoder's quality (default 100); png takes only 100.",
            ),
        ]
        | None
    ) = None
    background: Annotated[Background, Field(description="Images are opaque: auto or opaque.")] | None = None
    safety_identifier: Annotated[str | None, Field(description="As `user`.")] = None
    stream: Annotated[bool | None, Field(description="Only false: there is no streaming here.")] = None


class GenerationBody(OutputFields, SharedFields):
    """POST /v1/images/generations."""

    prompt: Prompt
    style: (
        Annotated[
            StyleName,
            Field(
                description="vivid (the `enhance` style preset), natural (none), or a style preset's name."
            ),
        ]
        | None
    ) = None
    moderation: (
        Annotated[Moderation, Field(description="Only auto: this server's content filter.")] | None
    ) = None


class EditForm(OutputFields, SharedFields):
    """POST /v1/images/edits (the image and the mask arrive as files)."""

    prompt: Prompt
    strength: Annotated[Strength, Field(description="Default 0.75; 1 with a mask.")] | None = None


class VariationForm(SharedFields):
    """POST /v1/images/variations (the image arrives as a file)."""

    strength: Annotated[Strength, Field(description="Default 0.6.")] | None = None


# ---- the parsed request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """How the images go back: `response_format` b64_json or url, the file format, the encoder's quality,
    and `resize_to`, the size asked for where the images are made at another (Lanczos)."""

    response_format: str = "b64_json"
    output_format: OutputFormat = "png"
    compression: int = DEFAULT_COMPRESSION
    resize_to: tuple[int, int] | None = None


@dataclass(frozen=True)
class ModelNames:
    """The model ids this wire takes, the contract of each (mapping.py) and the checkpoint of each:
    `aliases` map names to the model library's checkpoints; `checkpoints` are the library's names (each
    an id too, with this server's contract); `checkpoint` is the default one, which every other id means."""

    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    strict: bool = False
    checkpoint: str = "tiny"
    checkpoints: tuple[str, ...] = ()
    adapters: Mapping[str, tuple[LoraUse, ...]] = dataclasses.field(default_factory=dict)  # by alias

    @classmethod
    def of(cls, settings: Settings, listing: Listing | None = None) -> ModelNames:
        aliases, adapters = {}, {}
        for alias, given in settings.model_aliases.items():
            with contextlib.suppress(UnknownCheckpoint, ValueError):  # its checkpoint left the library since
                target = alias_target(given)
                aliases[alias] = listing.find(target.checkpoint).name if listing else target.checkpoint
                adapters[alias] = target.loras
        if listing is None:
            return cls(
                aliases, settings.strict_model_names, checkpoint_name(settings.model), adapters=adapters
            )
        return cls(
            aliases, settings.strict_model_names, listing.default, tuple(listing.checkpoints), adapters
        )

    def names(self) -> list[str]:
        """Every id taken, ours first (GET /v1/models)."""
        openai = [] if self.strict else list(OPENAI_MODELS)
        return list(dict.fromkeys([MODEL_ID, *openai, *self.aliases, *self.checkpoints]))

    def contract(self, model: object) -> Contract:
        """The contract of `model` (absent or not a string: ours; a value of another type fails validation
        later). Raises ModelNotFound."""
        if not isinstance(model, str) or model == MODEL_ID:
            return OURS
        if model in OPENAI_MODELS and (not self.strict or model in self.aliases):
            return OPENAI_MODELS[model]
        if model in self.aliases or model in self.checkpoints:
            return OURS
        raise ModelNotFound(f"The model `{shown(model)}` does not exist or you do not have access to it.")

    def checkpoint_of(self, model: object) -> str:
        """The checkpoint `model` is served with (its contract taken: see `contract`)."""
        if isinstance(model, str) and model in self.aliases:
            return self.aliases[model]
        if isinstance(model, str) and model in self.checkpoints:
            return model
        return self.checkpoint

    def served(
        self, generations: Sequence[GenerationRequest], model: object
    ) -> tuple[GenerationRequest, ...]:
        """The requests, each on `model`'s checkpoint, with the adapters of an alias that has some."""
        checkpoint = self.checkpoint_of(model)
        loras = self.adapters.get(model, ()) if isinstance(model, str) else ()
        return tuple(
            dataclasses.replace(generation, checkpoint=checkpoint, loras=loras) for generation in generations
        )


DEFAULT_MODEL_NAMES = ModelNames()


@dataclass(frozen=True)
class ImagesRequest:
    """A request of this wire: what to make (one request per image an edit starts from), how to answer, and
    what the answer reports.

    `user_id` is the opaque id of `user` (or `safety_identifier`), for the log; never the value itself."""

    generations: tuple[GenerationRequest, ...]
    output: Output
    quality: ReportedQuality | None
    revised_prompt: str | None
    user_id: str | None
    contract: Contract = OURS

    @property
    def generation(self) -> GenerationRequest:
        return self.generations[0]

    @property
    def size(self) -> str:
        width, height = self.output.resize_to or (self.generation.width, self.generation.height)
        return f"{width}x{height}"


def parse_generation(
    raw: bytes,
    *,
    relaxed_sizes: bool = False,
    random_seed: RandomSeed | None = None,
    models: ModelNames = DEFAULT_MODEL_NAMES,
) -> ImagesRequest:
    """Validate a /v1/images/generations JSON body. Raises MalformedBody, or ModelNotFound."""
    document = _json_body(raw)
    contract = models.contract(document.get("model"))
    body = validate(GenerationBody, without_nulls(document))
    check_contract(body, contract)
    size = output_size(body.size, relaxed=relaxed_sizes, default=DEFAULT_SIZE, contract=contract)
    width, height = made_size(size, relaxed_sizes)
    output = output_of(body, contract, size, (width, height))
    style_name = body.style or contract.default_style
    style = STYLES[style_name] if style_name is not None else None
    quality = body.quality or contract.default_quality
    generation = GenerationRequest(
        prompts=(WeightedPrompt(body.prompt, 1.0),),
        negative_prompts=(),
        width=width,
        height=height,
        seed=body.seed or (random_seed or random_nonzero_seed)(),
        steps=QUALITY_STEPS[quality],
        cfg_scale=CFG_SCALE,
        sampler=SAMPLER,
        style=style,
        samples=body.n or 1,
    )
    revised = style.template.format(prompt=body.prompt) if style is not None else None
    reported = QUALITY_REPORTED[quality] if contract.reports else None
    served = models.served((generation,), document.get("model"))
    return ImagesRequest(served, output, reported, revised, user_id(body, body), contract)


def parse_edit(
    fields: Mapping[str, str],
    files: Mapping[str, Sequence[bytes]],
    *,
    relaxed_sizes: bool = False,
    random_seed: RandomSeed | None = None,
    models: ModelNames = DEFAULT_MODEL_NAMES,
) -> ImagesRequest:
    """Validate a /v1/images/edits form: text `fields` by name, the uploaded `files`' bytes by name (`image`
    or `image[]`, and `mask`). Raises MalformedBody, or ModelNotFound."""
    check_files(fields, files, EDIT_FILES)
    contract = models.contract(fields.get("model"))
    if not contract.edit_images:
        raise not_this_models(
            "model", fields["model"], "edits", [m for m, c in OPENAI_MODELS.items() if c.edit_images]
        )
    body = validate(EditForm, dict(fields), lax=True)
    check_contract(body, contract)
    sent = [data for name in IMAGE_FILES for data in files.get(name, ())]
    if len(sent) > contract.edit_images:
        most = "one image" if contract.edit_images == 1 else f"up to {contract.edit_images} images"
        raise invalid("image", f"this model edits {most} per request, but {len(sent)} were sent")
    sources = [decode_file(data, "image") for data in sent]
    masks = files.get("mask", ())
    if len(masks) > 1:
        raise invalid("mask", f"send one mask, not {len(masks)}")
    mask = mask_of(masks[0], sources[0]) if masks else None
    size = output_size(
        body.size, relaxed=relaxed_sizes, default=edit_default(sources[0], contract), contract=contract
    )
    width, height = made_size(size, relaxed_sizes)
    output = output_of(body, contract, size, (width, height))
    quality = body.quality or contract.default_quality
    samples = body.n or 1
    seed = body.seed or (random_seed or random_nonzero_seed)()
    generations = []
    for index, source in enumerate(sources):
        image, image_mask = resized(source, mask if index == 0 else None, (width, height))
        default_strength = EDIT_STRENGTH if image_mask is None else MASKED_EDIT_STRENGTH
        generations.append(
            image_to_image(
                body.prompt,
                image,
                image_mask,
                # Every image of the answer has a seed of its own: consecutive, image after image.
                seed=(seed + index * samples - 1) % MAX_SEED + 1,
                quality=quality,
                strength=body.strength if body.strength is not None else default_strength,
                samples=samples,
            )
        )
    reported = QUALITY_REPORTED[quality] if contract.reports else None
    served = models.served(generations, fields.get("model"))
    return ImagesRequest(served, output, reported, None, user_id(body, body), contract)


def parse_variation(
    fields: Mapping[str, str],
    files: Mapping[str, Sequence[bytes]],
    *,
    relaxed_sizes: bool = False,
    random_seed: RandomSeed | None = None,
    models: ModelNames = DEFAULT_MODEL_NAMES,
) -> ImagesRequest:
    """Validate a /v1/images/variations form (see `parse_edit`): image-to-image with an empty prompt."""
    check_files(fields, files, VARIATION_FILES)
    contract = models.contract(fields.get("model"))
    if not contract.variations:
        raise not_this_models(
            "model", fields["model"], "variations", [m for m, c in OPENAI_MODELS.items() if c.variations]
        )
    body = validate(VariationForm, dict(fields), lax=True)
    check_contract(body, contract)
    image = decode_file(one_image(files), "image")
    size = output_size(
        body.size, relaxed=relaxed_sizes, default=edit_default(image, contract), contract=contract
    )
    width, height = made_size(size, relaxed_sizes)
    image, _ = resized(image, None, (width, height))
    generation = image_to_image(
        "",
        image,
        None,
        seed=body.seed or (random_seed or random_nonzero_seed)(),
        quality=DEFAULT_QUALITY,
        strength=body.strength if body.strength is not None else VARIATION_STRENGTH,
        samples=body.n or 1,
    )
    resize_to = size if size != (width, height) else None
    output = Output(
        response_format=body.response_format or contract.default_response_format, resize_to=resize_to
    )
    served = models.served((generation,), fields.get("model"))
    return ImagesRequest(served, output, None, None, user_id(body, None), contract)


def image_to_image(
    prompt: str,
    image: Image.Image,
    mask: Image.Image | None,
    *,
    seed: int,
    quality: str,
    strength: float,
    samples: int,
) -> GenerationRequest:
    """An edit's or a variation's request: `image` (already at the size made) regenerated at OpenAI's
    `strength` (diffusers' meaning), inside `mask` where there is one."""
    window = from_strength(strength)
    return GenerationRequest(
        prompts=(WeightedPrompt(prompt, 1.0),),
        negative_prompts=(),
        width=image.width,
        height=image.height,
        seed=seed,
        steps=QUALITY_STEPS[quality],
        cfg_scale=CFG_SCALE,
        sampler=SAMPLER,
        denoise_from=window.denoise_from,
        denoise_to=window.denoise_to,
        init_image=image.convert("RGB"),
        mask=mask,
        samples=samples,
    )


# ---- the rules across fields -----------------------------------------------------------------------------


def check_contract(body: SharedFields, contract: Contract) -> None:
    """What the model's contract adds to the fields' own rules (mapping.Contract)."""
    given = body.model_fields_set
    not_taken = []
    if contract.styles is None:
        not_taken.append("style")
    if contract.response_formats is None:
        not_taken.append("response_format")
    if not contract.output_fields:
        not_taken += ["output_format", "output_compression", "background", "moderation"]
    for name in not_taken:
        if name in given:
            raise MalformedBody(
                Problem((), f"unknown parameter [{name}]", ProblemKind.EXTRANEOUS_KEY, name),
                kind="unknown_parameter",
            )
    if body.n is not None and body.n > contract.max_images:
        most = contract.max_images
        description = f"integer above maximum value. Expected a value <= {most}, but got {body.n} instead"
        raise _problem(("n",), description, ProblemKind.OUT_OF_RANGE, body.n, "integer_above_max_value")
    for name, allowed in (("quality", contract.qualities), ("style", contract.styles)):
        value = getattr(body, name, None)
        if value is not None and allowed is not None and value not in allowed:
            description = f"Supported values are: {listing(allowed)}"
            raise _problem((name,), description, ProblemKind.NOT_ALLOWED, value, "invalid_value")
    prompt = getattr(body, "prompt", None)
    if prompt is not None and len(prompt) > contract.max_prompt_chars:
        description = (
            f"string too long. Expected a string with maximum length {contract.max_prompt_chars}, "
            f"but got a string with length {len(prompt)} instead"
        )
        raise _problem(("prompt",), description, ProblemKind.TOO_LONG, prompt, "string_above_max_length")


def not_this_models(param: str, model: str, what: str, models: Sequence[str]) -> MalformedBody:
    """A model OpenAI does not offer this operation with: its invalid_value, listing those it does."""
    return _problem(
        (param,),
        f"Supported values are: {listing(models)} ({what} are not offered for this model)",
        ProblemKind.NOT_ALLOWED,
        model,
        "invalid_value",
    )


def output_of(body: OutputFields, contract: Contract, size: tuple[int, int], made: tuple[int, int]) -> Output:
    """How the images go back; `size` is the output's, which the images are resized to where they are
    `made` at another."""
    if body.stream:
        raise invalid("stream", "streaming is not supported by this server; send false or leave it out")
    output_format: OutputFormat = body.output_format or "png"
    compression = body.output_compression if body.output_compression is not None else DEFAULT_COMPRESSION
    if output_format == "png" and compression < 100:
        raise invalid(
            "output_compression", "compression less than 100 is not supported for the png output format"
        )
    response_format = body.response_format if isinstance(body, SharedFields) else None
    resize_to = size if made != size else None
    return Output(response_format or contract.default_response_format, output_format, compression, resize_to)


def made_size(size: tuple[int, int], relaxed: bool) -> tuple[int, int]:
    """The size an image of `size` is made at: its own where the server's size rule takes it, else the SDXL
    size of the nearest aspect ratio (ratios compared on a log scale, so 2:1 is as far from 1:1 as 1:2)."""
    if allowed_size(*size, relaxed=relaxed):
        return size
    aspect = math.log(size[0] / size[1])
    return min(SDXL_V1_SIZES, key=lambda sdxl: abs(math.log(sdxl[0] / sdxl[1]) - aspect))


def edit_default(image: Image.Image, contract: Contract) -> tuple[int, int]:
    """An edit's or a variation's size without one: the image's own (this server's id), the model's
    default, or for a model whose default is `auto` its size nearest the image's aspect ratio."""
    if contract.sizes is None:
        return image.size
    if contract.default_size is not None:
        return contract.default_size
    aspect = math.log(image.width / image.height)
    return min(contract.sizes, key=lambda size: abs(math.log(size[0] / size[1]) - aspect))


def output_size(
    size: str | None, *, relaxed: bool, default: tuple[int, int], contract: Contract = OURS
) -> tuple[int, int]:
    """(width, height) of the output: `size`, or for `auto` (or none) `default` (1024x1024, or the size of
    the image an edit or a variation starts from, blamed as `image` when it is not allowed). A model with
    its own sizes takes those (and `auto` where it does)."""
    if contract.sizes is not None:
        allowed = [f"{width}x{height}" for width, height in contract.sizes] + (
            [AUTO] if contract.auto_size else []
        )
        if size is not None and size not in allowed:
            raise MalformedBody(
                Problem(
                    ("size",), f"Supported values are: {listing(allowed)}", ProblemKind.NOT_ALLOWED, size
                ),
                kind="invalid_value",
            )
        if size is None or size == AUTO:
            return contract.default_size or default
        parts = size.split("x")
        return int(parts[0]), int(parts[1])
    if size is None or size == AUTO:
        width, height = default
        if not allowed_size(width, height, relaxed=relaxed):
            raise invalid(
                "image",
                f"the image is {width}x{height}, which is not a supported size ({supported_sizes(relaxed)}); "
                "send an image of a supported size, or set 'size' to one to have the image resized",
            )
        return width, height
    parsed = SIZE_TEXT.fullmatch(size)
    if parsed is None or not allowed_size(int(parsed[1]), int(parsed[2]), relaxed=relaxed):
        raise MalformedBody(
            Problem(
                ("size",), f"Supported values are: {supported_sizes(relaxed)}", ProblemKind.NOT_ALLOWED, size
            ),
            kind="invalid_value",
        )
    return int(parsed[1]), int(parsed[2])


def allowed_size(width: int, height: int, *, relaxed: bool) -> bool:
    """The output size rule every face shares (validation.check_dimensions)."""
    try:
        check_dimensions(width, height, relaxed=relaxed)
    except MalformedBody:
        return False
    return True


def supported_sizes(relaxed: bool) -> str:
    if relaxed:
        return (
            f"'auto' and WIDTHxHEIGHT with each side a multiple of {RELAXED_SIZE_STEP} "
            f"from {RELAXED_SIZE_STEP} to {RELAXED_SIZE_MAX}"
        )
    return listing([f"{width}x{height}" for width, height in SDXL_V1_SIZES] + [AUTO])


def listing(values: Sequence[object]) -> str:
    """OpenAI's way of listing values: `'a' and 'b'`, `'a', 'b', and 'c'`."""
    quoted = [f"'{value}'" if isinstance(value, str) else shown(value) for value in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return f"{', '.join(quoted[:-1])}, and {quoted[-1]}"


def check_files(
    fields: Mapping[str, str], files: Mapping[str, Sequence[bytes]], accepted: Sequence[str]
) -> None:
    for name in files:
        if name not in accepted:
            raise MalformedBody(
                Problem((), f"unknown parameter [{shown(name)}]", ProblemKind.EXTRANEOUS_KEY, name),
                kind="unsupported_parameter" if name in UNSUPPORTED_PARAMETERS else "unknown_parameter",
            )
    for name in accepted:
        if name in fields:
            raise MalformedBody(
                Problem((name,), "expected a file, but got a string instead", ProblemKind.WRONG_TYPE),
                kind="invalid_type",
            )
    if not any(files.get(name) for name in IMAGE_FILES):
        raise MalformedBody(
            Problem((), "required key [image] not found", ProblemKind.REQUIRED_KEY, "image"),
            kind="missing_required_parameter",
        )


def one_image(files: Mapping[str, Sequence[bytes]]) -> bytes:
    images = [data for name in IMAGE_FILES for data in files.get(name, ())]
    if len(images) > 1:
        raise invalid("image", f"this server edits one image per request, but {len(images)} were sent")
    return images[0]


def decode_file(data: bytes, param: str) -> Image.Image:
    try:
        return decode_image_bytes(data, (param,))
    except MalformedBody as error:
        raise MalformedBody(error.problem, kind="invalid_image_file") from None


def mask_of(data: bytes, image: Image.Image) -> Image.Image:
    """OpenAI's mask rule as an "L" mask, 255 where the mask PNG is fully transparent (regenerated)."""
    if not data.startswith(PNG_SIGNATURE):
        raise invalid("mask", "the mask must be a PNG file", code="invalid_image_file")
    mask = decode_file(data, "mask")
    if mask.mode != "RGBA":
        raise invalid(
            "mask", "the mask has no alpha channel; its fully transparent pixels mark the area to edit"
        )
    if mask.size != image.size:
        raise invalid(
            "mask",
            f"the mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
            "they must be the same size",
        )
    return mask.getchannel("A").point(lambda alpha: 255 if alpha == 0 else 0)


# A key made at start: `user` ids in the log are the same within a run, and cannot be reversed by hashing
# guesses (an e-mail address), nor linked across runs.
_USER_ID_KEY = secrets.token_bytes(32)


def user_id(shared: SharedFields, output: OutputFields | None) -> str | None:
    """The opaque id of `safety_identifier`, else of `user` (OpenAI's precedence), for the log."""
    value = (output.safety_identifier if output is not None else None) or shared.user
    if not value:
        return None
    return hmac.new(_USER_ID_KEY, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


# ---- pydantic's findings in OpenAI's words ---------------------------------------------------------------


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        return load_json_object(raw)
    except MalformedBody as error:
        description = f"we could not parse the JSON body of your request: {error.problem.description}"
        raise MalformedBody(Problem((), description, ProblemKind.MALFORMED), kind="invalid_json") from None


def without_nulls(document: Mapping[str, Any]) -> dict[str, Any]:
    """`null` is an absent optional field (OpenAI's SDKs send it); a required one then reads as missing."""
    return {key: value for key, value in document.items() if value is not None}


def invalid(param: str, description: str, *, code: str = "invalid_value") -> MalformedBody:
    """A problem with one parameter: "Invalid '<param>': <description>."."""
    return MalformedBody(Problem((param,), description, ProblemKind.INVALID), kind=code)


SUPPORTED_VALUES: dict[str, Sequence[object]] = {
    "quality": tuple(QUALITY_STEPS),
    "style": tuple(STYLES),
    "response_format": RESPONSE_FORMATS,
    "output_format": OUTPUT_FORMATS,
    "background": BACKGROUNDS,
    "moderation": MODERATIONS,
}
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
}
_GOT: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def validate(model: type[ModelT], document: dict[str, Any], *, lax: bool = False) -> ModelT:
    """`document` checked by `model`; the first finding raised as MalformedBody in OpenAI's words. `lax` for
    form values, which are all text."""
    try:
        return model.model_validate(document, strict=False if lax else None)
    except ValidationError as error:
        raise finding(error.errors(include_url=False)[0], lax=lax) from None


def finding(error: ErrorDetails, *, lax: bool = False) -> MalformedBody:
    """One pydantic finding as a MalformedBody whose `kind` is OpenAI's code for it."""
    location, value, limits = tuple(error["loc"]), error["input"], error.get("ctx", {})
    param = str(location[0]) if location else ""
    match error["type"]:
        case "extra_forbidden":
            code = "unsupported_parameter" if param in UNSUPPORTED_PARAMETERS else "unknown_parameter"
            return _problem(
                (), f"unknown parameter [{shown(param)}]", ProblemKind.EXTRANEOUS_KEY, param, code
            )
        case "missing":
            return _problem(
                (),
                f"required key [{param}] not found",
                ProblemKind.REQUIRED_KEY,
                param,
                "missing_required_parameter",
            )
        case kind if kind in _EXPECTED:
            got = f"'{shown(value)}'" if lax and isinstance(value, str) else _GOT.get(type(value), "a value")
            description = f"expected {_EXPECTED[kind]}, but got {got} instead"
            return _problem(location, description, ProblemKind.WRONG_TYPE, value, "invalid_type")
        case "greater_than_equal" | "less_than_equal" as kind:
            below = kind == "greater_than_equal"
            bound = limits["ge" if below else "le"]
            # The bound has the field's type: an int for an integer field, a float for a number field.
            number = "integer" if isinstance(bound, int) else "decimal"
            side = "below minimum" if below else "above maximum"
            description = (
                f"{number} {side} value. Expected a value {'>=' if below else '<='} {_number(bound)}, "
                f"but got {shown(value)} instead"
            )
            code = f"{number}_{'below_min' if below else 'above_max'}_value"
            return _problem(location, description, ProblemKind.OUT_OF_RANGE, value, code)
        case "string_too_short" if value == "":
            description = (
                f"empty string. Expected a string with minimum length {limits['min_length']}, "
                "but got an empty string instead"
            )
            return _problem(location, description, ProblemKind.TOO_SHORT, value, "empty_string")
        case "string_too_long":
            description = (
                f"string too long. Expected a string with maximum length {limits['max_length']}, "
                f"but got a string with length {len(value)} instead"
            )
            return _problem(location, description, ProblemKind.TOO_LONG, value, "string_above_max_length")
        case "literal_error":
            description = f"Supported values are: {listing(SUPPORTED_VALUES.get(param, ()))}"
            return _problem(location, description, ProblemKind.NOT_ALLOWED, value, "invalid_value")
        case "string_unicode":
            return _problem(
                location,
                "not a valid Unicode string (unpaired surrogate)",
                ProblemKind.MALFORMED,
                value,
                "invalid_value",
            )
        case _:
            return _problem(location, str(error["msg"]), ProblemKind.INVALID, value, "invalid_value")


def _problem(
    location: tuple[Any, ...], description: str, kind: ProblemKind, value: object, code: str
) -> MalformedBody:
    return MalformedBody(Problem(location, description, kind, value), kind=code)


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)
