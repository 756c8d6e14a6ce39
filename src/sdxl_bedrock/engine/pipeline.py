"""The engine: requests as rows of a continuous batch, advanced one model call at a time in shared UNet
calls, with the arithmetic of diffusers' SDXL pipelines.

Every request reproduces `StableDiffusionXLImg2ImgPipeline.__call__` (same stage order, same random draws
from its own generator), but as a row (engine/rows.py) with its own sampler run, window, prompt, guidance
scale, mode and mask; a tick gathers one model call of each row given into one UNet call, whatever point of
whatever sampler each row is at. `generate` reads top-down like diffusers' `__call__`:

1. plan each row's sampler run over its denoising window (no step at all: the init image is the answer)
2. encode the prompts (styled, weighted, blended, in 77-token chunks)
3. prepare the starting latents (encode the init image and add noise, or pure noise)
4. prepare the SDXL added conditioning (pooled text embedding and size ids)
5. denoise: ticks of one UNet call (classifier-free guidance per row, CLIP guidance, mask blending after
   each row's step) until every row's run has ended
6. decode (the final latents, or the clean estimate when the window stops before the end)
7. paste the original pixels back outside the mask
8. screen with the content filter

The batcher (batching.py) runs the same stages as a continuous batch: `start` (1-4) as requests join,
`tick` (5) with any rows of one latent size, `finish` (6-8) as rows end.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from sdxl_bedrock.engine.acceleration import UNetRunner, accelerate
from sdxl_bedrock.engine.clip_guidance import ClipGuide
from sdxl_bedrock.engine.content_filter import ContentFilter, obscure
from sdxl_bedrock.engine.masking import latent_mask, paste_outside_mask
from sdxl_bedrock.engine.pixels import images_from_pixels, pixels_from_images
from sdxl_bedrock.engine.prompts import PromptEmbeddings, blend_prompts, emphasize, tokenize_prompts
from sdxl_bedrock.engine.rows import (
    Row,
    RowConditioning,
    RowStepCallback,
    StartingLatents,
    TickBatch,
    guide,
)
from sdxl_bedrock.engine.samplers import (
    denoising_window,
    plan_sampling,
    timestep_to_sigma,
    training_sigmas,
)
from sdxl_bedrock.errors import ModelFailure
from sdxl_bedrock.schema import (
    FilteredBy,
    FinishReason,
    GeneratedImage,
    GenerationRequest,
    PromptKey,
    Sampler,
    WeightedPrompt,
)

log = logging.getLogger(__name__)

Prompts = tuple[WeightedPrompt, ...]
# Bounded by bytes, not entries: a 2000-character prompt is ~27 chunks of 77 tokens.
PROMPT_CACHE_BYTES = 256 * 1024 * 1024


class Engine:
    """Owns the loaded SDXL components. Its methods are called from one thread at a time (the server's
    engine thread): `generate` for a whole batch, or `start` / `tick` / `finish` for a continuous one."""

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
        self._tick_batch = TickBatch()
        # Repeated prompts (and style templates) skip the text encoders.
        self.prompt_cache: OrderedDict[PromptKey, PromptEmbeddings] = OrderedDict()
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
            sampler=Sampler.DPMPP_2M,
        )
        with self.unet.warming_up():
            self.generate([request] * batch_size)

    def gpu_memory_bytes(self) -> int:
        return int(torch.cuda.memory_allocated(self.device)) if self.device.type == "cuda" else 0

    def cuda_memory(self) -> dict[str, dict[str, int]] | None:
        """The GPU's memory in bytes as A1111's /sdapi/v1/memory reports it (`system` free, used and total;
        torch's `active`, `allocated`, `reserved`, `inactive` current and peak; allocation `events`), or None
        on another device."""
        if self.device.type != "cuda":
            return None
        free, total = torch.cuda.mem_get_info(self.device)
        stats = torch.cuda.memory_stats(self.device)

        def current_and_peak(name: str) -> dict[str, int]:
            return {"current": int(stats[f"{name}.all.current"]), "peak": int(stats[f"{name}.all.peak"])}

        return {
            "system": {"free": int(free), "used": int(total - free), "total": int(total)},
            "active": current_and_peak("active_bytes"),
            "allocated": current_and_peak("allocated_bytes"),
            "reserved": current_and_peak("reserved_bytes"),
            "inactive": current_and_peak("inactive_split_bytes"),
            "events": {"retries": int(stats["num_alloc_retries"]), "oom": int(stats["num_ooms"])},
        }

    # -- a whole batch -----------------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], on_steps: Sequence[RowStepCallback | None] | None = None
    ) -> list[GeneratedImage]:
        """One image per request, in order; `on_steps` (one callback or None per request) see progress.

        Raises the first row's failure (ModelFailure for a non-finite image that float32 could not mend)."""
        with self._lock:
            # 1-4. plan, encode the prompts, starting latents, added conditioning
            rows = self.start(requests, on_steps)
            # 5. denoise
            self.denoise(rows)
            # 6-8. decode, paste the original outside the mask, screen
            self.finish(rows)
        for row in rows:
            if row.failed is not None:
                raise row.failed
        return [row.result for row in rows if row.result is not None]

    def denoised_latents(self, requests: Sequence[GenerationRequest]) -> list[torch.Tensor | None]:
        """Stages 1-5: each request's final latents [1, C, h, w] (None where its window has no step)."""
        rows = self.start(requests)
        self.denoise(rows)
        for row in rows:
            if row.failed is not None:
                raise row.failed
        return [row.final for row in rows]

    def denoise(self, rows: Sequence[Row]) -> None:
        """Stage 5 for a batch: ticks, each of all running rows of one latent size, until every run ended."""
        while running := [row for row in rows if not row.done]:
            first_size = running[0].pixel_size
            self.tick([row for row in running if row.pixel_size == first_size])

    # -- 1-4: rows join ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def start(
        self, requests: Sequence[GenerationRequest], on_steps: Sequence[RowStepCallback | None] | None = None
    ) -> list[Row]:
        """Stages 1-4 for requests joining the run, each a row waiting at its first model call (or done at
        once, where its window has no step). Joining requests share the text encoders' and VAE's calls."""
        callbacks = list(on_steps) if on_steps is not None else [None] * len(requests)
        # 1. each sampler's run over its request's window, with the request's own generator
        rows = [
            self.planned_row(request, on_step) for request, on_step in zip(requests, callbacks, strict=True)
        ]
        running = [row for row in rows if row.plan.steps > 0]
        if running:
            # 2. encode the prompts
            prompts = self.encode_prompts(running)
            # 3. starting latents
            self.prepare_latents(running)
            # 4. added conditioning: pooled text embedding and (original size, crop, target size) ids
            for row, (positive, negative, empty) in zip(running, prompts, strict=True):
                row.conditioning = self.row_conditioning(row.request, positive, negative, empty)
                row.clip_target = self.clip_target(row.request)
                row.begin()
        return rows

    def planned_row(self, request: GenerationRequest, on_step: RowStepCallback | None) -> Row:
        init_image = request.init_image
        resized = init_image is not None and init_image.size != (request.width, request.height)
        if resized and request.mask is not None:
            raise ValueError("an init image resized in latent space takes no mask")
        generator = torch.Generator("cpu").manual_seed(request.seed)
        window = denoising_window(request.steps, request.denoise_from, request.denoise_to)
        plan = plan_sampling(
            request.sampler,
            self.scheduler_config,
            request.steps,
            window,
            generator,
            self.device,
            request.sigma_schedule,
            request.eta,
        )
        return Row(request, generator, plan, on_step)

    def encode_prompts(
        self, rows: Sequence[Row]
    ) -> list[tuple[PromptEmbeddings, PromptEmbeddings | None, PromptEmbeddings]]:
        """Each row's positive conditioning; under guidance its negative (unconditional) one; and the empty
        prompt's, whose chunk pads shorter prompts. One text-encoder call for all the rows' texts."""
        styled = [styled_prompts(row.request) for row in rows]
        keys = list(
            dict.fromkeys(
                ["", *(p.encoding_key() for prompts, negatives in styled for p in (*prompts, *negatives))]
            )
        )
        encoded = dict(zip(keys, self.encode_texts(keys), strict=True))
        empty = encoded[""]

        def blended(prompts: Sequence[WeightedPrompt]) -> PromptEmbeddings | None:
            if not any(p.weight > 0 for p in prompts):
                return None
            return blend_prompts(
                [encoded[p.encoding_key()] for p in prompts], [p.weight for p in prompts], empty.tokens
            )

        embeddings = []
        for row, (prompts, negative_prompts) in zip(rows, styled, strict=True):
            positive = blended(prompts) or empty
            negative = (
                (blended(negative_prompts) or self.unconditional(positive, empty)) if row.guided else None
            )
            embeddings.append((positive, negative, empty))
        return embeddings

    def unconditional(self, positive: PromptEmbeddings, empty: PromptEmbeddings) -> PromptEmbeddings:
        """What guidance pushes away from when the request names no negative prompt."""
        if self.zero_unconditional:
            return PromptEmbeddings(torch.zeros_like(positive.tokens), torch.zeros_like(positive.pooled))
        return empty

    def encode_texts(self, texts: Sequence[PromptKey]) -> list[PromptEmbeddings]:
        """`encode_uncached` through a bounded LRU cache of recent prompts (texts, or spans with emphasis)."""
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

    def encode_uncached(self, texts: list[PromptKey]) -> list[PromptEmbeddings]:
        """Both CLIP encoders' penultimate hidden states, chunk by chunk, each encoder's emphasised by the
        spans' emphasis (prompts.emphasize), concatenated along the feature axis; the pooled output of the
        second encoder's first chunk."""
        pipe = self.pipe
        hidden_states = []
        pooled: torch.Tensor | None = None
        for tokenizer, text_encoder in (
            (pipe.tokenizer, pipe.text_encoder),
            (pipe.tokenizer_2, pipe.text_encoder_2),
        ):
            chunked = tokenize_prompts(tokenizer, texts)
            token_ids = torch.tensor(
                [chunk for chunks in chunked for chunk in chunks.token_ids], device=self.device
            )
            output = text_encoder(token_ids, output_hidden_states=True)
            if output[0].ndim == 2:
                pooled = output[0]
            emphasis = [factors for chunks in chunked for factors in chunks.emphasis]
            hidden_states.append(emphasize(output.hidden_states[-2], emphasis))
            counts = [len(chunks.token_ids) for chunks in chunked]
        assert pooled is not None, "the second text encoder must have a projection"
        features = torch.cat(hidden_states, dim=-1).to(self.dtype)
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [
            PromptEmbeddings(features[start : start + count].flatten(0, 1), pooled[start].to(self.dtype))
            for start, count in zip(starts, counts, strict=True)
        ]

    def prepare_latents(self, rows: Sequence[Row]) -> None:
        """Each row's starting latents: the init image encoded (one VAE call per image size) and noised to
        the window's start, or pure noise; masked rows also get their latent mask. An init image of
        another size than the output is encoded at its own size and its latents resized (bilinear) to the
        output's latent grid."""
        clean: dict[int, torch.Tensor] = {}
        by_size: defaultdict[tuple[int, int], list[Row]] = defaultdict(list)
        for row in rows:
            if row.request.init_image is not None:
                by_size[row.request.init_image.size].append(row)
        vae = self.pipe.vae
        for group in by_size.values():
            sources = [row.request.init_image for row in group if row.request.init_image is not None]
            images = pixels_from_images(sources, self.device, vae.dtype)
            sampled = vae.encode(images).latent_dist.sample(generator=[row.generator for row in group])
            latents = self.to_model_latents(sampled.to(self.dtype))
            for index, row in enumerate(group):
                encoded = latents[index : index + 1]
                grid = tuple(side // self.vae_scale_factor for side in row.pixel_size)
                if tuple(encoded.shape[-2:]) != grid:
                    encoded = torch.nn.functional.interpolate(encoded, size=grid, mode="bilinear")
                clean[row.serial] = encoded
        channels = self.pipe.unet.config.in_channels
        for row in rows:
            height, width = (side // self.vae_scale_factor for side in row.pixel_size)
            shape = (1, channels, height, width)
            noise = randn_tensor(shape, generator=row.generator, device=self.device, dtype=self.dtype)
            source = clean.get(row.serial)
            if source is None:
                row.start = StartingLatents(noise * row.plan.init_noise_sigma, noise, None)
            else:
                row.start = StartingLatents(row.plan.noised(source, noise, 0), noise, source)
            if row.request.mask is not None and source is not None:
                row.mask = latent_mask([row.request.mask], self.vae_scale_factor, source)

    def row_conditioning(
        self,
        request: GenerationRequest,
        positive: PromptEmbeddings,
        negative: PromptEmbeddings | None,
        empty: PromptEmbeddings,
    ) -> RowConditioning:
        size_ids = [request.height, request.width, 0, 0, request.height, request.width]
        time_ids = torch.tensor(size_ids, dtype=self.dtype, device=self.device)
        cfg_scale = torch.tensor(request.cfg_scale, dtype=torch.float32, device=self.device)
        return RowConditioning(positive, negative, time_ids, cfg_scale, empty.tokens)

    def clip_target(self, request: GenerationRequest) -> torch.Tensor | None:
        """For a row that asks for CLIP guidance: its prompt's CLIP text embedding."""
        if request.clip_guidance is None:
            return None
        clip_guide = self.clip_guide
        if clip_guide is None:
            raise ModelFailure("CLIP guidance was asked for, but no CLIP model is loaded")
        if self.pipe.scheduler.config.prediction_type != "epsilon":
            raise ModelFailure("CLIP guidance needs a model that predicts noise (epsilon)")
        prompts, _ = styled_prompts(request)
        kept = [p for p in prompts if p.weight > 0]
        return clip_guide.text_features([p.text for p in kept], [p.weight for p in kept])

    # -- 5: a tick ---------------------------------------------------------------------------------------

    @torch.inference_mode()
    def tick(self, rows: Sequence[Row]) -> None:
        """Stage 5 for one model call of each row (all of one latent size): one UNet call, classifier-free
        guidance per row, CLIP guidance where a row asks for it on this step, then each row's sampler takes
        its noise (mask blending and progress at each step's end).

        A failure of the UNet call raises, with no row changed (torch.OutOfMemoryError frees the allocator's
        cache first); a failure of one row's sampler only fails that row (`row.failed`)."""
        ordered = self._tick_batch.ordered(rows)
        guided = sum(row.guided for row in ordered)
        inputs = self._tick_batch.inputs(ordered)
        try:
            predicted = self.unet(inputs)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise
        noise_text = predicted[guided:]
        if guided:
            steered = guide(predicted[:guided], noise_text[:guided], self._tick_batch.cfg_scales(ordered))
            noise_text = torch.cat([steered, noise_text[guided:]])
        for index, row in enumerate(ordered):
            try:
                row.advance(self.clip_steered(row, noise_text[index : index + 1]))
            except Exception as error:
                row.failed, row.pending = error, None

    def clip_steered(self, row: Row, noise: torch.Tensor) -> torch.Tensor:
        """`noise` plus the CLIP gradient (engine/clip_guidance.py), on the steps the row's guidance takes."""
        call, guidance = row.pending, row.request.clip_guidance
        if row.clip_target is None or guidance is None or call is None or not guidance.guides_step(call.step):
            return noise
        clip_guide = self.clip_guide
        assert clip_guide is not None
        sigma = timestep_to_sigma(call.timestep, self.log_sigmas).to(noise.dtype)
        clean = call.model_input * (sigma**2 + 1) ** 0.5 - sigma * noise
        gradient = clip_guide.loss_gradient(
            clean, self.decode_pixels, row.clip_target, guidance, row.generator
        )
        return noise + sigma * gradient.to(noise.dtype)

    @torch.inference_mode()
    def stop(self, rows: Sequence[Row]) -> None:
        """End these running rows now, each with the clean estimate of the last step it took (what A1111's
        interrupt and skip answer); `finish` then decodes them as any ended row. Each must have taken a
        step."""
        for row in rows:
            if not row.done:
                row.stop()

    # -- 6-8: rows end -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def finish(self, rows: Sequence[Row]) -> None:
        """Stages 6-8 for rows whose run ended: `row.result`, or `row.failed`. Rows of one size decode in one
        VAE call; a row whose image is not finite is made again alone with every model in float32."""
        finals = [row for row in rows if row.failed is None and row.final is not None]
        for row in rows:
            if row.failed is None and row.final is None:
                # image_strength 1 (or a window narrower than one step): the source is kept as it is
                # (resized to the output size where it has another).
                source = row.request.init_image
                assert source is not None
                size = (row.request.width, row.request.height)
                row.result = self.screen(row.request, source.resize(size, Image.Resampling.BILINEAR))
        by_size: defaultdict[tuple[int, int], list[Row]] = defaultdict(list)
        for row in finals:
            by_size[row.pixel_size].append(row)
        for group in by_size.values():
            # 6. decode
            pixels = self.decode_pixels(torch.cat([row.final for row in group if row.final is not None]))
            finite = torch.isfinite(pixels).flatten(1).all(1).tolist()
            images = images_from_pixels(pixels)
            for row, image, is_finite in zip(group, images, finite, strict=True):
                if not is_finite:
                    self.made_again_in_float32(row)
                    continue
                # 7. the original pixels outside the mask
                image = self.paste_original(row.request, image)
                # 8. screen with the content filter
                row.result = self.screen(row.request, image)

    def made_again_in_float32(self, row: Row) -> None:
        half = self.half_precision_modules()
        if not half:
            row.failed = ModelFailure("The model produced a non-finite image.")
            return
        names = ", ".join(f"{type(module).__name__} in {module.dtype}" for module in half)
        log.warning("non-finite output (%s); making the image again in float32", names)
        with self.in_float32():
            again = self.start([row.request])
            self.denoise(again)
            self.finish(again)
        row.result, row.failed = again[0].result, again[0].failed

    def half_precision_modules(self) -> list[Any]:
        pipe = self.pipe
        modules = [pipe.unet, pipe.text_encoder, pipe.text_encoder_2, pipe.vae]
        return [module for module in modules if module.dtype != torch.float32]

    @contextlib.contextmanager
    def in_float32(self) -> Iterator[None]:
        """Every half-precision model in float32 for one retry (half precision overflowed), then back: also
        when the conversion itself fails halfway, so the engine never believes in dtypes it does not have."""
        half_modules = {module: module.dtype for module in self.half_precision_modules()}
        dtype, cache = self.dtype, self.prompt_cache
        try:
            for module in half_modules:
                module.to(torch.float32)
            self.dtype, self.prompt_cache = torch.float32, OrderedDict()
            yield
        finally:
            for module, module_dtype in half_modules.items():
                module.to(module_dtype)
            self.dtype, self.prompt_cache = dtype, cache

    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Model latents [B, C, h, w] -> the VAE's pixels in [-1, 1], [B, 3, H, W]."""
        vae = self.pipe.vae
        pixels: torch.Tensor = vae.decode(self.from_model_latents(latents.to(vae.dtype)), return_dict=False)[
            0
        ]
        return pixels

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Model latents -> RGB images (a non-finite image raises NonFiniteOutput)."""
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
            if content_filter.check_prompt(texts):
                filtered_by: FilteredBy | None = FilteredBy.PROMPT
            elif content_filter.check_image(image):
                filtered_by = FilteredBy.OUTPUT_IMAGE
            else:
                filtered_by = None
            if filtered_by is not None:
                return GeneratedImage(
                    obscure(image), request.seed, FinishReason.CONTENT_FILTERED, filtered_by
                )
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


def styled_prompts(request: GenerationRequest) -> tuple[Prompts, Prompts]:
    """The request's prompts and negative prompts with its style applied, if it has one."""
    if request.style is None:
        return request.prompts, request.negative_prompts
    return request.style.apply(request.prompts, request.negative_prompts)


class NonFiniteOutput(Exception):
    """`Engine.decode` made an image with NaN or infinity (half precision overflowed somewhere)."""


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
