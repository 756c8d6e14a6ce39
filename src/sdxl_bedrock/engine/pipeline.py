"""The engine: requests as rows of a continuous batch, advanced one model call at a time in shared UNet
calls, with the arithmetic of diffusers' SDXL pipelines.

Every request reproduces `StableDiffusionXLImg2ImgPipeline.__call__` (same stage order, same random draws
from its own generator), but as a row (engine/rows.py) with its own sampler run, window, prompt, guidance
scale, mode and mask; a tick gathers one model call of each row given into one UNet call, whatever point of
whatever sampler each row is at. `generate` reads top-down like diffusers' `__call__`:

1. plan each row's sampler run over its denoising window (no step at all: the init image is the answer),
   and load its LoRA adapters (engine/adapters.py: each row adds its own adapters' deltas in shared calls)
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

import collections
import dataclasses
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from sdxl_bedrock.engine.acceleration import UNetRunner
from sdxl_bedrock.engine.adapters import AdapterPlan, HostLoras, LoadedAdapters
from sdxl_bedrock.engine.clip_guidance import ClipGuide
from sdxl_bedrock.engine.content_filter import ContentFilter, obscure
from sdxl_bedrock.engine.loading import load_model
from sdxl_bedrock.engine.masking import latent_mask, paste_outside_mask
from sdxl_bedrock.engine.noise import NOISE_LOOK_AHEAD
from sdxl_bedrock.engine.pixels import images_from_pixels, pixels_from_images
from sdxl_bedrock.engine.prompt_encoding import PromptEncoder, RowPrompts, styled_prompts
from sdxl_bedrock.engine.prompts import PromptEmbeddings
from sdxl_bedrock.engine.rows import (
    Row,
    RowConditioning,
    RowStepCallback,
    StartingLatents,
    TickBatch,
    guide,
)
from sdxl_bedrock.engine.samplers import plan_sampling, timestep_to_sigma, training_sigmas
from sdxl_bedrock.engine.vae import BudgetedVae, spoil
from sdxl_bedrock.errors import InvalidRequest, ModelFailure
from sdxl_bedrock.faults import Faults, FaultStage
from sdxl_bedrock.schema import (
    FilteredBy,
    FinishReason,
    GeneratedImage,
    GenerationRequest,
    InitLatents,
    PromptSpan,
    Sampler,
    WeightedPrompt,
)
from sdxl_bedrock.strength import window_steps

log = logging.getLogger(__name__)

DEFAULT_VAE_BUDGET_BYTES = 6 * 2**30


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
        vae_budget_bytes: int = DEFAULT_VAE_BUDGET_BYTES,
        faults: Faults | None = None,
        loras: HostLoras | None = None,
        max_loaded_loras: int = 8,
        max_host_loras: int = 32,
    ) -> None:
        """`vae_budget_bytes`: the VAE's working memory per call (engine/vae.py); `faults`: fault
        injection (faults.py), none by default; `loras`: where LoRA adapters are read from (none: requests
        carrying adapters are refused), `max_loaded_loras` / `max_host_loras` the adapters this checkpoint
        keeps on the device / in host memory (engine/adapters.py)."""
        # A StableDiffusionXLImg2ImgPipeline; diffusers sets its components dynamically, so it is typed Any.
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.clip_guide = clip_guide
        self.content_filter = content_filter
        self.unet = UNetRunner(pipe.unet, compile=compile_unet)
        self.faults = faults or Faults()
        self.vae = BudgetedVae(pipe.vae, vae_budget_bytes, self.faults)
        # Images whose decode was not finite, by outcome (redecoded, failed): exported at /metrics.
        self.non_finite: collections.Counter[str] = collections.Counter()
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.log_sigmas = training_sigmas(self.pipe.scheduler.alphas_cumprod).log()
        self.vae_scale_factor = int(self.pipe.vae_scale_factor)
        self._lock = threading.Lock()
        self._tick_batch = TickBatch()
        self.loras = loras
        self.adapters = LoadedAdapters(
            pipe, device, max_on_device=max_loaded_loras, max_on_host=max_host_loras
        )
        self.prompts = PromptEncoder(pipe, device, dtype, self.adapters)
        self._rows_with_adapters: weakref.WeakSet[Row] = weakref.WeakSet()
        self._unet_plan: tuple[tuple[int, ...], AdapterPlan | None] = ((), None)

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
        vae_budget_bytes: int = DEFAULT_VAE_BUDGET_BYTES,
        faults: Faults | None = None,
        single_file_config: Path | None = None,
        **adapters: Any,
    ) -> Engine:
        """`vae_dtype`: see loading.resolve_vae_dtype.
        `single_file_config`: the config folder a single-file `model` is read with (None: SDXL base's).
        `clip_model`: a transformers CLIPModel folder, or `tiny` for the tiny random one.
        `compile_unet`: torch.compile the UNet (CUDA graphs); warm it up before serving. `adapters`: the
        LoRA arguments of Engine (loras, max_loaded_loras, max_host_loras)."""
        loaded = load_model(
            model,
            device,
            dtype,
            vae_dtype=vae_dtype,
            clip_model=clip_model,
            single_file_config=single_file_config,
        )
        return cls(
            loaded.pipe,
            loaded.device,
            loaded.dtype,
            clip_guide=loaded.clip_guide,
            content_filter=content_filter,
            compile_unet=compile_unet,
            vae_budget_bytes=vae_budget_bytes,
            faults=faults,
            **adapters,
        )

    def warm_up(self, width: int, height: int, batch_size: int, prompt_chunks: int = 1) -> None:
        """One small text-to-image batch of this shape, its prompts `prompt_chunks` chunks of 77 tokens
        long: compiles (and captures CUDA graphs) off the clock."""
        # Chunk breaks make the length exact whatever the checkpoint's tokenizer.
        spans = tuple(PromptSpan("warm-up", starts_chunk=index > 0) for index in range(prompt_chunks))
        request = GenerationRequest(
            prompts=(WeightedPrompt("warm-up" * prompt_chunks, 1.0, spans),),
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

    def moved_to(self, device: torch.device) -> None:
        """Its modules were moved to `device` (engine/checkpoints.py): what it keeps of device tensors
        between ticks (cached prompt embeddings, the stacked tick batch) is emptied, to refill there."""
        self.prompts.cache.clear()
        self._tick_batch = TickBatch()
        self._unet_plan = ((), None)
        self.unet.invalidate()
        self.adapters.moved_to(device)

    def release(self) -> None:
        """It is being dropped: let go of what it keeps between ticks, so its memory can come back."""
        self.moved_to(self.device)

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

        Raises the first row's failure (ModelFailure for a non-finite image that the VAE in float32 could
        not mend, InvalidRequest for what the engine refuses about a request)."""
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
        once, where its window has no step: its init latents, where given, are then its final latents).
        Joining requests share the text encoders' and VAE's calls."""
        callbacks = list(on_steps) if on_steps is not None else [None] * len(requests)
        # 1. each sampler's run over its request's window, with the request's own generator
        rows = [
            self.planned_row(request, on_step) for request, on_step in zip(requests, callbacks, strict=True)
        ]
        for row in rows:
            given = row.request.init_latents
            if row.plan.steps == 0 and given is not None:
                # No step to take: the given latents are the answer, decoded as they are (A1111's hires
                # fix answers a skipped second pass so: its sampler returns the upscaled latents).
                row.final = self.given_latents(given, row.pixel_size)
        running = [row for row in rows if row.plan.steps > 0]
        if running:
            spoiled = self.faults.call(FaultStage.ENCODE, [positive_text(row.request) for row in running])
            # 1b. each row's LoRA adapters, loaded where they are not
            self.attach_adapters(running)
            # 2. encode the prompts
            prompts = self.prompts.encode(
                [row.request for row in running],
                [row.guided for row in running],
                [row.text_adapters for row in running],
            )
            if spoiled is not None:
                prompts = [spoiled_prompts(p) if bad else p for p, bad in zip(prompts, spoiled, strict=True)]
            # 3. starting latents
            self.prepare_latents(running)
            # 4. added conditioning: pooled text embedding and (original size, crop, target size) ids
            for row, encoded in zip(running, prompts, strict=True):
                row.conditioning = self.row_conditioning(row.request, encoded)
                row.clip_target = self.clip_target(row.request)
                row.begin()
        return rows

    def planned_row(self, request: GenerationRequest, on_step: RowStepCallback | None) -> Row:
        """Stage 1. Raises InvalidRequest for what the request itself asks and the engine cannot do (the
        wires' validation catches these first; this keeps them the client's errors if it does not)."""
        try:
            return self._planned_row(request, on_step)
        except ValueError as error:
            raise InvalidRequest(str(error)) from error

    def _planned_row(self, request: GenerationRequest, on_step: RowStepCallback | None) -> Row:
        init_image = request.init_image
        resized = init_image is not None and init_image.size != (request.width, request.height)
        if resized and request.mask is not None:
            raise ValueError("an init image resized in latent space takes no mask")
        generator = torch.Generator("cpu").manual_seed(request.seed)
        window = window_steps(request.steps, request.denoise_from, request.denoise_to)
        plan = plan_sampling(
            request.sampler,
            self.scheduler_config,
            request.steps,
            window,
            generator,
            self.device,
            request.sigma_schedule,
            request.eta,
            # CLIP guidance draws its cutouts from the same generator between the steps' draws.
            noise_look_ahead=1 if request.clip_guidance is not None else NOISE_LOOK_AHEAD,
        )
        if request.init_latents is not None and request.init_image is not None:
            raise ValueError("init latents take no init image")
        return Row(request, generator, plan, on_step)

    def attach_adapters(self, rows: Sequence[Row]) -> None:
        """Stage 1b: each row's LoRA adapters loaded into this checkpoint (adapters other rows in flight use
        stay), as (adapter key, weight) for its UNet calls and its prompts. Raises InvalidRequest for an
        adapter the library does not serve or that does not fit (LoraRefused)."""
        wanting = [row for row in rows if row.request.loras]
        if not wanting:
            return
        if self.loras is None:
            raise InvalidRequest("this server has no LoRA adapters (start it with --lora-dir)")
        live = {use.name for row in self._rows_with_adapters if not row.done for use in row.request.loras}
        for row in wanting:
            loaded = self.adapters.ensure(row.request.loras, self.loras, live)
            live |= set(loaded)
            row.unet_adapters = tuple(
                (loaded[use.name].key, use.unet_weight)
                for use in row.request.loras
                if use.unet_weight != 0 and "unet" in loaded[use.name].parts
            )
            row.text_adapters = tuple(
                (loaded[use.name].key, use.text_weight)
                for use in row.request.loras
                if use.text_weight != 0 and loaded[use.name].parts & {"text_encoder", "text_encoder_2"}
            )
            self._rows_with_adapters.add(row)

    def unet_plan(self, ordered: Sequence[Row], guided: int) -> AdapterPlan | None:
        """The tick's adapter plan over its UNet batch (the guided rows' unconditional halves, then every
        row), kept while the same rows tick again."""
        key = tuple(row.serial for row in ordered)
        if key != self._unet_plan[0]:
            batch = [row.unet_adapters for row in (*ordered[:guided], *ordered)]
            self._unet_plan = (key, AdapterPlan.of(batch, self.device, self.dtype))
        return self._unet_plan[1]

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
        for group in by_size.values():
            sources = [row.request.init_image for row in group if row.request.init_image is not None]
            images = pixels_from_images(sources, self.device, self.vae.dtype)
            sampled = self.vae.encode(images, [row.generator for row in group])
            latents = self.to_model_latents(sampled.to(self.dtype))
            for index, row in enumerate(group):
                encoded = latents[index : index + 1]
                grid = tuple(side // self.vae_scale_factor for side in row.pixel_size)
                if tuple(encoded.shape[-2:]) != grid:
                    encoded = torch.nn.functional.interpolate(encoded, size=grid, mode="bilinear")
                clean[row.serial] = encoded
        for row in rows:
            if row.request.init_latents is not None:
                clean[row.serial] = self.given_latents(row.request.init_latents, row.pixel_size)
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

    def given_latents(self, given: InitLatents, pixel_size: tuple[int, int]) -> torch.Tensor:
        """A request's init latents on the model's device, resized to the grid of `given.resize_to` and cut
        to the row's grid around the centre."""
        latents = torch.as_tensor(given.latents).to(self.device, self.dtype)
        height, width = (side // self.vae_scale_factor for side in pixel_size)
        resize_width, resize_height = given.resize_to or (pixel_size[1], pixel_size[0])
        grid = (resize_height // self.vae_scale_factor, resize_width // self.vae_scale_factor)
        if tuple(latents.shape[-2:]) != grid:
            latents = torch.nn.functional.interpolate(
                latents, size=grid, mode=given.resize.value, antialias=given.antialias
            )
        top, left = (grid[0] - height) // 2, (grid[1] - width) // 2
        return latents[:, :, top : top + height, left : left + width]

    def row_conditioning(self, request: GenerationRequest, prompts: RowPrompts) -> RowConditioning:
        size_ids = [request.height, request.width, 0, 0, request.height, request.width]
        time_ids = torch.tensor(size_ids, dtype=self.dtype, device=self.device)
        cfg_scale = torch.tensor(request.cfg_scale, dtype=torch.float32, device=self.device)
        return RowConditioning(prompts.positive, prompts.negative, time_ids, cfg_scale, prompts.empty.tokens)

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
            spoiled = self.faults.call(FaultStage.UNET, [positive_text(row.request) for row in ordered])
            plan = self.unet_plan(ordered, guided)
            if plan is None:
                predicted = self.unet(inputs)
            else:
                with self.adapters.applied(plan):
                    # Adapters' deltas are hooks on the eager modules (--compile refuses --lora-dir).
                    predicted = self.unet.run_eager(inputs)
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise
        if spoiled is not None:
            predicted = spoil(predicted, [*spoiled[:guided], *spoiled])
        noise_text = predicted[guided:]
        if guided:
            steered = guide(predicted[:guided], noise_text[:guided], self._tick_batch.cfg_scales(ordered))
            noise_text = torch.cat([steered, noise_text[guided:]])
        for index, row in enumerate(ordered):
            try:
                noise = self.clip_steered(row, noise_text[index : index + 1])
            except torch.OutOfMemoryError as error:
                # Nothing of the row has moved yet: it waits at the same model call for the next tick,
                # once; the UNet's part is run again with it.
                if row.memory_retries > 0:
                    row.failed, row.pending = error, None
                else:
                    row.memory_retries += 1
                continue
            except Exception as error:
                row.failed, row.pending = error, None
                continue
            try:
                row.advance(noise)
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
            clean,
            lambda latents: self.decode_pixels(latents, [positive_text(row.request)]),
            row.clip_target,
            guidance,
            row.generator,
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
        """Stages 6-8 for rows whose run ended: `row.result`, or `row.failed` where the row's own image
        failed. Rows that already have their result are skipped (the stage runner may call again with some
        of them after an error). Rows of one size decode together, in slices that fit the VAE's budget
        (engine/vae.py); a non-finite image is decoded again with the VAE alone in float32, and fails alone
        if that does not mend it or its latents were not finite already.

        Raises what the VAE raises for the call (an out-of-memory error among them), leaving the rows it
        did not reach as they were."""
        pending = [row for row in rows if row.failed is None and row.result is None]
        for row in pending:
            if row.final is None:
                # image_strength 1 (or a window narrower than one step): the source is kept as it is
                # (resized to the output size where it has another).
                source = row.request.init_image
                assert source is not None
                size = (row.request.width, row.request.height)
                row.result = self.screen(row.request, source.resize(size, Image.Resampling.BILINEAR))
        by_size: defaultdict[tuple[int, int], list[Row]] = defaultdict(list)
        for row in pending:
            if row.final is not None:
                by_size[row.pixel_size].append(row)
        for group in by_size.values():
            # 6. decode
            latents = torch.cat([row.final for row in group if row.final is not None])
            pixels = self.decode_pixels(latents, [positive_text(row.request) for row in group])
            finite = torch.isfinite(pixels).flatten(1).all(1).tolist()
            images = images_from_pixels(pixels)
            for row, decoded, is_finite in zip(group, images, finite, strict=True):
                image = decoded if is_finite else self.decoded_again(row)
                if image is None:
                    continue
                # 7. the original pixels outside the mask
                image = self.paste_original(row.request, image)
                # 8. screen with the content filter
                row.result = self.screen(row.request, image)
        for row in pending:
            result = row.result
            if row.request.return_latents and row.final is not None and result is not None:
                # Host memory: a later request may run on another device, and the wire holds them opaque.
                latents = row.final.detach().to("cpu", torch.float32)
                row.result = dataclasses.replace(result, latents=latents)

    def decoded_again(self, row: Row) -> Image.Image | None:
        """A row whose decode was not finite: its latents decoded again with the VAE alone in float32 (a
        half-precision VAE overflowed), or `row.failed` where that cannot help or does not."""
        assert row.final is not None
        if not bool(torch.isfinite(row.final).all()):
            self.non_finite["failed"] += 1
            advice = (
                "Try another seed, or serve with --dtype bfloat16 or float32."
                if self.dtype in (torch.float16, torch.bfloat16)
                else "Try another seed, or lower LoRA weights."
            )
            row.failed = ModelFailure(
                "The model produced a non-finite image: its latents hold NaN or infinity (the UNet "
                f"overflowed in {self.dtype}). {advice}"
            )
            return None
        log.warning("a non-finite decode in %s; decoding it again with the VAE in float32", self.vae.dtype)
        with self.vae.in_float32():
            pixels = self.decode_pixels(row.final, [positive_text(row.request)])
        if not bool(torch.isfinite(pixels).all()):
            self.non_finite["failed"] += 1
            row.failed = ModelFailure("The model produced a non-finite image, the VAE in float32 too.")
            return None
        self.non_finite["redecoded"] += 1
        return images_from_pixels(pixels)[0]

    def decode_pixels(self, latents: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """Model latents [B, C, h, w] -> the VAE's pixels in [-1, 1], [B, 3, H, W], in budgeted slices;
        `prompts` (one per row) are what fault injection matches."""
        vae_latents = self.from_model_latents(latents.to(self.vae.dtype))
        return self.vae.decode(vae_latents, list(prompts) if prompts is not None else [""] * len(latents))

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


def positive_text(request: GenerationRequest) -> str:
    """What fault injection's `@TEXT` matches: the request's positive prompts."""
    return "\n".join(prompt.text for prompt in request.prompts)


def spoiled_prompts(prompts: RowPrompts) -> RowPrompts:
    """Fault injection's `encode=nan`: the positive conditioning made non-finite (a copy: the prompt cache
    keeps the real one)."""
    nan = float("nan")
    positive = PromptEmbeddings(
        torch.full_like(prompts.positive.tokens, nan), torch.full_like(prompts.positive.pooled, nan)
    )
    return dataclasses.replace(prompts, positive=positive)


class NonFiniteOutput(Exception):
    """`Engine.decode` made an image with NaN or infinity (half precision overflowed somewhere)."""
