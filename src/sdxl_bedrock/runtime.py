"""The server's live state: settings, metrics, threads, the model's loading, and its shutdown.

The wires reach image generation through `runtime.generations` (generation.py) and host work through
`runtime.workers`; they never touch the engine or torch. The engine is imported only when the model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import ShuttingDown
from sdxl_bedrock.faults import ENVIRONMENT_VARIABLE, Faults
from sdxl_bedrock.generation import Generations
from sdxl_bedrock.library import (
    Checkpoint,
    Library,
    LibraryError,
    Listing,
    UnknownCheckpoint,
    alias_target,
)
from sdxl_bedrock.loras import LoraLibrary, LoraListing
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.scheduler.batcher import Batcher
from sdxl_bedrock.workers import Workers

if TYPE_CHECKING:
    from sdxl_bedrock.engine.adapters import HostLoras
    from sdxl_bedrock.engine.checkpoints import CheckpointEngines
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
        self.library = Library(
            settings.model, settings.checkpoint_dirs, single_file_config=settings.single_file_config
        )
        self.loras = LoraLibrary(settings.lora_dirs)
        self.generations = Generations(settings, self.workers, self.faults)
        self.engine: CheckpointEngines | None = None
        self.lora_reader: HostLoras | None = None
        self.load_error: BaseException | None = None
        self.ready = asyncio.Event()
        self.active_requests = 0  # HTTP requests in flight, kept by the request middleware

    async def load(self) -> None:
        """Load the model (and warm it up) on the engine thread, then start the batcher; /ping turns 200."""
        from sdxl_bedrock.engine.checkpoints import CheckpointEngines
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
        content_filter = load_content_filter(settings.blocked_terms)
        metrics = self.metrics
        loras = self.lora_reader = self.host_loras(settings)

        def load_checkpoint(checkpoint: Checkpoint, clip_model: str | None = None) -> Engine:
            engine = Engine.load(
                checkpoint.spec or str(checkpoint.filename),
                settings.device,
                settings.dtype,
                vae_dtype=settings.vae_dtype,
                clip_model=clip_model,
                content_filter=content_filter,
                compile_unet=settings.compile_unet,
                vae_budget_bytes=settings.vae_budget_mib * 2**20,
                faults=faults,
                single_file_config=checkpoint.config,
                loras=loras,
                max_loaded_loras=settings.max_loaded_loras,
                max_host_loras=settings.max_host_loras,
            )
            inject_seconds = metrics.lora_load_seconds.labels("inject")
            engine.adapters.on_load = lambda name, seconds: inject_seconds.observe(seconds)
            return engine

        try:
            listing = await self.refresh_library()
            await self.refresh_loras()
            check_aliases(settings.model_aliases, self.library, self.loras)
            default = listing.checkpoints[listing.default]
            engine = await self.workers.on_engine(load_checkpoint, default, settings.clip_model)
            steps = warmup_steps(settings)
            for done, (width, height, batch, chunks) in enumerate(steps, start=1):
                prompts = f", prompts of {chunks * 77} tokens" if chunks > 1 else ""
                shape = f"{width}x{height}, batch {batch}{prompts}"
                print(f"sdxl-bedrock: warming up {shape} ({done}/{len(steps)})", flush=True)
                await self.workers.on_engine(engine.warm_up, width, height, batch, chunks)
        except BaseException as error:
            self.load_error = error
            raise
        engines = CheckpointEngines(
            engine,
            default.name,
            lookup=lambda name: self.library.listing.find(name),
            load=load_checkpoint,
            max_on_device=settings.max_loaded_checkpoints or checkpoints_that_fit(engine, settings),
            max_on_host=settings.max_host_checkpoints,
            on_move=lambda name, to, seconds: metrics.checkpoint_move_seconds.labels(name, to).observe(
                seconds
            ),
        )
        self.engine = engines
        metrics.checkpoint_moving.set_function(lambda: 1.0 if engines.moving is not None else 0.0)
        for where in ("device", "host"):
            metrics.checkpoints_resident.labels(where).set_function(
                functools.partial(resident_count, engines, where)
            )
        for where in ("device", "host"):
            metrics.loras_resident.labels(where).set_function(
                functools.partial(loras_resident_count, engines, where)
            )
        self.metrics.export_unet_calls(engines.unet_calls)
        self.metrics.export_non_finite(engines.non_finite)
        batcher = Batcher(
            engines,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
            metrics=self.metrics,
            engine_thread=self.workers.engine_thread,
            device_type=engine.device.type,
        )
        self.generations.batcher = batcher
        if loras is not None:
            loras.on_ready = batcher.wake
        batcher.start()
        if self.generations.draining:
            await batcher.close()
        self.ready.set()

    def host_loras(self, settings: Settings) -> HostLoras | None:
        """Where the engines read LoRA files from: the LoRA library's listing (None: no --lora-dir)."""
        from sdxl_bedrock.engine.adapters import HostLoras
        from sdxl_bedrock.loras import MAX_LORA_RANK

        if not settings.lora_dirs:
            return None
        read_seconds = self.metrics.lora_load_seconds.labels("read")
        return HostLoras(
            lambda name: self.loras.listing.find(name),
            max_entries=settings.max_host_loras,
            max_rank=MAX_LORA_RANK,
            on_read=read_seconds.observe,
        )

    async def refresh_library(self) -> Listing:
        """Read the model library's folders (on a host thread: new files are hashed); log what is refused."""
        listing = await self.workers.on_host(self.library.refresh)
        for refused in listing.refused:
            log.warning(
                "model library: %s (%s) is not served: %s", refused.name, refused.filename, refused.refused
            )
        return listing

    async def refresh_loras(self) -> LoraListing:
        """Read the LoRA library's folders (on a host thread: new files are hashed); log what is refused."""
        listing = await self.workers.on_host(self.loras.refresh)
        for refused in listing.refused:
            log.warning(
                "LoRA library: %s (%s) is not served: %s", refused.name, refused.filename, refused.refused
            )
        return listing

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
        if self.lora_reader is not None:
            self.lora_reader.close()
        self.workers.close()


