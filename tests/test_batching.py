"""The batcher: batches by key, one answer per request, failures confined to the request that fails.

The engine here is a stand-in that records its batches and can be told to fail chosen requests
(fault injection); the batcher itself is the real one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from PIL import Image

from sdxl_bedrock.batching import Batcher, EngineStepCallback, StepCallback
from sdxl_bedrock.errors import ModelFailure, ModelTimeout, ShuttingDown, Throttled
from sdxl_bedrock.schema import GeneratedImage, GenerationRequest, Sampler, WeightedPrompt


def request(seed: int, steps: int = 10) -> GenerationRequest:
    return GenerationRequest(
        prompts=(WeightedPrompt("x", 1.0),),
        negative_prompts=(),
        width=64,
        height=64,
        seed=seed,
        steps=steps,
        cfg_scale=7.0,
        sampler=Sampler.K_EULER,
    )


class FaultyEngine:
    """Makes a 1x1 image per request; fails any batch holding a seed in `failing_seeds`."""

    def __init__(self, failing_seeds: set[int] = frozenset(), delay_s: float = 0.0) -> None:  # type: ignore[assignment]
        self.failing_seeds = failing_seeds
        self.delay_s = delay_s
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(
        self, requests: Sequence[GenerationRequest], on_step: EngineStepCallback | None
    ) -> list[GeneratedImage]:
        self.batches.append([r.seed for r in requests])
        self.release.wait(10)
        for step in range(1, 4):
            if self.delay_s:
                threading.Event().wait(self.delay_s)
            if on_step is not None:
                on_step(step, 3, lambda row: Image.new("RGB", (1, 1), (requests[row].seed % 256, 0, 0)))
        if self.failing_seeds & {r.seed for r in requests}:
            raise RuntimeError("injected fault")
        return [GeneratedImage(Image.new("RGB", (1, 1), (r.seed % 256, 0, 0)), r.seed) for r in requests]


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_compatible_requests_share_a_batch_and_each_gets_its_own_image() -> None:
    async def scenario() -> None:
        engine = FaultyEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(request(seed)) for seed in range(1, 6)))
        await batcher.close()
        assert [r.seed for r in results] == [1, 2, 3, 4, 5]
        assert engine.batches == [[1, 2, 3, 4, 5]]

    run(scenario())


def test_incompatible_requests_run_in_separate_batches() -> None:
    async def scenario() -> None:
        engine = FaultyEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        await asyncio.gather(
            batcher.submit(request(1, steps=10)),
            batcher.submit(request(2, steps=20)),
            batcher.submit(request(3, steps=10)),
        )
        await batcher.close()
        assert sorted(engine.batches) == [[1, 3], [2]]

    run(scenario())


def test_a_failing_request_fails_alone_and_the_others_are_served() -> None:
    async def scenario() -> None:
        engine = FaultyEngine(failing_seeds={3})
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(request(seed)) for seed in range(1, 5)), return_exceptions=True
        )
        # The batcher keeps serving after the fault.
        after = await batcher.submit(request(9))
        await batcher.close()
        assert [isinstance(o, ModelFailure) for o in outcomes] == [False, False, True, False]
        assert "RuntimeError" in str(outcomes[2])
        assert after.seed == 9
        assert engine.batches[0] == [1, 2, 3, 4] and [3] in engine.batches[1:]

    run(scenario())


def test_a_full_queue_throttles_at_once() -> None:
    async def scenario() -> None:
        engine = FaultyEngine()
        engine.release.clear()
        batcher = Batcher(engine, max_batch_size=1, max_wait_s=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(request(1)))
        await asyncio.sleep(0.05)  # the first is running; two more fill the queue
        queued = [asyncio.ensure_future(batcher.submit(request(s))) for s in (2, 3)]
        await asyncio.sleep(0.01)
        with pytest.raises(Throttled):
            await batcher.submit(request(4))
        engine.release.set()
        assert [r.seed for r in await asyncio.gather(first, *queued)] == [1, 2, 3]
        await batcher.close()

    run(scenario())


def test_a_request_past_its_timeout_gets_model_timeout_and_is_dropped() -> None:
    async def scenario() -> None:
        engine = FaultyEngine()
        engine.release.clear()
        batcher = Batcher(engine, max_batch_size=1, max_wait_s=0, request_timeout_s=0.2)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(request(1)))
        await asyncio.sleep(0.05)
        with pytest.raises(ModelTimeout):
            await batcher.submit(request(2))  # waits behind the stuck request, then times out
        engine.release.set()
        with pytest.raises(ModelTimeout):
            await running
        await batcher.close()
        assert [2] not in engine.batches, "a timed-out request must never reach the engine"

    run(scenario())


def test_closing_finishes_accepted_work_and_refuses_new() -> None:
    async def scenario() -> None:
        engine = FaultyEngine(delay_s=0.01)
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
        engine = FaultyEngine()
        batcher = Batcher(engine, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        seen: dict[int, list[tuple[int, int]]] = {1: [], 2: []}

        def hook(seed: int) -> StepCallback:
            # The stand-in engine's preview of a row is one pixel whose red value is that row's seed.
            return lambda done, total, preview: seen[seed].append((done, preview().getpixel((0, 0))[0]))

        await asyncio.gather(*(batcher.submit(request(seed), hook(seed)) for seed in (1, 2)))
        await batcher.close()
        assert engine.batches == [[1, 2]]
        assert seen == {1: [(1, 1), (2, 1), (3, 1)], 2: [(1, 2), (2, 2), (3, 2)]}

    run(scenario())
