"""The batcher's engine loop: rows join and leave at tick boundaries, each request gets its own answer, a
failure is the failing request's alone, and the loop survives its own death.

The engine here is a stand-in with the real engine's three stages (start / tick / finish) that counts
steps instead of denoising, can be held at a tick (a gate), and can be told to fail (fault injection); the
batcher, its planner and its clock are the real ones. tests/engine/test_continuous.py runs the real engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from sdxl_bedrock.errors import ModelFailure, ModelTimeout, ShuttingDown, Throttled
from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.scheduler.batcher import ADAPTER_WAIT_S, Batcher
from sdxl_bedrock.scheduler.planner import GROW_EVERY
from sdxl_bedrock.scheduler.types import StepCallback
from sdxl_bedrock.schema import GeneratedImage, GenerationRequest, LoraUse, Sampler, WeightedPrompt


def request(
    seed: int, steps: int = 3, sampler: Sampler = Sampler.EULER, width: int = 64
) -> GenerationRequest:
    return GenerationRequest(
        prompts=(WeightedPrompt("x", 1.0),),
        negative_prompts=(),
        width=width,
        height=64,
        seed=seed,
        steps=steps,
        cfg_scale=7.0,
        sampler=sampler,
    )


@dataclass(frozen=True)
class StandInPreview:
    """A preview already on the host: a pixel in the row's seed, so a job can tell its own row's."""

    seed: int

    def image(self) -> Image.Image:
        return Image.new("RGB", (1, 1), (self.seed % 256, 0, 0))


@dataclass(eq=False)
class StandInRow:
    request: GenerationRequest
    on_step: StepCallback | None
    steps_done: int = 0
    failed: BaseException | None = None
    result: GeneratedImage | None = None

    @property
    def done(self) -> bool:
        return self.failed is not None or self.steps_done == self.request.steps

    @property
    def pixel_size(self) -> Any:
        return (self.request.height, self.request.width)

    @property
    def checkpoint(self) -> str:
        return self.request.checkpoint or ""

    @property
    def unet_rows(self) -> int:
        return 2


@dataclass
class StandInEngine:
    """Records the seeds of every tick and join; `gate` holds a tick until set; `fail_tick(seeds)` makes a
    tick fail; `fail_row` seeds fail alone as the real engine reports a row's own failure."""

    fail_tick: Callable[[list[int]], BaseException | None] = lambda seeds: None
    fail_join: Callable[[list[int]], BaseException | None] = lambda seeds: None
    fail_finish: Callable[[list[int]], BaseException | None] = lambda seeds: None
    fail_row: set[int] = field(default_factory=set)
    ticks: list[list[int]] = field(default_factory=list)
    joins: list[list[int]] = field(default_factory=list)
    finished: list[tuple[int, int]] = field(default_factory=list)  # (seed, ticks run before it finished)
    gate: threading.Event = field(default_factory=threading.Event)
    ticked: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def start(
        self, requests: Sequence[GenerationRequest], on_steps: Sequence[StepCallback | None] | None = None
    ) -> list[StandInRow]:
        self.joins.append([r.seed for r in requests])
        error = self.fail_join([r.seed for r in requests])
        if error is not None:
            raise error
        return [StandInRow(r, s) for r, s in zip(requests, on_steps or [None] * len(requests), strict=True)]

    def tick(self, rows: Sequence[StandInRow]) -> None:
        seeds = [row.request.seed for row in rows]
        assert self.gate.wait(30), "the test never opened the gate"
        self.ticks.append(seeds)
        self.ticked.set()
        error = self.fail_tick(seeds)
        if error is not None:
            raise error
        for row in rows:
            if row.request.seed in self.fail_row:
                row.failed = RuntimeError("injected row fault")
                continue
            row.steps_done += 1
            if row.on_step is not None:
                row.on_step(
                    row.steps_done, row.request.steps, functools.partial(StandInPreview, row.request.seed)
                )

    def finish(self, rows: Sequence[StandInRow]) -> None:
        error = self.fail_finish([row.request.seed for row in rows])
        if error is not None:
            raise error
        for row in rows:
            self.finished.append((row.request.seed, len(self.ticks)))
            row.result = GeneratedImage(
                Image.new("RGB", (1, 1), (row.request.seed % 256, 0, 0)), row.request.seed
            )

    def ticks_of(self, seed: int) -> int:
        return sum(seed in seeds for seeds in self.ticks)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30), "timed out waiting for the engine"