def loras_resident_count(engines: CheckpointEngines, where: str) -> float:
    return float(engines.loras_resident()[where])


def resident_count(engines: CheckpointEngines, where: str) -> float:
    return float(sum(1 for place in engines.resident().values() if place == where))


def check_aliases(aliases: dict[str, str], library: Library, loras: LoraLibrary) -> None:
    """Every --model-alias names a checkpoint of the library, and adapters the LoRA library serves;
    LibraryError (the server does not start) if one does not."""
    for alias, target in aliases.items():
        try:
            parsed = alias_target(target)
            library.listing.find(parsed.checkpoint)
            for use in parsed.loras:
                loras.listing.find(use.name)
        except (UnknownCheckpoint, LookupError, ValueError) as error:
            raise LibraryError(f"--model-alias {alias}={target}: {error}") from None


def checkpoints_that_fit(engine: Engine, settings: Settings) -> int:
    """--max-loaded-checkpoints' default: 1 on a CPU (host memory is the device's: --max-host-checkpoints
    bounds it); on a GPU as many copies of the first checkpoint as fit in 90% of its memory after the VAE
    budget and 16 GiB for a full tick's activations (SDXL at 1024x1024, 8 rows, float16)."""
    if engine.device.type != "cuda":
        return 1
    import torch

    total = torch.cuda.get_device_properties(engine.device).total_memory
    per_checkpoint = max(engine.gpu_memory_bytes(), 1)
    spare = 0.9 * total - settings.vae_budget_mib * 2**20 - 16 * 2**30
    return max(1, int(spare // per_checkpoint))


def load_content_filter(blocked_terms: Path | None) -> ContentFilter | None:
    if blocked_terms is None:
        return None
    from sdxl_bedrock.engine.content_filter import BlockedTerms

    return BlockedTerms.from_file(blocked_terms)
