"""The queue and the engine loop: each request awaits its own future; one loop owns the rows in flight.

Continuous (iteration-level) batching, as LLM servers do it, per denoising step: on the asyncio side
`submit` queues a job and awaits its future. On the engine thread one loop lets queued jobs join as rows
at tick boundaries (up to `max_batch_size` rows in flight), runs ticks (one UNet call for the rows the
TickPlanner chooses), answers each row as soon as its own run ends, and drops at the next tick every row
whose caller has gone (timeout, disconnect: its future is done). Requests with different steps,
strengths, samplers, modes and prompts so share every UNet call.

A request may carry a `StopSignal` (A1111's interrupt and skip): at the next tick boundary its running rows
that have taken a step end there, answering the image they have so far (`RowEngine.stop`), and on an
interrupt its other rows are dropped (their callers get `Stopped`).

Admission is per image size: up to `max_batch_size` rows of each size are in flight (and at most
`MAX_SIZES_IN_FLIGHT` times that in all), so rows waiting for their size's turn never keep another size's
requests in the queue; jobs of one size join in arrival order, and the oldest row always ticks (the
planner), so no size starves.

Invariants: every job's future gets one outcome (its image, its own error, or ModelFailure if the loop
itself fails); a failure is the failing request's alone: every stage (join, tick, finish) runs through
the stage runner (stages.py), which splits a group that ran out of memory and runs a group that failed
otherwise row by row, so that only rows that fail alone get the error; rows whose callers left are not
run again. The loop is supervised: if it dies, every request waiting on it gets ModelFailure and the loop
starts again.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sdxl_bedrock.errors import ModelFailure, ModelTimeout, ServiceError, ShuttingDown, Throttled
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.scheduler.planner import TickClock, TickPlanner
from sdxl_bedrock.scheduler.stages import Stage, StageRunner
from sdxl_bedrock.scheduler.stops import Stopped, StopSignal
from sdxl_bedrock.scheduler.types import RowEngine, StepCallback
from sdxl_bedrock.schema import GeneratedImage, GenerationRequest

log = logging.getLogger(__name__)

_SERIALS = itertools.count()
# Rows in flight hold only their latents and conditioning (well under a MB each at 1024x1024), so several
# sizes may each have a full tick's rows in flight; this bounds the host-side total.
MAX_SIZES_IN_FLIGHT = 4
ADAPTER_WAIT_S = 0.5


@dataclass(eq=False)
class Job:
    request: GenerationRequest
    future: asyncio.Future[GeneratedImage]
    loop: asyncio.AbstractEventLoop
    on_step: StepCallback | None = None
    stop: StopSignal | None = None
    enqueued_at: float = field(default_factory=time.monotonic)
    serial: int = field(default_factory=lambda: next(_SERIALS))  # arrival order: older is smaller
    row: Any = None  # its EngineRow once it joined
    answered: bool = False  # set on the engine thread when it resolves the job

    @property
    def checkpoint(self) -> str | None:
        """The model library's name of its checkpoint (None: the engine's default)."""
        return self.request.checkpoint

    @property
    def request_size(self) -> tuple[int, int]:
        """(height, width) in pixels, as its row's `pixel_size`: the unit of admission and of ticks."""
        return (self.request.height, self.request.width)

    @property
    def caller_left(self) -> bool:
        # Read on the engine thread; the future is only ever completed on the event loop, and a done
        # future never becomes undone, so a stale False costs one more tick at most.
        return self.future.done()

    def resolve(self, outcome: GeneratedImage | BaseException) -> None:
        """Hand the outcome to the caller, from any thread."""
        self.answered = True
        self.loop.call_soon_threadsafe(_settle, self.future, outcome)