def test_requests_with_different_steps_and_samplers_share_ticks_and_each_ends_on_its_own() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        jobs = [
            asyncio.ensure_future(batcher.submit(request(1, steps=2, sampler=Sampler.HEUN))),
            asyncio.ensure_future(batcher.submit(request(2, steps=5, sampler=Sampler.DDIM))),
            asyncio.ensure_future(batcher.submit(request(3, steps=3, sampler=Sampler.DPMPP_2M))),
        ]
        while batcher.depth < 3:
            await asyncio.sleep(0)
        engine.gate.set()
        assert [image.seed for image in await asyncio.gather(*jobs)] == [1, 2, 3]
        await batcher.close()
        assert engine.joins == [[1, 2, 3]]
        # The first tick takes all three (the planner tries the largest untried row count first).
        assert engine.ticks[0] == [1, 2, 3]
        assert [engine.ticks_of(seed) for seed in (1, 2, 3)] == [2, 5, 3]
        # The shortest is answered as soon as its own run ends, while the others still run.
        assert engine.finished[0][0] == 1 and engine.finished[0][1] < len(engine.ticks)

    run(scenario())


def test_a_request_joins_a_running_batch_at_the_next_tick() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        reached: dict[int, threading.Event] = {seed: threading.Event() for seed in (1, 2)}

        def on_step(seed: int) -> StepCallback:
            def hook(done: int, total: int, preview: Any) -> None:
                if done == 2:
                    engine.gate.clear()  # hold the engine at its next tick
                    reached[seed].set()

            return hook

        first = asyncio.ensure_future(batcher.submit(request(1, steps=6), on_step(1)))
        await until(reached[1])
        second = asyncio.ensure_future(batcher.submit(request(2, steps=2)))
        while batcher.depth < 1:
            await asyncio.sleep(0)
        engine.gate.set()
        await asyncio.gather(first, second)
        await batcher.close()
        joined_at = next(index for index, seeds in enumerate(engine.ticks) if 2 in seeds)
        assert engine.ticks[joined_at] == [1, 2], "the newcomer shares the running request's tick"
        assert 2 <= joined_at <= 3

    run(scenario())


def test_rows_of_another_size_wait_for_the_oldest_size_and_do_not_starve() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        jobs = [
            asyncio.ensure_future(batcher.submit(request(1, steps=2))),
            asyncio.ensure_future(batcher.submit(request(2, steps=2, width=128))),
            asyncio.ensure_future(batcher.submit(request(3, steps=2))),
        ]
        while batcher.depth < 3:
            await asyncio.sleep(0)
        engine.gate.set()
        await asyncio.gather(*jobs)
        await batcher.close()
        assert all(seeds in ([1, 3], [1], [3], [2]) for seeds in engine.ticks), "no tick mixes sizes"
        last_of_oldest_size = max(index for index, seeds in enumerate(engine.ticks) if 1 in seeds)
        first_of_other_size = min(index for index, seeds in enumerate(engine.ticks) if 2 in seeds)
        assert last_of_oldest_size < first_of_other_size, "the oldest row's size goes first"

    run(scenario())


def test_a_request_whose_caller_left_stops_at_the_next_tick() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        metrics = Metrics()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0, metrics=metrics)
        batcher.start()
        stepped = threading.Event()

        def hold_after_first_step(done: int, total: int, preview: Any) -> None:
            if done == 1:
                engine.gate.clear()
                stepped.set()

        leaving = asyncio.ensure_future(batcher.submit(request(1, steps=50), hold_after_first_step))
        staying = asyncio.ensure_future(batcher.submit(request(2, steps=4)))
        await until(stepped)
        leaving.cancel()  # what a disconnect or a timeout does to the caller's wait
        engine.gate.set()
        assert (await staying).seed == 2
        await batcher.close()
        # It may have taken the tick the gate held, never one after.
        assert engine.ticks_of(1) <= 2
        assert metrics.abandoned.labels("running")._value.get() == 1

    run(scenario())


def test_a_request_whose_caller_left_while_queued_never_reaches_the_engine() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        engine.gate.clear()
        metrics = Metrics()
        batcher = Batcher(engine, max_batch_size=1, max_wait_s=0, metrics=metrics)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(request(1)))
        while not engine.joins:
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(batcher.submit(request(2)))
        while batcher.depth < 1:
            await asyncio.sleep(0)
        queued.cancel()
        engine.gate.set()
        await running
        await batcher.close()
        assert [2] not in engine.joins
        assert metrics.abandoned.labels("queued")._value.get() == 1

    run(scenario())


