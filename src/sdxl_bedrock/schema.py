"""The wire-neutral request and result: what every face validates into and the engine consumes.

No field here is named after a wire's body key, and no value is a wire's enum string: presets arrive as
the typed entries of `presets.py`, samplers as `Sampler`, absence as None.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from PIL import Image

# The largest seed every wire takes (Bedrock's and Stability's bound); 0 means "random" on each of them.
MAX_SEED = 4294967295


class Sampler(enum.StrEnum):
    """A sampling algorithm, named as k-diffusion names its `sample_*` functions (DDIM and DDPM as diffusers).

    Each wire maps its own names onto these (`presets.SAMPLER_NAMES` for Bedrock's and Stability's `K_`
    names); engine/samplers.py maps each to its implementation."""

    DDIM = "ddim"
    DDPM = "ddpm"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2S_ANCESTRAL = "dpmpp_2s_ancestral"
    DPM_2 = "dpm_2"
    DPM_2_ANCESTRAL = "dpm_2_ancestral"
    EULER = "euler"
    EULER_ANCESTRAL = "euler_ancestral"
    HEUN = "heun"
    LMS = "lms"


DEFAULT_SAMPLER = Sampler.DPMPP_2M


class SigmaSchedule(enum.StrEnum):
    """The noise levels a sampler's steps land on.

    DEFAULT is the sampler's scheduler made from the model's own config (its timestep spacing); KARRAS is
    Karras et al. 2022's spacing (rho 7) between the same highest and lowest noise levels, diffusers'
    `use_karras_sigmas`. Only the samplers in SAMPLERS_WITH_KARRAS_SIGMAS take KARRAS."""

    DEFAULT = "default"
    KARRAS = "karras"


# The samplers whose diffusers scheduler takes `use_karras_sigmas` (DPM++ 2S ancestral walks the Euler
# scheduler's sigmas); tests/engine/test_sigma_schedules.py checks this against engine/samplers.py.
SAMPLERS_WITH_KARRAS_SIGMAS = frozenset(
    {
        Sampler.DPMPP_2M,
        Sampler.DPMPP_2S_ANCESTRAL,
        Sampler.DPM_2,
        Sampler.DPM_2_ANCESTRAL,
        Sampler.EULER,
        Sampler.HEUN,
        Sampler.LMS,
    }
)
# The samplers whose amount of fresh noise per step (eta) is a parameter: DDIM (default 0, deterministic)
# and DPM++ 2S ancestral (default 1). The other ancestral samplers always add eta 1's noise.
SAMPLERS_WITH_ETA = frozenset({Sampler.DDIM, Sampler.DPMPP_2S_ANCESTRAL})


class FinishReason(enum.StrEnum):
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CONTENT_FILTERED = "CONTENT_FILTERED"


class FilteredBy(enum.StrEnum):
    """What the content filter flagged in a CONTENT_FILTERED result: some wires say which."""

    PROMPT = "prompt"
    OUTPUT_IMAGE = "output image"


@dataclass(frozen=True)
class PromptSpan:
    """A run of a prompt's text whose token embeddings are scaled by `emphasis` (1: as encoded).

    `starts_chunk` ends the current 75-token chunk before this span (padding it), as A1111's `BREAK` does."""

    text: str
    emphasis: float = 1.0
    starts_chunk: bool = False


PromptKey = str | tuple[PromptSpan, ...]
"""What a prompt's encoding depends on: its text, or its spans when some are emphasised or break a chunk."""


@dataclass(frozen=True)
class WeightedPrompt:
    """A prompt and its weight in the blend of a request's prompts.

    `spans`, when given, split `text` (their concatenation) into runs of per-token emphasis; None encodes
    `text` as it is. `text` is what the content filter and CLIP guidance read."""

    text: str
    weight: float
    spans: tuple[PromptSpan, ...] | None = None

    def encoding_key(self) -> PromptKey:
        """The text when no span changes the encoding, else the spans (the prompt cache's key)."""
        spans = self.spans
        if spans is None or all(span.emphasis == 1.0 and not span.starts_chunk for span in spans):
            return self.text
        return spans


Prompts = tuple[WeightedPrompt, ...]


@dataclass(frozen=True)
class StylePreset:
    """A style: the positive prompt wrapped in `template` (`{prompt}` is the user's text), and `negative`
    terms added as one more negative prompt. The templates follow the SDXL style prompts Stability
    published with Clipdrop."""

    name: str
    template: str
    negative: str

    def apply(self, prompts: Prompts, negative_prompts: Prompts) -> tuple[Prompts, Prompts]:
        """Each positive prompt wrapped in the template, and the style's negative terms (weight 1) added."""
        styled = tuple(WeightedPrompt(self.template.format(prompt=p.text), p.weight) for p in prompts)
        return styled, (*negative_prompts, WeightedPrompt(self.negative, 1.0))


