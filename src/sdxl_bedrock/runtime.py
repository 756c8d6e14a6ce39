"""The server's live state: settings, metrics, threads, the model's loading, and its shutdown.

The wires reach image generation through `runtime.generations` (generation.py) and host work through
`runtime.workers`; they never touch the engine or torch. The engine is imported only when the model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import ShuttingDown
from sdxl_bedrock.faults import ENVIRONMENT_VARIABLE, Faults
from sdxl_bedrock.generation import Generations
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.scheduler.batcher import Batcher
from sdxl_bedrock.workers import Workers

if TYPE_CHECKING:
    from sdxl_bedrock.engine.content_filter import ContentFilter
    from sdxl_bedrock.engine.pipeline import Engine

log = logging.getLogger(__name__)

# After a drain ran out of time: how long the handlers get to send the ServiceUnavailable answers.
ANSWER_GRACE_S = 5.0


def warmup_steps(settings: Settings) -> list[tuple[int, int, int, int]]:
    """(width, height, batch size, prompt chunks) to warm up, in order: the --warmup shapes with one-chunk
    prompts, then with --compile each of their sizes at batch 1 with each longer prompt length warmed."""
    from sdxl_bedrock.engine.acceleration import chunk_buckets

    steps = [(width, height, batch, 1) for width, height, batch in settings.warmup_buckets]
    if settings.compile_unet:
        sizes = dict.fromkeys((width, height) for width, height, _ in settings.warmup_buckets)
        longer = chunk_buckets(settings.warmup_prompt_chunks)[1:]
        steps += [(width, height, 1, chunks) for width, height in sizes for chunks in longer]
    return steps


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.workers = Workers(settings.host_threads)
        # A spec that does not parse stops the server at start (ValueError), never serves without it.
        self.faults = Faults.from_environment()
        self.generations = Generations(settings, self.workers, self.faults)
        self.engine: Engine | None = None
        self.load_error: BaseException | None = None
        self.ready = asyncio.Event()
        self.active_requests = 0  # HTTP requests in flight, kept by the request middleware

    async def load(self) -> None:
        """Load the model (and warm it up) on the engine thread, then start the batcher; /ping turns 200."""
        from sdxl_bedrock.engine.pipeline import Engine

        settings = self.settings
        faults = self.faults
        if faults:
            log.warning(
                "FAULT INJECTION IS ON (%s=%s): chosen engine calls will fail on purpose; this is a testing "
                "aid, never for serving",
                ENVIRONMENT_VARIABLE,
                faults,
            )
            faults.on_fire = lambda stage, kind: self.metrics.faults_injected.labels(stage, kind).inc()
        try:
            engine = await self.workers.on_engine(
                Engine.load,
                settings.model,
                settings.device,
                settings.dtype,
                vae_dtype=settings.vae_dtype,
                clip_model=settings.clip_model,
                content_filter=load_content_filter(settings.blocked_terms),
                compile_unet=settings.compile_unet,
                vae_budget_bytes=settings.vae_budget_mib * 2**20,
                faults=faults,
            )
            steps = warmup_steps(settings)
            for done, (width, height, batch, chunks) in enumerate(steps, start=1):
                prompts = f", prompts of {chunks * 77} tokens" if chunks > 1 else ""
                shape = f"{width}x{height}, batch {batch}{prompts}"
                print(f"sdxl-bedrock: warming up {shape} ({done}/{len(steps)})", flush=True)
                await self.workers.on_engine(engine.warm_up, width, height, batch, chunks)
        except BaseException as error:
            self.load_error = error
            raise
        self.engine = engine
        self.metrics.export_unet_calls(engine.unet.calls)
        self.metrics.export_non_finite(engine.non_finite)
        batcher = Batcher(
            engine,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
            metrics=self.metrics,
            engine_thread=self.workers.engine_thread,
            device_type=engine.device.type,
        )
        self.generations.batcher = batcher
        batcher.start()
        if self.generations.draining:
            await batcher.close()
        self.ready.set()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work (ServiceUnavailableException), finish what was accepted, within `timeout_s`."""
        self.generations.draining = True

        async def finished() -> None:
            if self.generations.batcher is not None:
                await self.generations.batcher.close()
            await self.requests_answered()  # the last answers are still being encoded and sent

        try:
            await asyncio.wait_for(finished(), timeout_s)
        except TimeoutError:
            log.warning("shutdown: %d requests still in flight after %g s", self.active_requests, timeout_s)
            if self.generations.batcher is not None:
                self.generations.batcher.fail_pending(
                    ShuttingDown("The server shut down before the request was answered; retry it.")
                )
            # Let the handlers send those answers (briefly) before the server stops.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.requests_answered(), ANSWER_GRACE_S)

    async def requests_answered(self) -> None:
        while self.active_requests > 0:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self.generations.batcher is not None:
            await self.generations.batcher.close()
        self.workers.close()


def load_content_filter(blocked_terms: Path | None) -> ContentFilter | None:
    if blocked_terms is None:
        return None
    from sdxl_bedrock.engine.content_filter import BlockedTerms

    return BlockedTerms.from_file(blocked_terms)