def test_a_failing_tick_is_run_again_row_by_row_and_only_the_failing_request_fails() -> None:
    async def scenario() -> None:
        def fail_with_3(seeds: list[int]) -> BaseException | None:
            return RuntimeError("injected tick fault") if 3 in seeds else None

        engine = StandInEngine(fail_tick=fail_with_3)
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit(request(seed))) for seed in range(1, 5)]
        while batcher.depth < 4:
            await asyncio.sleep(0)
        engine.gate.set()
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        after = await batcher.submit(request(9))  # the batcher keeps serving
        await batcher.close()
        assert [isinstance(outcome, ModelFailure) for outcome in outcomes] == [False, False, True, False]
        assert "RuntimeError" in str(outcomes[2])
        assert after.seed == 9
        assert engine.ticks[0] == [1, 2, 3, 4] and [3] in engine.ticks[1:5]
        assert engine.ticks_of(3) == 2, "a request that failed alone is not run again"

    run(scenario())


def test_a_row_that_fails_in_the_engine_fails_alone() -> None:
    async def scenario() -> None:
        engine = StandInEngine(fail_row={2})
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(request(seed)) for seed in (1, 2, 3)), return_exceptions=True
        )
        await batcher.close()
        assert [isinstance(outcome, ModelFailure) for outcome in outcomes] == [False, True, False]

    run(scenario())


class OutOfMemoryError(RuntimeError):
    """torch.OutOfMemoryError's name, without CUDA."""


def test_out_of_memory_caps_the_rows_per_tick_and_every_request_is_served() -> None:
    async def scenario() -> None:
        engine = StandInEngine(
            fail_tick=lambda seeds: OutOfMemoryError("CUDA out of memory") if len(seeds) > 2 else None
        )
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit(request(seed))) for seed in range(1, 7)]
        while batcher.depth < 6:
            await asyncio.sleep(0)
        engine.gate.set()
        assert sorted(image.seed for image in await asyncio.gather(*jobs)) == [1, 2, 3, 4, 5, 6]
        await batcher.close()
        served = [seeds for seeds in engine.ticks if len(seeds) <= 2]
        assert sum(len(seeds) for seeds in served) == 6 * 3, "every step of every request ran"

    run(scenario())


def test_a_dying_engine_loop_fails_its_requests_and_starts_again() -> None:
    class Poisoned(StandInRow):
        @property
        def pixel_size(self) -> Any:
            raise KeyError("a bug in the loop")

    async def scenario() -> None:
        engine = StandInEngine()
        real_start = engine.start

        def start(requests: Sequence[GenerationRequest], on_steps: Any = None) -> list[StandInRow]:
            rows = real_start(requests, on_steps)
            return [Poisoned(row.request, row.on_step) if row.request.seed == 13 else row for row in rows]

        engine.start = start  # type: ignore[method-assign]
        metrics = Metrics()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0, metrics=metrics)
        batcher.start()
        with pytest.raises(ModelFailure, match="engine failed"):
            await batcher.submit(request(13))
        assert (await batcher.submit(request(1))).seed == 1, "the loop was started again"
        await batcher.close()
        assert metrics.engine_failures._value.get() >= 1

    run(scenario())


def test_a_full_queue_throttles_at_once() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=1, max_wait_s=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(request(1)))
        while not engine.joins:
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(batcher.submit(request(s))) for s in (2, 3)]
        while batcher.depth < 2:
            await asyncio.sleep(0)
        with pytest.raises(Throttled):
            await batcher.submit(request(4))
        engine.gate.set()
        assert [r.seed for r in await asyncio.gather(first, *queued)] == [1, 2, 3]
        await batcher.close()

    run(scenario())


def test_a_request_past_its_timeout_gets_model_timeout_and_is_dropped() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=1, max_wait_s=0, request_timeout_s=0.2)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(request(1)))
        while not engine.joins:
            await asyncio.sleep(0.001)
        with pytest.raises(ModelTimeout):
            await batcher.submit(request(2))  # waits behind the held request, then times out
        with pytest.raises(ModelTimeout):
            await running
        engine.gate.set()
        await batcher.close()
        assert [2] not in engine.joins, "a timed-out request must never reach the engine"

    run(scenario())


def test_closing_finishes_accepted_work_and_refuses_new() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        batcher = Batcher(engine, max_batch_size=2, max_wait_s=0)
        batcher.start()
        accepted = [asyncio.ensure_future(batcher.submit(request(s))) for s in (1, 2, 3)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDown):
            await batcher.submit(request(4))
        assert [r.seed for r in await asyncio.gather(*accepted)] == [1, 2, 3]
        await closing

    run(scenario())