@dataclass(frozen=True)
class ClipGuidance:
    """CLIP guidance settings (engine/clip_guidance.py): how hard and how often CLIP steers the denoising."""

    name: str
    scale: float  # loss multiplier: the guidance strength
    cutouts: int  # random crops scored per guided step
    every: int  # guide on every `every`-th step of the run (1 = every step)

    def guides_step(self, step_index: int) -> bool:
        return step_index % self.every == 0


class LatentResize(enum.StrEnum):
    """How latents are resized to another grid: torch's `interpolate` modes."""

    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"


@dataclass(frozen=True)
class InitLatents:
    """Latents an image-to-image row starts from in place of an encoded init image.

    `latents` is what a `GeneratedImage.latents` held, opaque outside the engine. They are resized by
    `resize` (with `antialias`) to the latent grid of `resize_to` (width, height in pixels; None: the
    output's size), then cut to the output's grid around the centre (the larger half of an odd excess
    cut from the bottom and right). A window with no step decodes them as they are."""

    latents: object
    resize: LatentResize = LatentResize.BILINEAR
    antialias: bool = False
    resize_to: tuple[int, int] | None = None


# Every wire refuses a LoRA weight beyond this: real use stays within +-2, and far beyond, the adapter's
# delta swamps the base weights until the image is not finite (a model error for a client's typo).
MAX_LORA_WEIGHT = 10.0


@dataclass(frozen=True)
class LoraUse:
    """One LoRA adapter on a request: `name` is the LoRA library's (loras.py); `unet_weight` scales its
    UNet part and `text_weight` its text encoders' part (A1111's `unet` and `te` multipliers; diffusers'
    `set_adapters(adapter_weights=)` gives both one weight). 1.0 is the adapter as trained."""

    name: str
    unet_weight: float = 1.0
    text_weight: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make.

    `denoise_from` / `denoise_to` are the fraction of the noise schedule the sampler runs, 1 being pure
    noise and 0 a clean image: image-to-image at diffusers' strength `s` denoises from `s` to 0 (strength.py
    makes each wire's strength a window, and a window its steps). `init_image` is RGB; `mask` an "L" image
    of the same size, 255 where pixels are regenerated. `samples` images are made, with the seeds `seed`,
    `seed + 1`, ...

    An init image of another size than `width` x `height` is encoded at its own size and its latents
    resized (bilinear) to the output's latent grid (A1111's "latent upscale"); it then takes no mask.
    `sigma_schedule` spaces the sampler's noise levels; `eta` scales the fresh noise of the samplers in
    SAMPLERS_WITH_ETA (None: the sampler's own default).

    `first_encoder_layer` picks the hidden state of the first text encoder (CLIP ViT-L) the UNet is
    conditioned on, counted from its output: 1 the last layer's, 2 the penultimate (SDXL's own, as None);
    taken without the final layer norm. The second encoder always gives its penultimate.

    `return_latents` asks for the final latents on the GeneratedImage, for a later request's
    `init_latents`, which starts image-to-image from them instead of from `init_image` (no VAE encode).

    `checkpoint` is the model library's name of the checkpoint that makes it (library.py; None: the
    server's default); the wires resolve their own names for it (an A1111 title, an OpenAI `model`, a
    Stability engine id, a Bedrock alias) before the request is made.

    `loras` are the LoRA adapters the request's own row applies (each once, in order; none: the base
    weights alone), whatever adapters the rows it shares a tick with carry.
    """

    prompts: tuple[WeightedPrompt, ...]
    negative_prompts: tuple[WeightedPrompt, ...]
    width: int
    height: int
    seed: int
    steps: int
    cfg_scale: float
    sampler: Sampler
    denoise_from: float = 1.0
    denoise_to: float = 0.0
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    style: StylePreset | None = None
    clip_guidance: ClipGuidance | None = None
    samples: int = 1
    sigma_schedule: SigmaSchedule = SigmaSchedule.DEFAULT
    eta: float | None = None
    first_encoder_layer: int | None = None
    return_latents: bool = False
    init_latents: InitLatents | None = None
    checkpoint: str | None = None
    loras: tuple[LoraUse, ...] = ()

    @property
    def is_image_to_image(self) -> bool:
        return self.init_image is not None or self.init_latents is not None

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one denoising loop."""
        return (
            self.width,
            self.height,
            self.steps,
            self.sampler,
            self.sigma_schedule,
            self.eta,
            self.denoise_from,
            self.denoise_to,
            self.is_image_to_image,
            self.mask is not None,
        )


@dataclass(frozen=True)
class GeneratedImage:
    """`latents`, where the request asked for them: its final latents as a CPU tensor, which only the
    engine reads (InitLatents)."""

    image: Image.Image
    seed: int
    finish_reason: FinishReason = FinishReason.SUCCESS
    filtered_by: FilteredBy | None = None
    latents: object | None = None


@dataclass(frozen=True)
class Artifact:
    """A finished image as the wire sends it: PNG bytes, already encoded off the engine thread (and the
    opaque `latents` of a request that asked for them)."""

    png: bytes
    seed: int
    finish_reason: FinishReason
    filtered_by: FilteredBy | None = None
    latents: object | None = None
