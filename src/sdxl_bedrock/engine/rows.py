"""A request in flight (a `Row`), and a tick's UNet batch assembled from rows at any point of their runs.

A row keeps everything its own: its sampler's run (engine/samplers.py: its scheduler instance, window,
multistep history), its generator, its conditioning and guidance scale, its mode and mask. Rows of one
latent size can share a UNet call whatever else differs. Each row's tensors live on the model's device
and are made once, when the row starts; a tick only stacks them, so assembling a batch never copies
from the host or reads back from the device (no GPU sync in the denoising loop).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from sdxl_bedrock.engine.acceleration import UNetInputs
from sdxl_bedrock.engine.masking import blend_outside_mask
from sdxl_bedrock.engine.previews import LatentPreview
from sdxl_bedrock.engine.prompts import PromptEmbeddings, stack_rows
from sdxl_bedrock.engine.samplers import ModelCall, SamplerRun, SamplingPlan, StepEnd
from sdxl_bedrock.scheduler.types import StepCallback
from sdxl_bedrock.schema import GeneratedImage, GenerationRequest

_SERIALS = itertools.count()

RowStepCallback = StepCallback
"""Called after each of a row's steps with (steps done, steps in its window, preview): `preview()` starts a
copy of the row's current latents to the host, without waiting, for a small picture made off the engine
thread (engine/previews.py)."""


@dataclass(frozen=True)
class RowConditioning:
    """What the UNet is conditioned on for one row: its prompt, and under classifier-free guidance
    (`cfg_scale` > 1) the negative prompt that guidance pushes away from; the SDXL size ids [6]; the
    guidance scale as a 0-dim tensor; the empty prompt's encoding, which pads shorter prompts."""

    positive: PromptEmbeddings
    negative: PromptEmbeddings | None
    time_ids: torch.Tensor
    cfg_scale: torch.Tensor
    empty_chunk: torch.Tensor


@dataclass(frozen=True)
class StartingLatents:
    """One row's starting point [1, C, h, w]: the latents, the noise drawn for them, and for
    image-to-image the init image's latents (what a mask keeps, noised to each step's level)."""

    latents: torch.Tensor
    noise: torch.Tensor
    clean: torch.Tensor | None


@dataclass(eq=False)
class Row:
    """One request in flight: stages 1-4 fill it, ticks advance it, and its end leaves `final` latents (or
    `failed`); `result` once decoded. `pending` is the model call its run waits for, None once it ended."""

    request: GenerationRequest
    generator: torch.Generator
    plan: SamplingPlan
    on_step: RowStepCallback | None = None
    conditioning: RowConditioning | None = None
    start: StartingLatents | None = None
    mask: torch.Tensor | None = None  # [1, 1, h, w], 1 where the row regenerates
    clip_target: torch.Tensor | None = None
    run: SamplerRun | None = None
    pending: ModelCall | None = None
    latents: torch.Tensor | None = None
    denoised: torch.Tensor | None = None  # the clean estimate at the last step's end
    final: torch.Tensor | None = None
    failed: BaseException | None = None
    result: GeneratedImage | None = None
    steps_done: int = 0
    checkpoint: str = ""  # the model library's name of its checkpoint (engine/checkpoints.py sets it)
    memory_retries: int = 0  # ticks it sat out after running out of memory in its own step (at most 1)
    # Its LoRA adapters as (adapter key, weight): the UNet's and the text encoders' (engine/adapters.py).
    unet_adapters: tuple[tuple[str, float], ...] = ()
    text_adapters: tuple[tuple[str, float], ...] = ()
    # Unique for the engine's lifetime (unlike id()), so a tick can tell the same rows from new ones.
    serial: int = field(default_factory=lambda: next(_SERIALS))

    @property
    def guided(self) -> bool:
        """Classifier-free guidance: a scale <= 1 skips the unconditional pass, as diffusers does."""
        return self.request.cfg_scale > 1

    @property
    def done(self) -> bool:
        return self.pending is None

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(height, width) of its image in pixels: rows share a UNet call only with rows of the same size."""
        return (self.request.height, self.request.width)

    @property
    def unet_rows(self) -> int:
        """Rows of the UNet batch it takes per model call."""
        return 2 if self.guided else 1

    def begin(self) -> None:
        """Start the sampler's run from the starting latents; it waits at its first model call."""
        assert self.start is not None
        self.latents = self.start.latents
        self.run = self.plan.run(self.start.latents)
        self.pending = self.take(next(self.run))

    def advance(self, noise: torch.Tensor) -> None:
        """Give the pending model call its noise prediction [1, C, h, w]; the run goes on to its next call,
        through any steps that end on the way (mask blending, progress), or to its end."""
        assert self.run is not None
        try:
            self.pending = self.take(self.run.send(noise))
        except StopIteration as end:
            self.final, self.pending = end.value, None

    def stop(self) -> None:
        """End the run at the last step it took: `final` is that step's clean estimate (the model's guess of
        the finished latents; outside a mask, the init image's latents). Only for a row that took a step."""
        assert self.run is not None and self.denoised is not None, "a row stops after a step"
        self.run.close()
        final = self.denoised
        start = self.start
        if self.mask is not None and start is not None and start.clean is not None:
            final = blend_outside_mask(final, start.clean, self.mask)
        self.final, self.pending = final, None

    def take(self, event: ModelCall | StepEnd) -> ModelCall:
        assert self.run is not None
        while isinstance(event, StepEnd):
            event = self.run.send(self.step_ended(event))
        return event

    def step_ended(self, event: StepEnd) -> torch.Tensor:
        latents = event.latents
        start = self.start
        if self.mask is not None and start is not None and start.clean is not None:
            # Outside the mask, the init image's latents at the noise level the step reached.
            known = self.plan.noised(start.clean, start.noise, event.index + 1)
            latents = blend_outside_mask(latents, known, self.mask)
        self.latents = latents
        self.denoised = event.denoised
        self.steps_done = event.index + 1
        if self.on_step is not None:
            self.on_step(self.steps_done, self.plan.steps, functools.partial(LatentPreview, latents))
        return latents