def test_progress_reaches_each_job_with_its_own_row() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        seen: dict[int, list[tuple[int, int, int]]] = {1: [], 2: []}

        def hook(seed: int) -> StepCallback:
            return lambda done, total, preview: seen[seed].append(
                (done, total, preview().image().getpixel((0, 0))[0])
            )

        await asyncio.gather(
            batcher.submit(request(1, steps=3), hook(1)), batcher.submit(request(2, steps=2), hook(2))
        )
        await batcher.close()
        assert seen == {1: [(1, 3, 1), (2, 3, 1), (3, 3, 1)], 2: [(1, 2, 2), (2, 2, 2)]}

    run(scenario())


def test_a_failing_join_or_finish_fails_only_the_request_that_fails_alone() -> None:
    async def scenario(stage: str) -> None:
        def fail_with_2(seeds: list[int]) -> BaseException | None:
            return RuntimeError(f"injected {stage} fault") if 2 in seeds else None

        engine = StandInEngine(**{f"fail_{stage}": fail_with_2})
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit(request(seed))) for seed in (1, 2, 3)]
        while batcher.depth < 3:
            await asyncio.sleep(0)
        engine.gate.set()
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.close()
        assert [isinstance(outcome, ModelFailure) for outcome in outcomes] == [False, True, False], stage
        assert [outcome.seed for outcome in outcomes if isinstance(outcome, GeneratedImage)] == [1, 3]
        assert batcher.metrics.rows_failed.labels(stage, "RuntimeError")._value.get() == 1

    for stage in ("join", "finish"):
        run(scenario(stage))


def test_rows_waiting_for_their_sizes_turn_leave_room_for_another_size() -> None:
    async def scenario() -> None:
        engine = StandInEngine()
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=2, max_wait_s=0)
        batcher.start()
        # Two of 64x64 fill their size's slots; the third of that size waits, the 128-wide ones join.
        sizes = [64, 64, 64, 128, 128]
        jobs = [
            asyncio.ensure_future(batcher.submit(request(seed, steps=2, width=width)))
            for seed, width in enumerate(sizes, start=1)
        ]
        while batcher.depth < len(jobs):
            await asyncio.sleep(0)
        engine.gate.set()
        await asyncio.gather(*jobs)
        await batcher.close()
        assert engine.joins[0] == [1, 2, 4, 5], "the 128-wide rows joined past the waiting 64x64 one"
        assert [3] in engine.joins[1:]

    run(scenario())


def test_an_out_of_memory_cap_is_in_metrics_and_grows_back() -> None:
    async def scenario() -> None:
        failures = iter([OutOfMemoryError("CUDA out of memory")])
        engine = StandInEngine(fail_tick=lambda seeds: next(failures, None) if len(seeds) == 4 else None)
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=4, max_wait_s=0)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit(request(seed, steps=3))) for seed in range(1, 5)]
        while batcher.depth < 4:
            await asyncio.sleep(0)
        engine.gate.set()
        assert sorted(image.seed for image in await asyncio.gather(*jobs)) == [1, 2, 3, 4]
        assert batcher.metrics.row_cap.labels("64x64")._value.get() == 2
        assert batcher.metrics.stage_retries.labels("tick", "out_of_memory")._value.get() == 1
        assert engine.ticks[1:3] == [[1, 2], [3, 4]], "the same tick, run again in halves"
        # Only a tick at the cap says the cap could be larger: each round offers more rows than the cap. A
        # round's rows may still be split over ticks below the cap (the engine thread can take the first
        # before the rest arrive, on a busy machine), so rounds go on until it has grown or far past the
        # 2 * GROW_EVERY ticks at the cap it needs.
        for seed in range(10, 10 + 30 * GROW_EVERY):
            if batcher.planner.cap((64, 64)) == 4:
                break
            await asyncio.gather(*(batcher.submit(request(seed * 10 + k, steps=1)) for k in range(4)))
        await batcher.close()
        assert batcher.planner.cap((64, 64)) == 4, "grown back"
        assert "64x64" not in {
            sample.labels.get("size") for sample in batcher.metrics.row_cap.collect()[0].samples
        }

    run(scenario())


@dataclass
class TwoCheckpointEngine(StandInEngine):
    """A stand-in over several checkpoints, one on the device at a time (as CheckpointEngines with
    --max-loaded-checkpoints 1): records what the batcher says is in use."""

    default_name: str = "base"
    max_on_device: int = 1
    said_in_use: list[frozenset[str]] = field(default_factory=list)

    def in_use(self, running: frozenset[str], queued: frozenset[str] = frozenset()) -> None:
        self.said_in_use.append(running)


