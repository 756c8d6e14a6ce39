"""What the wires call to make images: admit a wire-neutral request, run its samples through the batcher,
and get PNG artifacts back. No torch here: the engine runs behind the batcher, on the engine thread."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from sdxl_bedrock.codecs import encode_png
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, ModelFailure, ModelNotReady, ShuttingDown, Throttled
from sdxl_bedrock.faults import Faults, FaultStage
from sdxl_bedrock.scheduler.batcher import Batcher
from sdxl_bedrock.scheduler.stages import Stage, StageRunner
from sdxl_bedrock.scheduler.stops import Stopped, StopSignal
from sdxl_bedrock.scheduler.types import StepCallback
from sdxl_bedrock.schema import MAX_SEED, Artifact, GeneratedImage, GenerationRequest
from sdxl_bedrock.workers import Workers

log = logging.getLogger(__name__)


class Generations:
    def __init__(self, settings: Settings, workers: Workers, faults: Faults | None = None) -> None:
        self.settings = settings
        self.workers = workers
        self.faults = faults or Faults()
        self.batcher: Batcher | None = None  # set once the model is loaded
        self.draining = False

    def admit(self, request: GenerationRequest) -> Batcher:
        """Everything that can refuse a request before work starts (and before a stream's 200): a server
        shutting down, a model still loading, a capability this server lacks, a full queue."""
        if self.draining:
            raise ShuttingDown("The server is shutting down; send the request elsewhere or retry later.")
        batcher = self.batcher
        if batcher is None:
            raise ModelNotReady("The model is still loading; try again shortly.")
        if request.clip_guidance is not None and self.settings.clip_model is None:
            raise InvalidRequest(
                f"clip_guidance_preset {request.clip_guidance.name} needs a CLIP model, and none is "
                "configured on this server; use NONE",
                field="clip_guidance_preset",
            )
        batcher.check_capacity()
        # All samples or none: each takes a place in the queue.
        if batcher.depth + request.samples > batcher.max_queue:
            raise Throttled("Too many requests, please wait before trying again.")
        return batcher

    async def generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        stop: StopSignal | None = None,
    ) -> list[Artifact]:
        """One artifact per sample, in the order of their seeds (see `sample_requests`).

        `on_step` sees each sample's steps (on the engine thread). `stop` can end the samples early (see
        StopSignal): a sample stopped after a step gives its image so far; one stopped before any step gives
        none, so fewer artifacts come back (their seeds tell which)."""
        batcher = self.admit(request)

        async def one(sample: GenerationRequest) -> GeneratedImage | None:
            try:
                return await batcher.submit(sample, on_step, stop)
            except Stopped:
                return None

        samples = sample_requests(request)
        submitted = [asyncio.ensure_future(one(sample)) for sample in samples]
        try:
            outcomes = await asyncio.gather(*submitted)
        finally:
            # When one sample fails (or the caller goes away) the others are dropped, not left running.
            for job in submitted:
                job.cancel()
        images = [
            (sample, image) for sample, image in zip(samples, outcomes, strict=True) if image is not None
        ]
        return list(await asyncio.gather(*(self.workers.on_host(self.encoded, *pair) for pair in images)))

    def encoded(self, sample: GenerationRequest, generated: GeneratedImage) -> Artifact:
        """The PNG stage of one image, on a host thread, through the stage runner (a host out-of-memory
        error is tried once more). Raises ModelFailure where it fails."""
        artifacts: list[Artifact] = []
        failures: list[BaseException] = []

        def encode(group: Sequence[GeneratedImage]) -> None:
            self.faults.call(FaultStage.PNG, ["\n".join(prompt.text for prompt in sample.prompts)])
            artifacts.extend(to_artifact(image) for image in group)

        runner: StageRunner[GeneratedImage] = StageRunner(lambda _stage, _row, error: failures.append(error))
        runner.run(Stage.PNG, [generated], encode)
        if failures:
            log.error("encoding an image as PNG failed: %r", failures[0], exc_info=failures[0])
            raise ModelFailure(f"The server failed to encode the image: {type(failures[0]).__name__}")
        return artifacts[0]

    async def generate_all(
        self,
        requests: Sequence[GenerationRequest],
        on_step: StepCallback | None = None,
        stop: StopSignal | None = None,
    ) -> list[Artifact]:
        """The artifacts of several requests run side by side (an edit's images), in the requests' order;
        when one fails (or the caller goes away) the others are dropped."""
        results = await self.generate_each(requests, [on_step] * len(requests), stop)
        return [artifact for artifacts in results for artifact in artifacts]

    async def generate_each(
        self,
        requests: Sequence[GenerationRequest],
        on_steps: Sequence[StepCallback | None],
        stop: StopSignal | None = None,
    ) -> list[list[Artifact]]:
        """Each request's artifacts (as `generate`'s), in the requests' order, each request's steps seen by
        its own callback in `on_steps`; the requests run side by side, and when one fails (or the caller
        goes away) the others are dropped."""
        jobs = [
            asyncio.ensure_future(self.generate(request, on_step, stop))
            for request, on_step in zip(requests, on_steps, strict=True)
        ]
        try:
            return list(await asyncio.gather(*jobs))
        finally:
            for job in jobs:
                job.cancel()


def sample_requests(request: GenerationRequest) -> list[GenerationRequest]:
    """`samples` N as N engine requests with the seeds seed, seed + 1, ..., seed + N - 1.

    Consecutive seeds (wrapping from MAX_SEED to 1, never 0, which means "random") make each returned
    seed reproduce its own image in a request with samples 1; the batcher runs the N together.
    """
    if request.samples == 1:
        return [request]
    return [
        dataclasses.replace(request, seed=(request.seed + index - 1) % MAX_SEED + 1, samples=1)
        for index in range(request.samples)
    ]


def to_artifact(generated: GeneratedImage) -> Artifact:
    return Artifact(
        encode_png(generated.image),
        generated.seed,
        generated.finish_reason,
        filtered_by=generated.filtered_by,
        latents=generated.latents,
    )
