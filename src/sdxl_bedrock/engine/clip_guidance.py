"""CLIP guidance: steer the denoising towards images a CLIP model finds close to the prompt.

As diffusers' community `clip_guided_stable_diffusion` pipeline (`cond_fn`) does it: on a guided step the
model's clean-image estimate is decoded, cut into random crops ("cutouts", Crowson's trick against
adversarial patterns), embedded by CLIP, and the spherical distance to the prompt's CLIP text embedding is
differentiated; the gradient shifts the noise prediction (classifier guidance, Dhariwal & Nichol 2021):
    noise' = noise + sigma * d(loss)/d(clean estimate)
which moves the clean estimate by -sigma^2 times the gradient. One deviation: the gradient is taken with
respect to the clean estimate, not through the UNet (the community pipeline backpropagates through the
UNet too, which costs a UNet backward pass and its activations on every guided step).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sdxl_bedrock.engine.prompts import blend
from sdxl_bedrock.schema import ClipGuidance

# OpenAI CLIP's preprocessing, used when a CLIP folder has no preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The squared great-circle distance between unit-normalised embeddings (Crowson's CLIP loss)."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def random_cutouts(
    image: torch.Tensor, cut_size: int, count: int, generator: torch.Generator, cut_power: float = 1.0
) -> torch.Tensor:
    """`count` random square crops of `image` [1, C, H, W], each pooled to cut_size x cut_size (the
    community pipeline's MakeCutouts), their sizes and places drawn from `generator`."""
    height, width = image.shape[2:]
    max_size = min(height, width)
    min_size = min(max_size, cut_size)
    cutouts = []
    for _ in range(count):
        draw = torch.rand(3, generator=generator)
        size = int(draw[0] ** cut_power * (max_size - min_size) + min_size)
        top = int(draw[1] * (height - size + 1))
        left = int(draw[2] * (width - size + 1))
        crop = image[:, :, top : top + size, left : left + size]
        cutouts.append(torch.nn.functional.adaptive_avg_pool2d(crop, cut_size))
    return torch.cat(cutouts)


class ClipGuide:
    """A transformers CLIPModel with its tokenizer and image normalisation."""

    def __init__(self, model: Any, tokenizer: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    @classmethod
    def load(cls, path: Path, device: torch.device) -> ClipGuide:
        from transformers import CLIPModel, CLIPTokenizer

        model: Any = CLIPModel.from_pretrained(path, local_files_only=True)
        model.to(device).eval().requires_grad_(False)
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        preprocessor = path / "preprocessor_config.json"
        if preprocessor.is_file():
            config = json.loads(preprocessor.read_text(encoding="utf-8"))
            mean, std = config.get("image_mean", mean), config.get("image_std", std)
        return cls(model, tokenizer, mean, std)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def text_features(self, texts: Sequence[str], weights: Sequence[float]) -> torch.Tensor:
        """The weighted mean of the texts' unit CLIP text embeddings, [D]. Texts are cut at CLIP's window."""
        tokens = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        # transformers 5 returns the projected embedding as the output's pooler_output.
        features = torch.nn.functional.normalize(self.model.get_text_features(**tokens).pooler_output, dim=-1)
        return blend(features, weights)

    def loss_gradient(
        self,
        clean_latents: torch.Tensor,
        decode: Callable[[torch.Tensor], torch.Tensor],
        text_features: torch.Tensor,
        preset: ClipGuidance,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """d(scale * mean spherical distance of the cutouts to the text)/d(clean latents), for one row.

        `decode` maps model latents [1, 4, h, w] to pixels in [-1, 1]."""
        with torch.inference_mode(False), torch.enable_grad():
            latents = clean_latents.detach().clone().requires_grad_()
            pixels = (decode(latents).float() / 2 + 0.5).clamp(0, 1)
            cutouts = random_cutouts(pixels, self.image_size, preset.cutouts, generator)
            cutouts = (cutouts.to(self.device) - self.mean.to(self.device)) / self.std.to(self.device)
            image_features = self.model.get_image_features(pixel_values=cutouts).pooler_output
            target = text_features.detach().clone().to(image_features.dtype)
            loss = spherical_distance(image_features, target[None]).mean() * preset.scale
            (gradient,) = torch.autograd.grad(loss, latents)
        return gradient.detach()