def test_checkpoints_take_turns_and_a_turn_takes_every_waiting_row_of_its_checkpoint() -> None:
    """Arrivals alternate between two checkpoints; with one on the device, rows of the two are never in
    flight together, the second checkpoint's turn takes all its waiting rows at once, and neither starves."""

    async def scenario() -> None:
        engine = TwoCheckpointEngine()
        engine.gate.clear()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        names = ["base", "anime", "base", "anime", "base", "anime"]
        jobs = [
            asyncio.ensure_future(
                batcher.submit(dataclasses.replace(request(seed, steps=3), checkpoint=name))
            )
            for seed, name in enumerate(names, start=1)
        ]
        while batcher.depth < len(names):
            await asyncio.sleep(0)
        engine.gate.set()
        assert [image.seed for image in await asyncio.gather(*jobs)] == [1, 2, 3, 4, 5, 6]
        await batcher.close()
        assert engine.joins == [[1, 3, 5], [2, 4, 6]], "one turn each, every waiting row of it"
        assert all(set(seeds) <= {1, 3, 5} or set(seeds) <= {2, 4, 6} for seeds in engine.ticks), (
            "no tick mixes checkpoints"
        )
        assert all(len(running) <= 1 for running in engine.said_in_use)

    run(scenario())


def test_a_checkpoint_in_flight_lets_a_waiting_one_have_the_next_turn() -> None:
    """Rows of a running checkpoint that arrive after a row of another one wait behind it: the other does
    not starve under a steady stream for the first."""

    async def scenario() -> None:
        engine = TwoCheckpointEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        started = threading.Event()

        def hold(done: int, total: int, preview: Any) -> None:
            if done == 1:
                engine.gate.clear()
                started.set()

        first = asyncio.ensure_future(batcher.submit(request(1, steps=3), hold))
        await until(started)
        other = asyncio.ensure_future(
            batcher.submit(dataclasses.replace(request(2, steps=3), checkpoint="anime"))
        )
        while batcher.depth < 1:
            await asyncio.sleep(0)
        later = asyncio.ensure_future(batcher.submit(request(3, steps=3)))
        while batcher.depth < 2:
            await asyncio.sleep(0)
        engine.gate.set()
        await asyncio.gather(first, other, later)
        await batcher.close()
        assert engine.joins == [[1], [2], [3]], "the later base row waits for anime's turn"

    run(scenario())


@dataclass
class ReadingEngine(StandInEngine):
    """A stand-in whose LoRA files take until `read` is set to arrive in host memory (HostLoras)."""

    read: threading.Event = field(default_factory=threading.Event)
    asked: threading.Event = field(default_factory=threading.Event)

    def adapters_ready(self, request: GenerationRequest) -> bool:
        self.asked.set()
        return self.read.is_set()


def test_a_request_whose_adapters_are_being_read_waits_without_holding_up_the_others() -> None:
    """A job with a LoRA not yet read waits in the queue, holding no slot: jobs after it join and tick;
    once the file is read (the reader wakes the loop) it joins and is answered."""

    async def scenario() -> None:
        engine = ReadingEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        with_lora = asyncio.ensure_future(
            batcher.submit(dataclasses.replace(request(1, steps=2), loras=(LoraUse("style"),)))
        )
        await until(engine.asked)
        plain = await batcher.submit(request(2, steps=2))
        assert plain.seed == 2 and not with_lora.done(), "the plain job was served while the other waits"
        assert engine.joins == [[2]]
        engine.read.set()
        batcher.wake()
        assert (await with_lora).seed == 1
        await batcher.close()
        assert engine.joins == [[2], [1]]

    run(scenario())


def test_an_idle_loop_waiting_only_for_adapters_sleeps_until_woken() -> None:
    """With nothing in flight and every waiting job waiting for its adapters, the loop waits on its
    condition (it asks again when woken), never spins."""

    async def scenario() -> None:
        engine = ReadingEngine()
        asks = 0
        ready = engine.adapters_ready

        def counted(request: GenerationRequest) -> bool:
            nonlocal asks
            asks += 1
            return ready(request)

        engine.adapters_ready = counted  # type: ignore[method-assign]
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0)
        batcher.start()
        job = asyncio.ensure_future(
            batcher.submit(dataclasses.replace(request(1, steps=1), loras=(LoraUse("style"),)))
        )
        await until(engine.asked)
        started = time.monotonic()
        await asyncio.sleep(0.2)
        # Woken by nothing, it asks once per ADAPTER_WAIT_S at most (a spinning loop: thousands of times).
        bound = 3 + 2 * (time.monotonic() - started) / ADAPTER_WAIT_S
        assert asks <= bound, f"the loop asked {asks} times: it spins"
        engine.read.set()
        batcher.wake()
        assert (await job).seed == 1
        await batcher.close()

    run(scenario())