def _settle(future: asyncio.Future[GeneratedImage], outcome: GeneratedImage | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Batcher:
    def __init__(
        self,
        engine: RowEngine,
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.005,
        max_queue: int = 64,
        request_timeout_s: float | None = None,
        metrics: Metrics | None = None,
        engine_thread: ThreadPoolExecutor | None = None,
        device_type: str = "cpu",
    ) -> None:
        """`max_batch_size` rows in flight at most; `max_wait_s` an idle engine waits for company before its
        first tick; `max_queue` jobs wait to join at most (beyond: Throttled). `engine_thread` is the one
        thread that runs the engine (CUDA graphs belong to the thread that captured them, so the server
        warms up on the same thread); the batcher makes its own if not given."""
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.request_timeout_s = request_timeout_s
        self.metrics = metrics or Metrics()
        self.planner = TickPlanner(max_batch_size)
        self.clock = TickClock(device_type)
        self._waiting: deque[Job] = deque()
        self._in_flight: list[Job] = []
        self._wakeup = threading.Condition()
        self._own_thread = engine_thread is None
        self._engine_thread = engine_thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._ticking_size: Any = None
        self._exported_caps: set[str] = set()
        self._default_checkpoint: str | None = getattr(engine, "default_name", None)
        # Checkpoints whose rows may be in flight at once: the engine holds that many on the device.
        self.max_checkpoints: int = getattr(engine, "max_on_device", 1)
        self._told_in_use: tuple[frozenset[str], frozenset[str]] | None = None
        self.stages = StageRunner(
            self._failed_in,
            skip=lambda job: job.caller_left,
            on_out_of_memory=self._out_of_memory,
            on_retry=lambda stage, reason: self.metrics.stage_retries.labels(stage.value, reason).inc(),
        )

    @property
    def depth(self) -> int:
        """Jobs waiting to join."""
        return len(self._waiting)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="batcher")

    async def close(self) -> None:
        """Stop taking jobs, finish the ones already accepted, then stop the loop. Cancelling this wait
        leaves the loop running (see `fail_pending`)."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify_all()
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._own_thread:
            await asyncio.to_thread(self._engine_thread.shutdown, wait=True)

    def fail_pending(self, error: ServiceError) -> None:
        """Answer every request still waiting or running with `error` (a shutdown that ran out of time):
        no caller is left without an answer."""
        self._fail_all(error)

    def check_capacity(self) -> None:
        if self._closing:
            raise ShuttingDown("The server is shutting down.")
        if len(self._waiting) >= self.max_queue:
            raise Throttled("Too many requests, please wait before trying again.")

    async def submit(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        stop: StopSignal | None = None,
    ) -> GeneratedImage:
        """Queue one request and wait for its image; past the request timeout its work is dropped. With
        `stop`, raises Stopped when the signal drops the row before it took a step."""
        self.check_capacity()
        loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), loop, on_step, stop)
        with self._wakeup:
            self._waiting.append(job)
            self._wakeup.notify_all()
        self.metrics.queue_depth.set(len(self._waiting))
        try:
            # wait_for cancels the job's future on timeout: the loop then drops the job at its next tick.
            return await asyncio.wait_for(job.future, self.request_timeout_s)
        except TimeoutError:
            raise ModelTimeout(
                f"The request did not complete within the server's {self.request_timeout_s:g} s timeout."
            ) from None

    # -- supervision ----------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._engine_thread, self._run)
                return
            except Exception as error:
                log.exception(
                    "the engine loop failed; failing its requests and starting it again", exc_info=error
                )
                self.metrics.engine_failures.inc()
                self._fail_all(ModelFailure(f"The engine failed: {type(error).__name__}"))

    def _fail_all(self, error: ServiceError) -> None:
        with self._wakeup:
            jobs = [*self._in_flight, *self._waiting]
            self._in_flight, self._waiting = [], deque()
        for job in jobs:
            job.resolve(error)
        self.metrics.queue_depth.set(0)

    # -- the engine loop (on the engine thread) -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            joining = self._take_joining()
            if joining is None:
                return
            if joining:
                self._join(joining)
            self._drop_left()
            self._apply_stops()
            self._finish_ended()  # rows whose window has no step (or stopped) end as they join
            self._tell_in_use()
            running = [job for job in self._in_flight if not job.row.done]
            if not running:
                continue
            chosen = set(self.planner.choose([job.row for job in running]))
            self._tick([job for job in running if job.row in chosen])
            self._learn_costs()
            self._finish_ended()

    def _take_joining(self) -> list[Job] | None:
        """Jobs that join before the next tick (room permitting); None once closing with nothing left.

        An idle engine waits for work, then up to `max_wait_s` from the oldest job's arrival for company,
        so that requests arriving together also share their prompt encoding and first ticks."""
        with self._wakeup:
            while not self._in_flight and not self._waiting:
                if self._closing:
                    return None
                self._wakeup.wait()
            if not self._in_flight:
                deadline = self._waiting[0].enqueued_at + self.max_wait_s
                while len(self._waiting) < self.max_batch_size and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wakeup.wait(remaining)
            joining = self._admitted()
            while not joining and not self._in_flight and self._waiting and not self._closing:
                # Every waiting job waits for its adapters' files (read on another thread, which wakes
                # this one); the timeout only bounds a missed wake-up.
                self._wakeup.wait(ADAPTER_WAIT_S)
                joining = self._admitted()
        self.metrics.queue_depth.set(len(self._waiting))
        return joining

    def _admitted(self) -> list[Job]:
        """Waiting jobs that may join now (called holding `_wakeup`): in arrival order, each while its size
        has fewer than `max_batch_size` rows in flight and the total is under its bound, and while its
        checkpoint has its turn; jobs whose callers left or were interrupted are answered here.

        Checkpoints take turns (the engine holds `max_checkpoints` on the device): a job whose checkpoint
        has no rows in flight opens that checkpoint's turn where a slot is free, and a turn that opens takes
        every waiting job of its checkpoint. Where none is free the job waits, and so does every job after
        it for a checkpoint already in flight: those checkpoints' turns end as their rows finish, and the
        oldest waiting job's checkpoint has the next one. No checkpoint starves; one checkpoint alone is
        served exactly as without turns.

        A job whose LoRA files are still being read (engine.adapters_ready) waits, out of the turns, while
        the others join and tick."""
        in_flight = collections.Counter(job.request_size for job in self._in_flight)
        room = self.max_batch_size * MAX_SIZES_IN_FLIGHT - len(self._in_flight)
        active = {self._checkpoint_of(job) for job in self._in_flight}
        opened: set[str | None] = set()
        blocked = False
        joining: list[Job] = []
        kept: deque[Job] = deque()
        for job in self._waiting:
            checkpoint = self._checkpoint_of(job)
            if job.caller_left:
                self.metrics.abandoned.labels("queued").inc()
                continue
            if job.stop is not None and job.stop.interrupted:
                job.resolve(Stopped("The request was interrupted before this image started."))
                continue
            if not self._adapters_ready(job):
                kept.append(job)  # its LoRA files are being read: it waits, holding no turn or slot
                continue
            if checkpoint not in active and len(active) < self.max_checkpoints:
                active.add(checkpoint)
                opened.add(checkpoint)
            has_turn = checkpoint in opened or (checkpoint in active and not blocked)
            if has_turn and len(joining) < room and in_flight[job.request_size] < self.max_batch_size:
                in_flight[job.request_size] += 1
                joining.append(job)
            else:
                blocked = blocked or checkpoint not in active
                kept.append(job)
        self._waiting = kept
        return joining

    def _join(self, jobs: list[Job]) -> None:
        """Stages 1-4 for the joining jobs together, through the stage runner."""
        now = time.monotonic()
        for job in jobs:
            self.metrics.queue_wait_seconds.observe(now - job.enqueued_at)
        joined: list[Job] = []
        self._tell_in_use(jobs)

        def start(group: Sequence[Job]) -> None:
            rows = self.engine.start([job.request for job in group], [job.on_step for job in group])
            for job, row in zip(group, rows, strict=True):
                job.row = row
            joined.extend(group)

        self.stages.run(Stage.JOIN, jobs, start)
        with self._wakeup:
            self._in_flight.extend(joined)
            self._in_flight.sort(key=lambda job: job.serial)

    def _adapters_ready(self, job: Job) -> bool:
        ready = getattr(self.engine, "adapters_ready", None)
        return ready is None or not job.request.loras or bool(ready(job.request))

    def wake(self) -> None:
        """Have the loop look at the waiting jobs again (a job's adapters are read), from any thread."""
        with self._wakeup:
            self._wakeup.notify_all()

    def _checkpoint_of(self, job: Job) -> str | None:
        return job.checkpoint or self._default_checkpoint

    def _tell_in_use(self, joining: Sequence[Job] = ()) -> None:
        """Tell the engine which checkpoints rows use (running: in flight or joining now; queued: waiting),
        when that changed: it keeps those (engine/checkpoints.py)."""
        in_use = getattr(self.engine, "in_use", None)
        if in_use is None:
            return
        with self._wakeup:
            running = frozenset(
                name for job in (*self._in_flight, *joining) if (name := self._checkpoint_of(job)) is not None
            )
            queued = frozenset(
                name for job in self._waiting if (name := self._checkpoint_of(job)) is not None
            )
        if (running, queued) != self._told_in_use:
            self._told_in_use = (running, queued)
            in_use(running, queued)

    def _drop_left(self) -> None:
        """Rows whose callers have gone stop here: their work ends at this tick boundary."""
        left = [job for job in self._in_flight if job.caller_left]
        if left:
            for _ in left:
                self.metrics.abandoned.labels("running").inc()
            log.info("%d request(s) dropped from the running batch: their callers left", len(left))
            self._keep(lambda job: not job.caller_left)

    def _apply_stops(self) -> None:
        """Act on the stop signals of the jobs in flight and waiting (see StopSignal)."""
        with self._wakeup:
            signals = {job.stop for job in (*self._in_flight, *self._waiting) if job.stop is not None}
        if not signals:
            return
        skipped = {signal for signal in signals if signal.take_skip()}
        interrupted = {signal for signal in signals if signal.interrupted}
        if not skipped and not interrupted:
            return
        with self._wakeup:
            dropped = [job for job in self._waiting if job.stop in interrupted]
            if dropped:
                self._waiting = deque(job for job in self._waiting if job.stop not in interrupted)
        running = [job for job in self._in_flight if job.stop in skipped | interrupted and not job.row.done]
        started = [job for job in running if job.row.steps_done > 0]
        dropped += [job for job in running if job.row.steps_done == 0 and job.stop in interrupted]
        if started:
            log.info("%d running image(s) stopped at their current step", len(started))
            try:
                self.engine.stop([job.row for job in started])
            except Exception as error:
                for job in started:
                    self._fail(job, error)
                self._keep(lambda job: job not in started)
        if dropped:
            self._keep(lambda job: job not in dropped)
            for job in dropped:
                job.resolve(Stopped("The request was interrupted before this image started."))
        self.metrics.queue_depth.set(len(self._waiting))

    def _tick(self, jobs: list[Job]) -> None:
        """One model call of each of these rows (one size), through the stage runner: a tick that ran out
        of memory runs again in halves this very tick (and lowers the size's cap), one that failed
        otherwise row by row."""

        def tick(group: Sequence[Job]) -> None:
            rows = [job.row for job in group]
            started = self.clock.start()
            self.engine.tick(rows)
            self.clock.stop(started, (rows[0].pixel_size, sum(row.unet_rows for row in rows)))
            self.metrics.rows_per_tick.observe(len(rows))
            self.planner.succeeded(rows[0].pixel_size, len(rows))

        self._ticking_size = jobs[0].row.pixel_size
        self.stages.run(Stage.TICK, jobs, tick)
        self._keep(lambda job: not job.answered)
        self._export_caps()

    def _out_of_memory(self, stage: Stage, rows: int) -> None:
        if stage is Stage.TICK:
            # Only a tick's group is the planner's choice; a join's or a finish's is whatever arrived.
            size = self._ticking_size
            self.planner.out_of_memory(size, rows)
            log.warning(
                "out of memory in a tick of %d rows; ticks at this size take at most %d for now",
                rows,
                self.planner.cap(size),
            )

    def _export_caps(self) -> None:
        for size, cap in self.planner.row_caps.items():
            self.metrics.row_cap.labels(_size_label(size)).set(cap)
        for label in self._exported_caps - {_size_label(size) for size in self.planner.row_caps}:
            self.metrics.row_cap.remove(label)
        self._exported_caps = {_size_label(size) for size in self.planner.row_caps}

    def _learn_costs(self) -> None:
        for (size, unet_rows), seconds in self.clock.measured():
            self.planner.record(size, unet_rows, seconds)
            self.metrics.tick_seconds.observe(seconds)

    def _finish_ended(self) -> None:
        """Stages 6-8 for the rows whose runs ended, through the stage runner; each answered."""
        ended = [job for job in self._in_flight if job.row.done]
        if not ended:
            return
        self._keep(lambda job: not job.row.done)
        self.stages.run(Stage.FINISH, [job for job in ended if job.row.failed is None], self._finish)
        for job in ended:
            if job.answered or job.caller_left:
                continue
            if job.row.failed is not None:
                self._failed_in(Stage.FINISH, job, job.row.failed)
            elif job.row.result is not None:
                self.metrics.images.labels(job.row.result.finish_reason.value).inc()
                job.resolve(job.row.result)
            else:
                self._fail(job, ModelFailure("the engine made no image for a request"))

    def _finish(self, group: Sequence[Job]) -> None:
        self.engine.finish([job.row for job in group])

    def _keep(self, keep: Callable[[Job], bool]) -> None:
        with self._wakeup:
            self._in_flight = [job for job in self._in_flight if keep(job)]

    def _failed_in(self, stage: Stage, job: Job, error: BaseException) -> None:
        """A row that failed alone in `stage` (or whose own part of a stage failed)."""
        self.metrics.rows_failed.labels(stage.value, type(error).__name__).inc()
        if job.row is not None and job.row.failed is None:
            job.row.failed = error
        self._fail(job, error)

    def _fail(self, job: Job, error: BaseException) -> None:
        if not isinstance(error, ServiceError):
            log.error("the engine failed on a request: %r", error, exc_info=error)
            error = ModelFailure(f"The model failed to generate the image: {type(error).__name__}")
        job.resolve(error)


def _size_label(size: Any) -> str:
    height, width = size
    return f"{width}x{height}"
