"""The wire-neutral request and result: what every face validates into and the engine consumes.

No field here is named after a Bedrock or Stability body key; the engine never sees those names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from PIL import Image


class Sampler(enum.StrEnum):
    DDIM = "DDIM"
    DDPM = "DDPM"
    K_DPMPP_2M = "K_DPMPP_2M"
    K_DPMPP_2S_ANCESTRAL = "K_DPMPP_2S_ANCESTRAL"
    K_DPM_2 = "K_DPM_2"
    K_DPM_2_ANCESTRAL = "K_DPM_2_ANCESTRAL"
    K_EULER = "K_EULER"
    K_EULER_ANCESTRAL = "K_EULER_ANCESTRAL"
    K_HEUN = "K_HEUN"
    K_LMS = "K_LMS"


DEFAULT_SAMPLER = Sampler.K_DPMPP_2M


class FinishReason(enum.StrEnum):
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CONTENT_FILTERED = "CONTENT_FILTERED"


@dataclass(frozen=True)
class WeightedPrompt:
    text: str
    weight: float


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make.

    `denoise_from` / `denoise_to` are the fraction of the noise schedule the sampler runs, 1 being pure
    noise and 0 a clean image: image-to-image at strength `s` denoises from `1 - s` to 0.
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
    style_preset: str | None = None
    clip_guidance_preset: str = "NONE"
    samples: int = 1
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def is_image_to_image(self) -> bool:
        return self.init_image is not None

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one denoising loop."""
        return (
            self.width,
            self.height,
            self.steps,
            self.sampler,
            self.denoise_from,
            self.denoise_to,
            self.is_image_to_image,
            self.mask is not None,
        )


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int
    finish_reason: FinishReason = FinishReason.SUCCESS


@dataclass(frozen=True)
class Artifact:
    """A finished image as the wire sends it: PNG bytes, already encoded off the engine thread."""

    png: bytes
    seed: int
    finish_reason: FinishReason
