"""The server's live state: settings, the engine once loaded, the batcher, and the host thread pool.

HTTP faces call `generate` with a validated request and get finished artifacts back; they never touch the
engine or torch. The engine is imported only when the model is loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sdxl_bedrock.batching import Batcher, StepCallback
from sdxl_bedrock.codecs import encode_png
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import InvalidRequest, ModelNotReady, ShuttingDown, Throttled
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.schema import Artifact, GeneratedImage, GenerationRequest, Sampler
from sdxl_bedrock.validation import MAX_SEED

if TYPE_CHECKING:
    from sdxl_bedrock.engine.content_filter import ContentFilter
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
        # Loading, warm-up and every batch run on this one thread: CUDA graphs captured during warm-up are
        # replayed only on the thread that captured them.
        self.engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.metrics = Metrics()
        self.draining = False
        self.active_requests = 0  # HTTP requests in flight, kept by the request middleware

    async def load(self) -> None:
        """Load the model off the event loop, then start the batcher; /ping turns 200 after this."""
        from sdxl_bedrock.engine.pipeline import Engine

        settings = self.settings
        try:
            engine = await self.in_engine_thread(
                Engine.load,
                settings.model,
                settings.device,
                settings.dtype,
                vae_dtype=settings.vae_dtype,
                clip_model=settings.clip_model,
                content_filter=load_content_filter(settings.blocked_terms),
                compile_unet=settings.compile_unet,
            )
            for done, (width, height, batch) in enumerate(settings.warmup_buckets, start=1):
                print(
                    f"sdxl-bedrock: warming up {width}x{height}, batch {batch} "
                    f"({done}/{len(settings.warmup_buckets)})",
                    flush=True,
                )
                await self.in_engine_thread(engine.warm_up, width, height, batch)
        except BaseException as error:
            self.load_error = error
            raise
        self.engine = engine
        self.metrics.export_unet_calls(engine.unet.calls)
        self.batcher = Batcher(
            engine.generate,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
            metrics=self.metrics,
            engine_thread=self.engine_thread,
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
        self.engine_thread.shutdown(wait=False, cancel_futures=True)

    async def in_host_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run CPU-bound host work (base64, image codecs, JSON) without blocking the event loop."""
        return await run_in(self.host_pool, function, *args, **kwargs)

    async def in_engine_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in(self.engine_thread, function, *args, **kwargs)

    def check_served(self, request: GenerationRequest) -> None:
        """Refuse, clearly, what this server cannot do, rather than ignore a field."""
        assert self.engine is not None
        if request.sampler not in self.engine.served_samplers:
            raise InvalidRequest(
                f"sampler {request.sampler.value} is not served yet; served: "
                f"{sampler_names(self.engine.served_samplers)}",
                field="sampler",
            )
        if request.clip_guidance_preset != "NONE" and self.settings.clip_model is None:
            raise InvalidRequest(
                f"clip_guidance_preset {request.clip_guidance_preset} needs a CLIP model, and none is "
                "configured on this server; use NONE",
                field="clip_guidance_preset",
            )

    def admit(self, request: GenerationRequest) -> Batcher:
        """Everything that can refuse a request before work starts (and before a stream's 200)."""
        if self.draining:
            raise ShuttingDown("The server is shutting down; send the request elsewhere or retry later.")
        if not self.ready.is_set() or self.batcher is None:
            raise ModelNotReady("The model is still loading; try again shortly.")
        self.check_served(request)
        self.batcher.check_capacity()
        # All samples or none: each takes a place in the queue.
        if self.batcher.depth + request.samples > self.batcher.max_queue:
            raise Throttled("Too many requests, please wait before trying again.")
        return self.batcher

    async def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None
    ) -> list[Artifact]:
        """One artifact per sample, in the order of their seeds (see `sample_requests`)."""
        batcher = self.admit(request)
        submitted = [asyncio.ensure_future(batcher.submit(one, on_step)) for one in sample_requests(request)]
        try:
            images = await asyncio.gather(*submitted)
        finally:
            # When one sample fails (or the caller goes away) the others are dropped, not left running.
            for job in submitted:
                job.cancel()
        return list(await asyncio.gather(*(self.in_host_thread(to_artifact, image) for image in images)))


async def run_in(executor: ThreadPoolExecutor, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(function, *args, **kwargs))


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


def load_content_filter(blocked_terms: Path | None) -> ContentFilter | None:
    if blocked_terms is None:
        return None
    from sdxl_bedrock.engine.content_filter import BlockedTerms

    return BlockedTerms.from_file(blocked_terms)


def to_artifact(generated: GeneratedImage) -> Artifact:
    return Artifact(encode_png(generated.image), generated.seed, generated.finish_reason)


def sampler_names(samplers: frozenset[Sampler]) -> str:
    return ", ".join(sorted(s.value for s in samplers))
