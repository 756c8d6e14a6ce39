"""Continuous batching with the real engine: a request's image does not depend on its company.

Rows of all ten samplers and the three modes, with their own steps, strengths, prompts and guidance scales,
join a running batch mid-flight, share every UNet call with whoever is running, and leave as their runs
end (or as their callers go); each image must equal the request's image made alone (within 1/255).
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.rows import Row
from sdxl_bedrock.presets import CLIP_GUIDANCE_PRESETS, STYLE_PRESETS
from sdxl_bedrock.scheduler.batcher import Batcher
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.engine.conftest import as_array, generation_request

MODES = ("text-to-image", "image-to-image", "masked")


def half_mask(size: tuple[int, int]) -> Image.Image:
    levels = np.zeros((size[1], size[0]), dtype=np.uint8)
    levels[:, : size[0] // 2] = 255
    return Image.fromarray(levels, "L")


def mixed_requests(source: Image.Image) -> list[GenerationRequest]:
    """Every sampler in every mode, each with its own steps, strength, prompt, seed and guidance."""
    requests = []
    for index, (sampler, mode) in enumerate(itertools.product(Sampler, MODES)):
        image = {}
        if mode != "text-to-image":
            image = {"init_image": source, "denoise_from": (0.5, 0.65, 0.8)[index % 3]}
        if mode == "masked":
            image["mask"] = half_mask(source.size)
        requests.append(
            generation_request(
                f"a lighthouse, variant {index % 4}",
                sampler=sampler,
                steps=10 + index % 5,
                seed=100 + index,
                cfg_scale=(7.0, 1.0, 4.5)[index % 3],
                negative_prompts=(WeightedPrompt("fog", 1.0),) if index % 4 == 1 else (),
                **image,
            )
        )
    return requests


def differences(images: list[Image.Image], references: list[Image.Image]) -> list[int]:
    return [int(np.abs(as_array(a) - as_array(b)).max()) for a, b in zip(images, references, strict=True)]


def test_rows_joining_and_leaving_mid_flight_give_each_request_its_image_alone(
    engine: Engine, source: Image.Image
) -> None:
    requests = mixed_requests(source)
    alone = [engine.generate([request])[0].image for request in requests]
    waiting = list(requests)
    in_flight: list[Row] = []
    made: dict[int, Image.Image] = {}
    ticks = 0
    while waiting or in_flight:
        # Two newcomers join before each tick, wherever the rows already running are in their runs.
        joining, waiting = waiting[:2], waiting[2:]
        in_flight += engine.start(joining)
        running = [row for row in in_flight if not row.done]
        if running:
            engine.tick(running)
            ticks += 1
        ended = [row for row in in_flight if row.done]
        engine.finish(ended)
        for row in ended:
            assert row.failed is None, row.failed
            assert row.result is not None
            made[requests.index(row.request)] = row.result.image
        in_flight = [row for row in in_flight if not row.done]
    assert ticks < sum(request.steps for request in requests) / 3, "rows shared their ticks"
    assert max(differences([made[i] for i in range(len(requests))], alone)) <= 1


def test_a_row_that_leaves_mid_flight_changes_no_other_row(engine: Engine, source: Image.Image) -> None:
    requests = mixed_requests(source)[:6]
    alone = [engine.generate([request])[0].image for request in requests]
    rows = engine.start(requests)
    for _ in range(3):
        engine.tick([row for row in rows if not row.done])
    staying = [row for index, row in enumerate(rows) if index != 2]  # row 2's caller left
    engine.denoise(staying)
    engine.finish(staying)
    kept = [image for index, image in enumerate(alone) if index != 2]
    assert max(differences([row.result.image for row in staying if row.result], kept)) <= 1


def test_rows_of_different_samplers_steps_and_modes_share_one_unet_call(
    engine: Engine, source: Image.Image
) -> None:
    rows = engine.start(mixed_requests(source)[:9])
    before = engine.unet.calls["eager"]
    engine.tick(rows)
    assert engine.unet.calls["eager"] == before + 1


def test_styled_prompts_reach_the_text_encoders_through_the_template(engine: Engine) -> None:
    style = STYLE_PRESETS["anime"]
    styled = generation_request("a fox", style=style)
    spelled_out = generation_request(
        style.template.format(prompt="a fox"), negative_prompts=(WeightedPrompt(style.negative, 1.0),)
    )
    assert (
        as_array(engine.generate([styled])[0].image).tobytes()
        == as_array(engine.generate([spelled_out])[0].image).tobytes()
    )


@pytest.fixture(scope="module")
def clip_engine(cache_dir: object) -> Engine:
    return Engine.load("tiny", device="cpu", dtype="float32", clip_model="tiny")


def test_a_clip_guided_row_shares_ticks_and_keeps_its_image(clip_engine: Engine, source: Image.Image) -> None:
    guided = generation_request(
        "a green apple", sampler=Sampler.EULER, clip_guidance=CLIP_GUIDANCE_PRESETS["SIMPLE"]
    )
    others = mixed_requests(source)[:3]
    alone = clip_engine.generate([guided])[0].image
    together = clip_engine.generate([*others, guided])[-1].image
    assert max(differences([together], [alone])) <= 1


def test_the_batcher_with_the_real_engine_gives_every_request_its_image(
    engine: Engine, source: Image.Image
) -> None:
    requests = mixed_requests(source)[::3]
    alone = [engine.generate([request])[0].image for request in requests]

    async def concurrently() -> list[Image.Image]:
        batcher = Batcher(engine, max_batch_size=4, max_wait_s=0.01)
        batcher.start()
        try:
            return [image.image for image in await asyncio.gather(*(batcher.submit(r) for r in requests))]
        finally:
            await batcher.close()

    assert max(differences(asyncio.run(concurrently()), alone)) <= 1
