"""The engine: one batch of compatible GenerationRequests in, one image per request out.

It reads top-down like diffusers' `StableDiffusionXLImg2ImgPipeline.__call__` and reproduces its arithmetic
(same stage order, same random draws from each request's own generator), but for a batch of requests that
each keep their own prompt, guidance scale and seed. Stages:

1. encode the prompts (styled, weighted, blended)
2. prepare the timesteps of the denoising window
3. prepare the starting latents (encode the init image and add noise, or pure noise)
4. prepare the SDXL added conditioning (pooled text embedding and size ids)
5. denoise
6. decode
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from sdxl_bedrock.engine.samplers import make_scheduler, served_samplers
from sdxl_bedrock.engine.styles import apply_style
from sdxl_bedrock.errors import ModelFailure
from sdxl_bedrock.schema import GeneratedImage, GenerationRequest, Sampler, WeightedPrompt

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, Callable[[int], Image.Image]], None]
"""Called after each denoising step with (steps done, steps in this run, preview): `preview(row)` makes a
small picture of batch row `row`'s current latents, cheaply (no VAE), for progress displays."""

# A linear map from SDXL's 4 latent channels to RGB, fitted on SDXL latents (the "cheap approximation"
# preview of ComfyUI and A1111): good enough to watch a picture form, at 1/8 of the output size.
SDXL_LATENT_RGB_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


@dataclass(frozen=True)
class PromptEmbeddings:
    """Per-request conditioning, batch-first: `tokens` [B, 77, D] and `pooled` [B, P]."""

    tokens: torch.Tensor
    pooled: torch.Tensor


def denoising_window(steps: int, denoise_from: float, denoise_to: float) -> tuple[int, int]:
    """Indices [first, last) of a `steps`-step schedule run by a window from `denoise_from` to `denoise_to`.

    `denoise_from` = 1 - image_strength. The start matches diffusers' `get_timesteps` for `strength`.
    """
    first = steps - min(int(steps * denoise_from), steps)
    last = steps - min(int(steps * denoise_to), steps)
    return first, max(last, first)