def guide(noise_uncond: torch.Tensor, noise_text: torch.Tensor, cfg_scales: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022), one scale per batch row [B]."""
    scales = cfg_scales.view(-1, 1, 1, 1).to(noise_text.dtype)
    return noise_uncond + scales * (noise_text - noise_uncond)


# A tick's stacked conditioning: tokens, token mask, pooled, time ids, guidance scales, chunks per UNet row.
Conditioning = tuple[
    torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]
]


class TickBatch:
    """One tick's UNet batch: the unconditional rows of the guided rows, then every row's conditional row.

    Rows are ordered guided first, so the guided rows' two halves line up by slicing. The stacked
    conditioning is kept while the same rows tick again (a steady batch re-stacks nothing).
    """

    def __init__(self) -> None:
        self._key: tuple[int, ...] = ()
        self._conditioning: Conditioning

    @staticmethod
    def ordered(rows: Sequence[Row]) -> list[Row]:
        return [row for row in rows if row.guided] + [row for row in rows if not row.guided]

    def inputs(self, ordered: Sequence[Row]) -> UNetInputs:
        calls = [row.pending for row in ordered]
        assert all(call is not None for call in calls), "every row of a tick waits for a model call"
        guided = sum(row.guided for row in ordered)
        uncond_calls, all_calls = calls[:guided], calls
        sample = torch.cat([call.model_input for call in (*uncond_calls, *all_calls) if call is not None])
        timestep = torch.stack([call.timestep for call in (*uncond_calls, *all_calls) if call is not None])
        tokens, token_mask, pooled, time_ids, _, chunks = self.conditioning(ordered, guided)
        return UNetInputs(sample, timestep, tokens, token_mask, pooled, time_ids, chunks)

    def cfg_scales(self, ordered: Sequence[Row]) -> torch.Tensor:
        return self.conditioning(ordered, sum(row.guided for row in ordered))[4]

    def conditioning(self, ordered: Sequence[Row], guided: int) -> Conditioning:
        key = tuple(row.serial for row in ordered)
        if key != self._key:
            parts = [row.conditioning for row in ordered]
            assert all(part is not None for part in parts)
            conditionings = [part for part in parts if part is not None]
            negatives = [part.negative for part in conditionings[:guided] if part.negative is not None]
            embeddings = stack_rows(
                [*negatives, *(part.positive for part in conditionings)], conditionings[0].empty_chunk
            )
            time_ids = torch.stack([part.time_ids for part in (*conditionings[:guided], *conditionings)])
            cfg_scales = (
                torch.stack([part.cfg_scale for part in conditionings[:guided]])
                if guided
                else torch.empty(0, device=time_ids.device)
            )
            self._key = key
            self._conditioning = (
                embeddings.tokens,
                embeddings.token_mask,
                embeddings.pooled,
                time_ids,
                cfg_scales,
                embeddings.chunks,
            )
        return self._conditioning
