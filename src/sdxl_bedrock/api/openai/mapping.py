"""What OpenAI's Images API names mean on SDXL: the model ids and each one's contract, `quality` as steps,
`style` as a style preset, the strengths of edits and variations, and the output formats. docs/API.md
("OpenAI Images API") documents these tables; change them together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sdxl_bedrock.presets import STYLE_PRESETS, StylePreset
from sdxl_bedrock.schema import DEFAULT_SAMPLER

# The one model this wire serves (`model` may also be absent), as GET /v1/models lists it.
MODEL_ID = "stability.stable-diffusion-xl-v1"
MODEL_CREATED = 1690329600  # 2023-07-26T00:00:00Z, SDXL 1.0's release
MODEL_OWNER = "stabilityai"

MAX_IMAGES = 10
# OpenAI allows 32000 characters for GPT image models and 4000 for DALL·E 3; every 75 tokens of prompt
# (about 300 characters) add a 77-token chunk to every UNet call of the request, so we keep DALL·E 3's bound.
MAX_PROMPT_CHARS = 4000

# Classifier-free guidance and sampler: OpenAI has no such fields; Bedrock's and Stability's defaults.
CFG_SCALE = 7.0
SAMPLER = DEFAULT_SAMPLER

# `quality` -> sampler steps (DPM++ 2M). `standard` and `hd` are DALL·E 3's names for medium and high.
QUALITY_STEPS: dict[str, int] = {
    "low": 15,
    "medium": 30,
    "high": 50,
    "auto": 30,
    "standard": 30,
    "hd": 50,
}
ReportedQuality = Literal["low", "medium", "high"]
# The quality the response reports (OpenAI's response names only low, medium and high).
QUALITY_REPORTED: dict[str, ReportedQuality] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "auto": "medium",
    "standard": "medium",
    "hd": "high",
}
DEFAULT_QUALITY = "auto"

# `style` -> a style preset. DALL·E 3's `vivid` ("hyper-real and dramatic") is the `enhance` template;
# `natural` (and no style) is the prompt as written. Any of this server's preset names is taken too.
STYLES: dict[str, StylePreset | None] = {
    "vivid": STYLE_PRESETS["enhance"],
    "natural": None,
    **STYLE_PRESETS,
}

# How far image-to-image departs from the image: the fraction of the noise schedule run, as diffusers'
# `strength` (1 regenerates from pure noise, 0 returns the image). The extension field `strength` sets it.
EDIT_STRENGTH = 0.75  # an edit without a mask: AUTOMATIC1111's default denoising strength
MASKED_EDIT_STRENGTH = 1.0  # the masked area is generated afresh, as OpenAI's edits do
VARIATION_STRENGTH = 0.6  # keeps the picture's composition and colours, varies its content

# Generated images are opaque: `background` takes `auto` and `opaque` (both mean opaque).
BACKGROUNDS = ("auto", "opaque")
# Only this server's own content filter (`--blocked-terms`) moderates: `auto` is it, and there is no `low`.
MODERATIONS = ("auto",)
RESPONSE_FORMATS = ("b64_json", "url")
OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
MEDIA_TYPES: dict[OutputFormat, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# OpenAI's output_compression default: 100, the encoder's best quality.
DEFAULT_COMPRESSION = 100

# OpenAI parameters this server knows and does not offer: refused as `unsupported_parameter`.
UNSUPPORTED_PARAMETERS = frozenset(
    {
        "partial_images",
        "complexity",
        "frame_count",
        "frame_duration_ms",
        "svg",
        "input_fidelity",
        "markup",
        "prompt_rewriter",
    }
)


# ---- OpenAI's own model ids, each with its contract -------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """What a model id takes, as OpenAI's Images API reference gives it for that model, and its defaults.

    `sizes` None: the SDXL sizes (and `auto`) of this server's own id; `auto_size`: `auto` is a size (the
    default where `default_size` is None). `qualities`, `styles` and `response_formats` None: the model does
    not take the parameter (OpenAI: `Unknown parameter`). `output_fields`: `output_format`,
    `output_compression`, `background`, `moderation` (GPT image models only). `edit_images`: how many images
    an edit takes (0: no edits); `reports`: whether the answer carries `background`, `output_format`,
    `quality` and `size` (GPT image models' answers do, DALL·E's do not)."""

    name: str
    sizes: tuple[tuple[int, int], ...] | None
    auto_size: bool
    default_size: tuple[int, int] | None
    max_images: int
    qualities: tuple[str, ...] | None
    default_quality: str
    styles: tuple[str, ...] | None
    default_style: str | None
    response_formats: tuple[str, ...] | None
    default_response_format: str
    output_fields: bool
    edit_images: int
    variations: bool
    max_prompt_chars: int
    reports: bool


SQUARE = (1024, 1024)
OURS = Contract(
    name=MODEL_ID,
    sizes=None,
    auto_size=True,
    default_size=None,
    max_images=MAX_IMAGES,
    qualities=tuple(QUALITY_STEPS),
    default_quality=DEFAULT_QUALITY,
    styles=tuple(STYLES),
    default_style=None,
    response_formats=RESPONSE_FORMATS,
    default_response_format="b64_json",
    output_fields=True,
    edit_images=1,
    variations=True,
    max_prompt_chars=MAX_PROMPT_CHARS,
    reports=True,
)
DALL_E_2 = Contract(
    name="dall-e-2",
    sizes=((256, 256), (512, 512), SQUARE),
    auto_size=False,
    default_size=SQUARE,
    max_images=MAX_IMAGES,
    qualities=("standard",),
    default_quality="standard",
    styles=None,
    default_style=None,
    response_formats=RESPONSE_FORMATS,
    default_response_format="url",
    output_fields=False,
    edit_images=1,
    variations=True,
    max_prompt_chars=1000,
    reports=False,
)
DALL_E_3 = Contract(
    name="dall-e-3",
    sizes=(SQUARE, (1792, 1024), (1024, 1792)),
    auto_size=False,
    default_size=SQUARE,
    max_images=1,
    qualities=("standard", "hd"),
    default_quality="standard",
    styles=("vivid", "natural"),
    default_style="vivid",
    response_formats=RESPONSE_FORMATS,
    default_response_format="url",
    output_fields=False,
    edit_images=0,
    variations=False,
    max_prompt_chars=MAX_PROMPT_CHARS,
    reports=False,
)
# OpenAI allows 32000 characters for GPT image models; every 75 tokens of prompt add a chunk to every UNet
# call of the request, so they keep this server's bound.
GPT_IMAGE = Contract(
    name="gpt-image",
    sizes=(SQUARE, (1536, 1024), (1024, 1536)),
    auto_size=True,
    default_size=None,
    max_images=MAX_IMAGES,
    qualities=("low", "medium", "high", "auto"),
    default_quality="auto",
    styles=None,
    default_style=None,
    response_formats=None,
    default_response_format="b64_json",
    output_fields=True,
    edit_images=16,
    variations=False,
    max_prompt_chars=MAX_PROMPT_CHARS,
    reports=True,
)
# The model ids of OpenAI's Images API reference, served by the default checkpoint.
OPENAI_MODELS: dict[str, Contract] = {
    "dall-e-2": DALL_E_2,
    "dall-e-3": DALL_E_3,
    "gpt-image-1": GPT_IMAGE,
    "gpt-image-1-mini": GPT_IMAGE,
    "gpt-image-1.5": GPT_IMAGE,
}
