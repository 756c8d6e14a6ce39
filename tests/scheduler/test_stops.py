"""Stop signals in the batcher (A1111's interrupt and skip): running rows end at their step with an image,
queued and unstarted rows are dropped on an interrupt and run on after a skip. The stand-in engine of
tests/test_batching.py, which can also stop rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from sdxl_bedrock.config import Settings
from sdxl_bedrock.generation import Generations
from sdxl_bedrock.scheduler.batcher import Batcher
from sdxl_bedrock.scheduler.stops import Stopped, StopSignal
from sdxl_bedrock.scheduler.types import StepCallback
from sdxl_bedrock.schema import GenerationRequest
from sdxl_bedrock.workers import Workers
from tests.scheduler.test_batcher import StandInEngine, StandInRow, request, run


@dataclass(eq=False)
class StoppableRow(StandInRow):
    stopped: bool = False

    @property
    def done(self) -> bool:
        return self.stopped or super().done


@dataclass
class StoppableEngine(StandInEngine):
    """Records (seed, steps done) of each stopped row and of each finished one."""

    stops: list[tuple[int, int]] = field(default_factory=list)
    ends: list[tuple[int, int]] = field(default_factory=list)

    def start(
        self, requests: Sequence[GenerationRequest], on_steps: Sequence[StepCallback | None] | None = None
    ) -> list[StoppableRow]:
        self.joins.append([r.seed for r in requests])
        return [StoppableRow(r, s) for r, s in zip(requests, on_steps or [None] * len(requests), strict=True)]

    def stop(self, rows: Sequence[StoppableRow]) -> None:
        for row in rows:
            assert row.steps_done > 0, "only rows that took a step are stopped"
            row.stopped = True
            self.stops.append((row.request.seed, row.steps_done))

    def finish(self, rows: Sequence[StandInRow]) -> None:
        self.ends.extend((row.request.seed, row.steps_done) for row in rows)
        super().finish(rows)


def at_first_step(act: Any) -> StepCallback:
    """A step hook that calls `act()` (on the engine thread) at a row's first step."""

    def hook(done: int, total: int, preview: Any) -> None:
        if done == 1:
            act()

    return hook


async def queued(batcher: Batcher, jobs: int) -> None:
    """Start the batcher once `jobs` jobs wait, so that they all meet its first join (max_batch_size)."""
    while batcher.depth < jobs:
        await asyncio.sleep(0)
    batcher.start()


async def outcomes(jobs: list[asyncio.Future[Any]]) -> list[Any]:
    return list(await asyncio.gather(*jobs, return_exceptions=True))


def test_an_interrupt_stops_running_rows_with_their_image_and_drops_queued_ones() -> None:
    async def scenario() -> None:
        engine = StoppableEngine()
        batcher = Batcher(engine, max_batch_size=2, max_wait_s=0)
        signal = StopSignal()
        hook = at_first_step(signal.interrupt)
        jobs = [
            asyncio.ensure_future(batcher.submit(request(seed, steps=5), hook, signal)) for seed in (1, 2, 3)
        ]
        await queued(batcher, 3)
        first, second, third = await outcomes(jobs)
        await batcher.close()
        assert (first.seed, second.seed) == (1, 2)
        assert isinstance(third, Stopped), "the queued row never ran"
        assert sorted(engine.stops) == [(1, 1), (2, 1)]
        assert sorted(engine.ends) == [(1, 1), (2, 1)]
        assert engine.joins == [[1, 2]]

    run(scenario())


def test_a_skip_stops_the_running_rows_once_and_the_queued_ones_run_on() -> None:
    async def scenario() -> None:
        engine = StoppableEngine()
        batcher = Batcher(engine, max_batch_size=2, max_wait_s=0)
        signal = StopSignal()
        hook = at_first_step(signal.skip)
        jobs = [
            asyncio.ensure_future(batcher.submit(request(seed, steps=5), hook, signal)) for seed in (1, 2, 3)
        ]
        await queued(batcher, 3)
        images = await outcomes(jobs)
        await batcher.close()
        assert [image.seed for image in images] == [1, 2, 3]
        # The third row's own first step asks for a skip again: it runs alone then, so it is stopped too.
        assert sorted(engine.stops) == [(1, 1), (2, 1), (3, 1)]

    run(scenario())


def test_a_skip_asked_once_spares_rows_that_start_later() -> None:
    async def scenario() -> None:
        engine = StoppableEngine()
        batcher = Batcher(engine, max_batch_size=2, max_wait_s=0)
        signal = StopSignal()
        asked = False

        def skip_once() -> None:
            nonlocal asked
            if not asked:
                asked = True
                signal.skip()

        hook = at_first_step(skip_once)
        jobs = [
            asyncio.ensure_future(batcher.submit(request(seed, steps=5), hook, signal)) for seed in (1, 2, 3)
        ]
        await queued(batcher, 3)
        images = await outcomes(jobs)
        await batcher.close()
        assert [image.seed for image in images] == [1, 2, 3]
        assert sorted(engine.stops) == [(1, 1), (2, 1)]
        assert (3, 5) in engine.ends, "the row queued at the skip ran all its steps"

    run(scenario())


def test_rows_without_a_step_are_dropped_by_an_interrupt_and_run_on_after_a_skip() -> None:
    async def scenario() -> None:
        engine = StoppableEngine()
        batcher = Batcher(engine, max_batch_size=4, max_wait_s=0)
        batcher.start()
        interrupted, skipped = StopSignal(), StopSignal()
        interrupted.interrupt()
        skipped.skip()
        dropped = asyncio.ensure_future(batcher.submit(request(1, steps=3), None, interrupted))
        spared = asyncio.ensure_future(batcher.submit(request(2, steps=3), None, skipped))
        first, second = await outcomes([dropped, spared])
        await batcher.close()
        assert isinstance(first, Stopped)
        assert second.seed == 2 and (2, 3) in engine.ends
        assert engine.stops == []

    run(scenario())


@pytest.mark.parametrize("samples", [1, 3])
def test_generate_answers_the_images_made_and_leaves_out_the_dropped_ones(samples: int) -> None:
    async def scenario() -> None:
        engine = StoppableEngine()
        workers = Workers(1)
        generations = Generations(Settings(), workers)
        batcher = Batcher(engine, max_batch_size=1, max_wait_s=0)
        generations.batcher = batcher
        signal = StopSignal()
        work = asyncio.ensure_future(
            generations.generate(
                GenerationRequest(**{**request(7, steps=4).__dict__, "samples": samples}),
                at_first_step(signal.interrupt),
                signal,
            )
        )
        await queued(batcher, samples)
        artifacts = await work
        await batcher.close()
        workers.close()
        assert [artifact.seed for artifact in artifacts] == [7], (
            "the first sample stopped; the others dropped"
        )

    run(scenario())