def blend(embeddings: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean over the first axis: weight 0 adds nothing, and equal prompts blend to themselves."""
    weight_tensor = torch.tensor(weights, dtype=embeddings.dtype, device=embeddings.device)
    weight_tensor = weight_tensor.view(-1, *([1] * (embeddings.ndim - 1)))
    return (embeddings * weight_tensor).sum(0) / weight_tensor.sum()


def latent_preview(latents: torch.Tensor, row: int) -> Image.Image:
    """Batch row `row` of model latents as a small RGB picture, by the linear latent-to-RGB map."""
    factors = torch.tensor(SDXL_LATENT_RGB_FACTORS, dtype=torch.float32)
    bias = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=torch.float32)
    latent = latents[row].float().cpu()
    if latent.shape[0] != factors.shape[0]:
        latent = latent[: factors.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", latent, factors) + bias
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def guide(noise_uncond: torch.Tensor, noise_text: torch.Tensor, cfg_scales: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance, one scale per batch row; a scale <= 1 means no guidance (as diffusers)."""
    scales = cfg_scales.view(-1, 1, 1, 1).to(noise_text.dtype)
    guided = noise_uncond + scales * (noise_text - noise_uncond)
    return torch.where(scales > 1, guided, noise_text)


class Engine:
    """Owns the loaded SDXL components; `generate` is called from one worker thread at a time."""

    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        # A StableDiffusionXLImg2ImgPipeline; diffusers sets its components dynamically, so it is typed Any.
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.zero_unconditional = bool(self.pipe.config.get("force_zeros_for_empty_prompt", True))
        self.vae_scale_factor = int(self.pipe.vae_scale_factor)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str, device: str = "auto", dtype: str = "auto") -> Engine:
        from sdxl_bedrock.engine.models import load_pipeline

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        pipe: Any = load_pipeline(model, device=str(torch_device), dtype=torch_dtype)
        if pipe.vae.config.force_upcast:
            # SDXL's VAE overflows in half precision; keep it in float32 for good.
            pipe.vae.to(dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, torch_device, torch_dtype)

    def gpu_memory_bytes(self) -> int:
        return int(torch.cuda.memory_allocated(self.device)) if self.device.type == "cuda" else 0

    @property
    def served_samplers(self) -> frozenset[Sampler]:
        return served_samplers()

    # -- the public entry point ---------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> list[GeneratedImage]:
        if not requests:
            return []
        keys = {request.batch_key() for request in requests}
        if len(keys) != 1:
            raise ValueError(f"a batch must share one batch key, got {len(keys)}")
        with self._lock:
            images = self._generate(requests, on_step)
        if len(images) != len(requests):
            raise ModelFailure(f"the engine made {len(images)} images for {len(requests)} requests")
        return [GeneratedImage(image, request.seed) for image, request in zip(images, requests, strict=True)]

    def _generate(self, requests: Sequence[GenerationRequest], on_step: StepCallback | None) -> list[Any]:
        first = requests[0]
        generators = [torch.Generator("cpu").manual_seed(request.seed) for request in requests]
        cfg_scales = torch.tensor([request.cfg_scale for request in requests], device=self.device)
        use_guidance = bool((cfg_scales > 1).any())

        # 1. encode the prompts
        positive, negative = self.encode_requests(requests, use_guidance)

        # 2. timesteps of the denoising window
        scheduler = make_scheduler(first.sampler, self.scheduler_config)
        timesteps = self.prepare_timesteps(scheduler, first)

        # 3. starting latents
        latents = self.prepare_latents(scheduler, requests, timesteps, generators)

        # 4. added conditioning: pooled text embedding and (original size, crop, target size) ids
        size_ids = torch.tensor(
            [[first.height, first.width, 0, 0, first.height, first.width]] * len(requests),
            dtype=self.dtype,
            device=self.device,
        )
        tokens, pooled, time_ids = positive.tokens, positive.pooled, size_ids
        if use_guidance:
            tokens = torch.cat([negative.tokens, positive.tokens])
            pooled = torch.cat([negative.pooled, positive.pooled])
            time_ids = torch.cat([size_ids, size_ids])

        # 5. denoise
        latents = self.denoise(
            scheduler,
            latents,
            timesteps,
            tokens,
            pooled,
            time_ids,
            cfg_scales,
            use_guidance,
            generators,
            on_step,
        )

        # 6. decode
        return self.decode(latents)

    # -- stages -------------------------------------------------------------------------------------------

    def encode_requests(
        self, requests: Sequence[GenerationRequest], use_guidance: bool
    ) -> tuple[PromptEmbeddings, PromptEmbeddings]:
        styled = [apply_style(r.style_preset, r.prompts, r.negative_prompts) for r in requests]
        texts = sorted({p.text for prompts, negatives in styled for p in (*prompts, *negatives)})
        encoded = self.encode_texts(texts) if texts else None
        index = {text: i for i, text in enumerate(texts)}

        def blended(prompts: tuple[WeightedPrompt, ...]) -> PromptEmbeddings | None:
            if not prompts or sum(p.weight for p in prompts) <= 0 or encoded is None:
                return None
            rows = [index[p.text] for p in prompts]
            weights = [p.weight for p in prompts]
            return PromptEmbeddings(
                blend(encoded.tokens[rows], weights), blend(encoded.pooled[rows], weights)
            )

        positives, negatives = [], []
        for prompts, negative_prompts in styled:
            positive = blended(prompts) or self.empty_prompt()
            positives.append(positive)
            if use_guidance:
                negatives.append(blended(negative_prompts) or self.unconditional(positive))
        stack = self._stack
        return stack(positives), (stack(negatives) if use_guidance else stack(positives))

    @staticmethod
    def _stack(embeddings: list[PromptEmbeddings]) -> PromptEmbeddings:
        return PromptEmbeddings(
            torch.stack([e.tokens for e in embeddings]), torch.stack([e.pooled for e in embeddings])
        )

    def empty_prompt(self) -> PromptEmbeddings:
        encoded = self.encode_texts([""])
        return PromptEmbeddings(encoded.tokens[0], encoded.pooled[0])

    def unconditional(self, positive: PromptEmbeddings) -> PromptEmbeddings:
        """What guidance pushes away from when the request names no negative prompt."""
        if self.zero_unconditional:
            return PromptEmbeddings(torch.zeros_like(positive.tokens), torch.zeros_like(positive.pooled))
        return self.empty_prompt()

    def encode_texts(self, texts: list[str]) -> PromptEmbeddings:
        """Both CLIP encoders' penultimate hidden states, concatenated; pooled output of the second."""
        pipe = self.pipe
        hidden_states = []
        pooled: torch.Tensor | None = None
        for tokenizer, text_encoder in (
            (pipe.tokenizer, pipe.text_encoder),
            (pipe.tokenizer_2, pipe.text_encoder_2),
        ):
            token_ids = tokenizer(
                texts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            output = text_encoder(token_ids, output_hidden_states=True)
            if output[0].ndim == 2:
                pooled = output[0]
            hidden_states.append(output.hidden_states[-2])
        assert pooled is not None, "the second text encoder must have a projection"
        return PromptEmbeddings(torch.cat(hidden_states, dim=-1).to(self.dtype), pooled.to(self.dtype))

    def prepare_timesteps(self, scheduler: Any, request: GenerationRequest) -> torch.Tensor:
        scheduler.set_timesteps(request.steps, device=self.device)
        first, last = denoising_window(request.steps, request.denoise_from, request.denoise_to)
        order = scheduler.order
        timesteps: torch.Tensor = scheduler.timesteps[first * order : last * order]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first * order)
        if len(timesteps) == 0:
            raise ModelFailure("the denoising window holds no step; raise steps or the strength")
        return timesteps

    def prepare_latents(
        self,
        scheduler: Any,
        requests: Sequence[GenerationRequest],
        timesteps: torch.Tensor,
        generators: list[torch.Generator],
    ) -> torch.Tensor:
        first = requests[0]
        latent_shape = (
            len(requests),
            self.pipe.unet.config.in_channels,
            first.height // self.vae_scale_factor,
            first.width // self.vae_scale_factor,
        )
        if not first.is_image_to_image:
            noise = randn_tensor(latent_shape, generator=generators, device=self.device, dtype=self.dtype)
            return noise * scheduler.init_noise_sigma

        images = torch.cat([self.pipe.image_processor.preprocess(r.init_image) for r in requests])
        vae = self.pipe.vae
        images = images.to(device=self.device, dtype=vae.dtype)
        clean = vae.encode(images).latent_dist.sample(generator=generators)
        clean = self.to_model_latents(clean.to(self.dtype))
        noise = randn_tensor(clean.shape, generator=generators, device=self.device, dtype=self.dtype)
        start = timesteps[:1].repeat(len(requests))
        noisy: torch.Tensor = scheduler.add_noise(clean, noise, start)
        return noisy

    def denoise(
        self,
        scheduler: Any,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor,
        pooled: torch.Tensor,
        time_ids: torch.Tensor,
        cfg_scales: torch.Tensor,
        use_guidance: bool,
        generators: list[torch.Generator],
        on_step: StepCallback | None,
    ) -> torch.Tensor:
        unet = self.pipe.unet
        step_kwargs: dict[str, Any] = {}
        if "generator" in _step_parameters(scheduler):
            step_kwargs["generator"] = generators if len(generators) > 1 else generators[0]
        total = len(timesteps)
        for done, timestep in enumerate(timesteps, start=1):
            model_input = torch.cat([latents, latents]) if use_guidance else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            noise = unet(
                model_input,
                timestep,
                encoder_hidden_states=tokens,
                added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
                return_dict=False,
            )[0]
            if use_guidance:
                noise_uncond, noise_text = noise.chunk(2)
                noise = guide(noise_uncond, noise_text, cfg_scales)
            latents = scheduler.step(noise, timestep, latents, **step_kwargs, return_dict=False)[0]
            if on_step is not None:
                on_step(done, total, functools.partial(latent_preview, latents))
        return latents

    def decode(self, latents: torch.Tensor) -> list[Any]:
        vae = self.pipe.vae
        latents = self.from_model_latents(latents.to(vae.dtype))
        pixels = vae.decode(latents, return_dict=False)[0]
        images: list[Any] = self.pipe.image_processor.postprocess(pixels, output_type="pil")
        return images

    # -- latent scaling (SDXL uses a plain scaling factor; some VAEs add a mean and std) -------------------

    def to_model_latents(self, vae_latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_statistics(vae_latents)
        scale = self.pipe.vae.config.scaling_factor
        if mean is None or std is None:
            return vae_latents * scale
        return (vae_latents - mean) * scale / std

    def from_model_latents(self, model_latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_statistics(model_latents)
        scale = self.pipe.vae.config.scaling_factor
        if mean is None or std is None:
            return model_latents / scale
        return model_latents * std / scale + mean

    def _latent_statistics(self, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        config = self.pipe.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return None, None
        as_tensor = lambda values: torch.tensor(values).view(1, -1, 1, 1).to(like.device, like.dtype)  # noqa: E731
        return as_tensor(mean), as_tensor(std)


def _step_parameters(scheduler: Any) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
