"""The engine: one batch of compatible GenerationRequests in, one image per request out.

It reads top-down like diffusers' `StableDiffusionXLImg2ImgPipeline.__call__` and reproduces its arithmetic
(same stage order, same random draws from each request's own generator), but for a batch of requests that
each keep their own prompt, guidance scale and seed. Stages:

1. plan the sampler's run over the denoising window (no step at all: the init image is the answer)
2. encode the prompts (styled, weighted, blended, in 77-token chunks)
3. prepare the starting latents (encode the init image and add noise, or pure noise)
4. prepare the SDXL added conditioning (pooled text embedding and size ids)
5. denoise (classifier-free guidance, CLIP guidance, mask blending between steps)
6. decode (the final latents, or the clean estimate when the window stops before the end)
7. paste the original pixels back outside the mask
8. screen with the content filter
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from sdxl_bedrock.engine.acceleration import UNetInputs, UNetRunner, accelerate
from sdxl_bedrock.engine.clip_guidance import CLIP_GUIDANCE_PRESETS, ClipGuide, guided_on_step
from sdxl_bedrock.engine.content_filter import ContentFilter, obscure
from sdxl_bedrock.engine.masking import blend_outside_mask, latent_mask, paste_outside_mask
from sdxl_bedrock.engine.pixels import images_from_pixels, pixels_from_images
from sdxl_bedrock.engine.prompts import (
    BatchEmbeddings,
    PromptEmbeddings,
    blend_prompts,
    stack_rows,
    tokenize_in_chunks,
)
from sdxl_bedrock.engine.samplers import (
    NoisePredictor,
    SamplingRun,
    denoising_window,
    served_samplers,
    start_sampling,
    timestep_to_sigma,
    training_sigmas,
)
from sdxl_bedrock.engine.styles import apply_style
from sdxl_bedrock.errors import ModelFailure
from sdxl_bedrock.schema import FinishReason, GeneratedImage, GenerationRequest, Sampler, WeightedPrompt

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
# Bounded by bytes, not entries: a 2000-character prompt is ~27 chunks of 77 tokens.
PROMPT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class StartingLatents:
    latents: torch.Tensor
    noise: torch.Tensor
    clean: torch.Tensor | None  # the init images' latents (image-to-image)


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on, rows [negatives..., positives...] under classifier-free guidance."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor
    token_mask: torch.Tensor | None


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

    def __init__(
        self,
        pipe: Any,
        device: torch.device,
        dtype: torch.dtype,
        *,
        clip_guide: ClipGuide | None = None,
        content_filter: ContentFilter | None = None,
        compile_unet: bool = False,
    ) -> None:
        # A StableDiffusionXLImg2ImgPipeline; diffusers sets its components dynamically, so it is typed Any.
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.clip_guide = clip_guide
        self.content_filter = content_filter
        self.unet = UNetRunner(pipe.unet, compile=compile_unet)
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.log_sigmas = training_sigmas(self.pipe.scheduler.alphas_cumprod).log()
        self.zero_unconditional = bool(self.pipe.config.get("force_zeros_for_empty_prompt", True))
        self.vae_scale_factor = int(self.pipe.vae_scale_factor)
        self._lock = threading.Lock()
        # Repeated prompts (and style templates) skip the text encoders.
        self.prompt_cache: OrderedDict[str, PromptEmbeddings] = OrderedDict()
        self.prompt_cache_bytes = PROMPT_CACHE_BYTES

    @classmethod
    def load(
        cls,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        *,
        vae_dtype: str = "auto",
        clip_model: str | None = None,
        content_filter: ContentFilter | None = None,
        compile_unet: bool = False,
    ) -> Engine:
        """`vae_dtype`: see `resolve_vae_dtype`.
        `clip_model`: a transformers CLIPModel folder, or `tiny` for the tiny random one.
        `compile_unet`: torch.compile the UNet (CUDA graphs); warm it up before serving."""
        from sdxl_bedrock.engine.models import load_pipeline

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        pipe: Any = load_pipeline(model, device=str(torch_device), dtype=torch_dtype)
        force_upcast = bool(pipe.vae.config.force_upcast)
        pipe.vae.to(dtype=resolve_vae_dtype(vae_dtype, torch_device, torch_dtype, force_upcast))
        pipe.set_progress_bar_config(disable=True)
        accelerate(pipe, torch_device)
        clip_guide = None
        if clip_model is not None:
            clip_guide = ClipGuide.load(resolve_clip_model(clip_model), torch_device)
        return cls(
            pipe,
            torch_device,
            torch_dtype,
            clip_guide=clip_guide,
            content_filter=content_filter,
            compile_unet=compile_unet,
        )

    def warm_up(self, width: int, height: int, batch_size: int) -> None:
        """One small text-to-image batch of this shape: compiles (and captures CUDA graphs) off the clock."""
        request = GenerationRequest(
            prompts=(WeightedPrompt("warm-up", 1.0),),
            negative_prompts=(),
            width=width,
            height=height,
            seed=1,
            steps=10,
            cfg_scale=7.0,
            sampler=Sampler.K_DPMPP_2M,
        )
        with self.unet.warming_up():
            self.generate([request] * batch_size)

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
            try:
                images = self._generate(requests, on_step)
            except torch.OutOfMemoryError:
                # Free the allocator's cache before the batcher retries this batch's members one by one.
                torch.cuda.empty_cache()
                raise
            except NonFiniteOutput:
                half = self.half_precision_modules()
                if not half:
                    raise ModelFailure("The model produced a non-finite image.") from None
                names = ", ".join(f"{type(module).__name__} in {module.dtype}" for module in half)
                log.warning("non-finite output (%s); retrying the batch once in float32", names)
                with self.in_float32():
                    images = self._generate(requests, on_step)
        if len(images) != len(requests):
            raise ModelFailure(f"the engine made {len(images)} images for {len(requests)} requests")
        # 8. screen with the content filter
        return [self.screen(request, image) for request, image in zip(requests, images, strict=True)]

    def _generate(self, requests: Sequence[GenerationRequest], on_step: StepCallback | None) -> list[Any]:
        latents = self.denoised_latents(requests, on_step)
        if latents is None:
            # image_strength 1 (or a window narrower than one step): the source is kept as it is.
            return [request.init_image for request in requests]

        # 6. decode
        images = self.decode(latents)

        # 7. the original pixels outside the mask
        return [self.paste_original(request, image) for request, image in zip(requests, images, strict=True)]

    def denoised_latents(
        self, requests: Sequence[GenerationRequest], on_step: StepCallback | None = None
    ) -> torch.Tensor | None:
        """Steps 1-5, all on the device: the batch's final latents; None when there is nothing to denoise."""
        first = requests[0]
        generators = [torch.Generator("cpu").manual_seed(request.seed) for request in requests]
        cfg_scales = torch.tensor([request.cfg_scale for request in requests], device=self.device)
        use_guidance = any(request.cfg_scale > 1 for request in requests)

        # 1. the sampler's run over the denoising window
        window = denoising_window(first.steps, first.denoise_from, first.denoise_to)
        sampling = start_sampling(
            first.sampler, self.scheduler_config, first.steps, window, generators, self.device
        )
        if sampling.steps == 0:
            return None

        # 2. encode the prompts
        positives, negatives, empty = self.encode_requests(requests, use_guidance)

        # 3. starting latents
        start = self.prepare_latents(sampling, requests, generators)

        # 4. added conditioning: pooled text embedding and (original size, crop, target size) ids
        conditioning = self.prepare_conditioning(first, positives, negatives, empty, use_guidance)

        # 5. denoise
        masks = [request.mask for request in requests if request.mask is not None]
        mask = latent_mask(masks, self.vae_scale_factor, start.latents) if masks else None
        return self.denoise(
            sampling, start, conditioning, cfg_scales, use_guidance, mask, requests, generators, on_step
        )

    # -- stages -------------------------------------------------------------------------------------------

    def encode_requests(
        self, requests: Sequence[GenerationRequest], use_guidance: bool
    ) -> tuple[list[PromptEmbeddings], list[PromptEmbeddings], PromptEmbeddings]:
        """Each request's positive conditioning and, under guidance, its negative (unconditional) one; and
        the empty prompt's, whose chunk pads shorter prompts."""
        styled = [apply_style(r.style_preset, r.prompts, r.negative_prompts) for r in requests]
        texts = sorted({"", *(p.text for prompts, negatives in styled for p in (*prompts, *negatives))})
        encoded = dict(zip(texts, self.encode_texts(texts), strict=True))
        empty = encoded[""]

        def blended(prompts: Sequence[Any]) -> PromptEmbeddings | None:
            if not any(p.weight > 0 for p in prompts):
                return None
            return blend_prompts(
                [encoded[p.text] for p in prompts], [p.weight for p in prompts], empty.tokens
            )

        positives, negatives = [], []
        for prompts, negative_prompts in styled:
            positive = blended(prompts) or empty
            positives.append(positive)
            if use_guidance:
                negatives.append(blended(negative_prompts) or self.unconditional(positive, empty))
        return positives, negatives, empty

    def unconditional(self, positive: PromptEmbeddings, empty: PromptEmbeddings) -> PromptEmbeddings:
        """What guidance pushes away from when the request names no negative prompt."""
        if self.zero_unconditional:
            return PromptEmbeddings(torch.zeros_like(positive.tokens), torch.zeros_like(positive.pooled))
        return empty

    def encode_texts(self, texts: list[str]) -> list[PromptEmbeddings]:
        """`encode_uncached` through a bounded LRU cache of recent prompts."""
        cache = self.prompt_cache
        missing = [text for text in dict.fromkeys(texts) if text not in cache]
        if missing:
            cache.update(zip(missing, self.encode_uncached(missing), strict=True))
        for text in texts:
            cache.move_to_end(text)
        encoded = [cache[text] for text in texts]
        held = sum(e.tokens.nbytes + e.pooled.nbytes for e in cache.values())
        while held > self.prompt_cache_bytes and len(cache) > len(texts):
            _, evicted = cache.popitem(last=False)
            held -= evicted.tokens.nbytes + evicted.pooled.nbytes
        return encoded

    def encode_uncached(self, texts: list[str]) -> list[PromptEmbeddings]:
        """Both CLIP encoders' penultimate hidden states, chunk by chunk, concatenated along the feature axis;
        the pooled output of the second encoder's first chunk."""
        pipe = self.pipe
        hidden_states = []
        pooled: torch.Tensor | None = None
        for tokenizer, text_encoder in (
            (pipe.tokenizer, pipe.text_encoder),
            (pipe.tokenizer_2, pipe.text_encoder_2),
        ):
            chunked = tokenize_in_chunks(tokenizer, texts)
            token_ids = torch.tensor([chunk for chunks in chunked for chunk in chunks], device=self.device)
            output = text_encoder(token_ids, output_hidden_states=True)
            if output[0].ndim == 2:
                pooled = output[0]
            hidden_states.append(output.hidden_states[-2])
            counts = [len(chunks) for chunks in chunked]
        assert pooled is not None, "the second text encoder must have a projection"
        features = torch.cat(hidden_states, dim=-1).to(self.dtype)
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [
            PromptEmbeddings(features[start : start + count].flatten(0, 1), pooled[start].to(self.dtype))
            for start, count in zip(starts, counts, strict=True)
        ]

    def prepare_latents(
        self, sampling: SamplingRun, requests: Sequence[GenerationRequest], generators: list[torch.Generator]
    ) -> StartingLatents:
        first = requests[0]
        latent_shape = (
            len(requests),
            self.pipe.unet.config.in_channels,
            first.height // self.vae_scale_factor,
            first.width // self.vae_scale_factor,
        )
        if not first.is_image_to_image:
            noise = randn_tensor(latent_shape, generator=generators, device=self.device, dtype=self.dtype)
            return StartingLatents(noise * sampling.init_noise_sigma, noise, None)

        vae = self.pipe.vae
        sources = [request.init_image for request in requests if request.init_image is not None]
        assert len(sources) == len(requests), "one batch key: every request is image-to-image"
        images = pixels_from_images(sources, self.device, vae.dtype)
        clean = vae.encode(images).latent_dist.sample(generator=generators)
        clean = self.to_model_latents(clean.to(self.dtype))
        noise = randn_tensor(clean.shape, generator=generators, device=self.device, dtype=self.dtype)
        return StartingLatents(sampling.noised(clean, noise, 0), noise, clean)

    def prepare_conditioning(
        self,
        request: GenerationRequest,
        positives: list[PromptEmbeddings],
        negatives: list[PromptEmbeddings],
        empty: PromptEmbeddings,
        use_guidance: bool,
    ) -> Conditioning:
        rows = [*negatives, *positives] if use_guidance else positives
        size_ids = [request.height, request.width, 0, 0, request.height, request.width]
        time_ids = torch.tensor([size_ids] * len(rows), dtype=self.dtype, device=self.device)
        stacked: BatchEmbeddings = stack_rows(rows, empty.tokens)
        return Conditioning(stacked.tokens, stacked.pooled, time_ids, stacked.token_mask)

    def denoise(
        self,
        sampling: SamplingRun,
        start: StartingLatents,
        conditioning: Conditioning,
        cfg_scales: torch.Tensor,
        use_guidance: bool,
        mask: torch.Tensor | None,
        requests: Sequence[GenerationRequest],
        generators: list[torch.Generator],
        on_step: StepCallback | None,
    ) -> torch.Tensor:
        """The latents at the end of the window; where it stops short of a clean image, the model's clean
        estimate at the last step run instead."""
        predict_noise = self.noise_predictor(conditioning, cfg_scales, use_guidance)
        clip_targets = self.clip_targets(requests)
        latents = start.latents
        denoised = latents
        for index in range(sampling.steps):
            guided = {
                row: target
                for row, target in clip_targets.items()
                if guided_on_step(requests[row].clip_guidance_preset, index)
            }
            step_predictor = (
                self.clip_steered(predict_noise, guided, requests, generators) if guided else predict_noise
            )
            result = sampling.step(step_predictor, latents, index)
            latents, denoised = result.latents, result.denoised
            if mask is not None and start.clean is not None:
                latents = blend_outside_mask(
                    latents, sampling.noised(start.clean, start.noise, index + 1), mask
                )
            if on_step is not None:
                on_step(index + 1, sampling.steps, functools.partial(latent_preview, latents))
        return latents if sampling.ends_clean else denoised

    def noise_predictor(
        self, conditioning: Conditioning, cfg_scales: torch.Tensor, use_guidance: bool
    ) -> NoisePredictor:
        def predict_noise(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            batch = torch.cat([model_input, model_input]) if use_guidance else model_input
            noise = self.unet(
                UNetInputs(
                    batch,
                    timestep,
                    conditioning.tokens,
                    conditioning.token_mask,
                    conditioning.pooled,
                    conditioning.time_ids,
                )
            )
            if use_guidance:
                noise_uncond, noise_text = noise.chunk(2)
                noise = guide(noise_uncond, noise_text, cfg_scales)
            return noise

        return predict_noise

    def clip_targets(self, requests: Sequence[GenerationRequest]) -> dict[int, torch.Tensor]:
        """For each batch row that asks for CLIP guidance: its prompt's CLIP text embedding."""
        rows = [row for row, request in enumerate(requests) if request.clip_guidance_preset != "NONE"]
        if not rows:
            return {}
        clip_guide = self.clip_guide
        if clip_guide is None:
            raise ModelFailure("CLIP guidance was asked for, but no CLIP model is loaded")
        if self.pipe.scheduler.config.prediction_type != "epsilon":
            raise ModelFailure("CLIP guidance needs a model that predicts noise (epsilon)")
        targets = {}
        for row in rows:
            request = requests[row]
            prompts, _ = apply_style(request.style_preset, request.prompts, request.negative_prompts)
            kept = [p for p in prompts if p.weight > 0]
            targets[row] = clip_guide.text_features([p.text for p in kept], [p.weight for p in kept])
        return targets

    def clip_steered(
        self,
        predict_noise: NoisePredictor,
        targets: dict[int, torch.Tensor],
        requests: Sequence[GenerationRequest],
        generators: list[torch.Generator],
    ) -> NoisePredictor:
        """`predict_noise`, then the CLIP gradient added to the noise of the rows in `targets`."""
        clip_guide = self.clip_guide
        assert clip_guide is not None

        def steered(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            noise = predict_noise(model_input, timestep)
            sigma = timestep_to_sigma(timestep, self.log_sigmas).to(noise.dtype)
            clean = model_input * (sigma**2 + 1) ** 0.5 - sigma * noise
            noise = noise.clone()
            for row, target in targets.items():
                preset = CLIP_GUIDANCE_PRESETS[requests[row].clip_guidance_preset]
                gradient = clip_guide.loss_gradient(
                    clean[row : row + 1], self.decode_pixels, target, preset, generators[row]
                )
                noise[row] += sigma * gradient[0].to(noise.dtype)
            return noise

        return steered

    def half_precision_modules(self) -> list[Any]:
        pipe = self.pipe
        modules = [pipe.unet, pipe.text_encoder, pipe.text_encoder_2, pipe.vae]
        return [module for module in modules if module.dtype != torch.float32]

    @contextlib.contextmanager
    def in_float32(self) -> Iterator[None]:
        """Every half-precision model in float32 for one retry (half precision overflowed), then back."""
        half_modules = {module: module.dtype for module in self.half_precision_modules()}
        dtype, cache = self.dtype, self.prompt_cache
        for module in half_modules:
            module.to(torch.float32)
        self.dtype, self.prompt_cache = torch.float32, OrderedDict()
        try:
            yield
        finally:
            for module, module_dtype in half_modules.items():
                module.to(module_dtype)
            self.dtype, self.prompt_cache = dtype, cache

    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Model latents -> the VAE's pixels in [-1, 1]."""
        vae = self.pipe.vae
        pixels: torch.Tensor = vae.decode(self.from_model_latents(latents.to(vae.dtype)), return_dict=False)[
            0
        ]
        return pixels

    def decode(self, latents: torch.Tensor) -> list[Any]:
        pixels = self.decode_pixels(latents)
        if not bool(torch.isfinite(pixels).all()):
            raise NonFiniteOutput("the decoded image holds NaN or infinity")
        return images_from_pixels(pixels)

    @staticmethod
    def paste_original(request: GenerationRequest, image: Image.Image) -> Image.Image:
        if request.mask is None or request.init_image is None:
            return image
        return paste_outside_mask(image, request.init_image, request.mask)

    def screen(self, request: GenerationRequest, image: Image.Image) -> GeneratedImage:
        content_filter = self.content_filter
        if content_filter is not None:
            texts = [p.text for p in request.prompts]
            if content_filter.check_prompt(texts) or content_filter.check_image(image):
                return GeneratedImage(obscure(image), request.seed, FinishReason.CONTENT_FILTERED)
        return GeneratedImage(image, request.seed)

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


class NonFiniteOutput(Exception):
    """Half precision overflowed somewhere: the batch is retried once in float32."""


def resolve_clip_model(spec: str) -> Path:
    """`tiny` (the tiny random CLIP, built on first use) or a local transformers CLIPModel folder."""
    if spec == "tiny":
        from sdxl_bedrock.engine.tiny import tiny_clip_path

        return tiny_clip_path()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"--clip-model {spec!r} is not a transformers CLIP folder (it has no config.json)")
    return path


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def resolve_vae_dtype(
    vae_dtype: str, device: torch.device, model_dtype: torch.dtype, force_upcast: bool
) -> torch.dtype:
    """`auto`: the model's dtype, except where a half-precision model has a VAE that overflows in float16
    (`force_upcast`, as SDXL's own): then bfloat16, float32's range at half the memory traffic, on a GPU
    that has it (ComfyUI's choice too), else float32. A non-finite image is retried in float32 either way."""
    if vae_dtype != "auto":
        return DTYPES[vae_dtype]
    if model_dtype == torch.float32 or not force_upcast:
        return model_dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
