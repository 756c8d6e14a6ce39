"""The server's live state: settings, the engine once loaded, the batcher, and the host thread pool.

HTTP faces call `generate` with a validated request and get finished artifacts back; they never touch the
engine or torch. The engine is imported only when the model is loaded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sdxl_bedrock.batching import Batcher, StepCallback
from sdxl_bedrock.codecs import encode_png
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, ModelNotReady, ShuttingDown
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.schema import Artifact, GeneratedImage, GenerationRequest, Sampler

if TYPE_CHECKING:
    from sdxl_bedrock.engine.pipeline import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.load_error: BaseException | None = None
        self.ready = asyncio.Event()
        self.host_pool = ThreadPoolExecutor(settings.host_threads, thread_name_prefix="host")
        self.metrics = Metrics()
        self.draining = False
        self.active_requests = 0  # HTTP requests in flight, kept by the request middleware

    async def load(self) -> None:
        """Load the model off the event loop, then start the batcher; /ping turns 200 after this."""
        from sdxl_bedrock.engine.pipeline import Engine

        settings = self.settings
        try:
            engine = await asyncio.to_thread(Engine.load, settings.model, settings.device, settings.dtype)
        except BaseException as error:
            self.load_error = error
            raise
        self.engine = engine
        self.batcher = Batcher(
            engine.generate,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
            metrics=self.metrics,
        )
        if self.draining:
            await self.batcher.close()
        self.batcher.start()
        self.ready.set()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work (ServiceUnavailableException), finish what was accepted, within `timeout_s`."""
        self.draining = True

        async def finished() -> None:
            if self.batcher is not None:
                await self.batcher.close()
            while self.active_requests > 0:  # the last answers are still being encoded and sent
                await asyncio.sleep(0.02)

        try:
            await asyncio.wait_for(finished(), timeout_s)
        except TimeoutError:
            log.warning("shutdown: %d requests still in flight after %g s", self.active_requests, timeout_s)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self.host_pool.shutdown(wait=False, cancel_futures=True)

    async def in_host_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run CPU-bound host work (base64, image codecs, JSON) without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.host_pool, functools.partial(function, *args, **kwargs))

    def check_served(self, request: GenerationRequest) -> None:
        """Refuse, clearly, what this build cannot yet do, rather than ignore a field."""
        assert self.engine is not None
        if request.mask is not None:
            raise InvalidRequest(
                "masked image-to-image (mask_source) is not served yet by this server", field="mask_source"
            )
        if request.sampler not in self.engine.served_samplers:
            raise InvalidRequest(
                f"sampler {request.sampler.value} is not served yet; served: "
                f"{sampler_names(self.engine.served_samplers)}",
                field="sampler",
            )
        if request.clip_guidance_preset != "NONE":
            raise InvalidRequest(
                f"clip_guidance_preset {request.clip_guidance_preset} needs a CLIP model, and none is "
                "configured on this server; use NONE",
                field="clip_guidance_preset",
            )
        if request.denoise_to > 0:
            raise InvalidRequest("step_schedule_end above 0 is not served yet", field="step_schedule_end")

    def admit(self, request: GenerationRequest) -> Batcher:
        """Everything that can refuse a request before work starts (and before a stream's 200)."""
        if self.draining:
            raise ShuttingDown("The server is shutting down; send the request elsewhere or retry later.")
        if not self.ready.is_set() or self.batcher is None:
            raise ModelNotReady("The model is still loading; try again shortly.")
        self.check_served(request)
        self.batcher.check_capacity()
        return self.batcher

    async def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[Artifact]:
        image = await self.admit(request).submit(request, on_step)
        return [await self.in_host_thread(to_artifact, image)]


def to_artifact(generated: GeneratedImage) -> Artifact:
    return Artifact(encode_png(generated.image), generated.seed, generated.finish_reason)


def sampler_names(samplers: frozenset[Sampler]) -> str:
    return ", ".join(sorted(s.value for s in samplers))
