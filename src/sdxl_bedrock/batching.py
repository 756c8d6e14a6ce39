"""The queue and the batcher: each request awaits its own future; one task owns the queue.

A batch is the oldest waiting job plus every compatible job behind it (same `batch_key`), formed when it is
full or when the oldest job has waited `max_wait_s`. The engine runs in one worker thread, so the event loop
keeps answering (/ping, new requests) while a batch runs. One output per input is checked; if a batch fails,
its members are retried one by one so that only the request that fails gets the error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from sdxl_bedrock.errors import ModelFailure, ModelTimeout, ServiceError, ShuttingDown, Throttled
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.schema import GeneratedImage, GenerationRequest

log = logging.getLogger(__name__)

Preview = Callable[[], Image.Image]
StepCallback = Callable[[int, int, Preview], None]
"""A job's progress hook, called on the engine thread after each step with (done, total, preview)."""
EngineStepCallback = Callable[[int, int, Callable[[int], Image.Image]], None]
RunBatch = Callable[[Sequence[GenerationRequest], EngineStepCallback | None], list[GeneratedImage]]


class BatchAbandoned(Exception):
    """Every caller of a running batch has gone away: stop at the next step and free the engine."""


@dataclass
class Job:
    request: GenerationRequest
    future: asyncio.Future[GeneratedImage]
    on_step: StepCallback | None = None
    enqueued_at: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        request_timeout_s: float | None = None,
        metrics: Metrics | None = None,
        engine_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        """`engine_thread`: the one thread that runs the engine (CUDA graphs belong to the thread that
        captured them, so the server warms up on the same thread); the batcher makes its own if not given."""
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.request_timeout_s = request_timeout_s
        self.metrics = metrics or Metrics()
        self._waiting: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._engine_thread = engine_thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        """Stop taking jobs, finish the ones already accepted, then stop the batcher task."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._engine_thread.shutdown(wait=True)

    def check_capacity(self) -> None:
        if self._closing:
            raise ShuttingDown("The server is shutting down.")
        if len(self._waiting) >= self.max_queue:
            raise Throttled("Too many requests, please wait before trying again.")

    async def submit(self, request: GenerationRequest, on_step: StepCallback | None = None) -> GeneratedImage:
        """Queue one request and wait for its image; past the request timeout the work is dropped."""
        self.check_capacity()
        job = Job(request, asyncio.get_running_loop().create_future(), on_step)
        self._waiting.append(job)
        self.metrics.queue_depth.set(len(self._waiting))
        self._arrived.set()
        try:
            # wait_for cancels the job's future on timeout: the batcher then skips it, or stops its batch.
            return await asyncio.wait_for(job.future, self.request_timeout_s)
        except TimeoutError:
            raise ModelTimeout(
                f"The request did not complete within the server's {self.request_timeout_s:g} s timeout."
            ) from None

    # -- the batcher task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._drop_abandoned()
            if not self._waiting:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = await self._form_batch()
            if batch:
                await self._execute(batch)

    def _drop_abandoned(self) -> None:
        """Jobs whose caller went away (disconnect, timeout) never reach the engine."""
        if any(job.future.done() for job in self._waiting):
            self._waiting = deque(job for job in self._waiting if not job.future.done())
            self.metrics.queue_depth.set(len(self._waiting))

    async def _form_batch(self) -> list[Job]:
        oldest = self._waiting[0]
        deadline = oldest.enqueued_at + self.max_wait_s
        while len(self._compatible(oldest)) < self.max_batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        self._drop_abandoned()
        batch = self._compatible(oldest)[: self.max_batch_size] if not oldest.future.done() else []
        now = time.monotonic()
        for job in batch:
            self._waiting.remove(job)
            self.metrics.queue_wait_seconds.observe(now - job.enqueued_at)
        self.metrics.queue_depth.set(len(self._waiting))
        return batch

    def _compatible(self, oldest: Job) -> list[Job]:
        key = oldest.request.batch_key()
        return [job for job in self._waiting if job.request.batch_key() == key and not job.future.done()]

    async def _execute(self, batch: list[Job]) -> None:
        try:
            images = await self._run_in_engine(batch)
        except BatchAbandoned:
            self.metrics.abandoned_batches.inc()
            log.info("a batch of %d was abandoned by its callers and stopped early", len(batch))
            return
        except Exception as error:
            self.metrics.engine_failures.inc()
            if len(batch) == 1:
                self._fail(batch[0], error)
                return
            log.warning("a batch of %d failed (%s); retrying its members one by one", len(batch), error)
            for job in batch:
                await self._execute([job])
            return
        for job, image in zip(batch, images, strict=True):
            self.metrics.images.labels(image.finish_reason.value).inc()
            if not job.future.done():
                job.future.set_result(image)

    async def _run_in_engine(self, batch: list[Job]) -> list[GeneratedImage]:
        requests = [job.request for job in batch]
        on_step = _fan_out(batch)
        loop = asyncio.get_running_loop()
        self.metrics.batch_size.observe(len(batch))
        with self.metrics.batch_seconds.time():
            images = await loop.run_in_executor(self._engine_thread, self.run_batch, requests, on_step)
        if len(images) != len(batch):
            raise ModelFailure(f"the engine returned {len(images)} images for a batch of {len(batch)}")
        return images

    @staticmethod
    def _fail(job: Job, error: Exception) -> None:
        if job.future.done():
            return
        if not isinstance(error, ServiceError):
            log.exception("the engine failed on a request", exc_info=error)
            error = ModelFailure(f"The model failed to generate the image: {type(error).__name__}")
        job.future.set_exception(error)


def _fan_out(batch: list[Job]) -> EngineStepCallback:
    """One engine hook for a batch: each job's own hook sees its own row; an abandoned batch stops."""

    def on_step(done: int, total: int, preview: Callable[[int], Image.Image]) -> None:
        for row, job in enumerate(batch):
            if job.on_step is not None and not job.future.done():
                job.on_step(done, total, functools.partial(preview, row))
        if all(job.future.done() for job in batch):
            raise BatchAbandoned(f"all {len(batch)} callers left")

    return on_step
