"""Faithful to diffusers: with DDIM and K_EULER our image is the img2img pipeline's (within 1/255)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.conftest import gradient_png
from tests.engine.conftest import as_array, generation_request

SCHEDULERS = {Sampler.DDIM: DDIMScheduler, Sampler.EULER: EulerDiscreteScheduler}


@pytest.mark.parametrize("sampler", [Sampler.DDIM, Sampler.EULER])
@pytest.mark.parametrize("negative", [None, "blurry, low quality"])
def test_image_to_image_matches_diffusers(
    engine: Engine, reference_pipe: StableDiffusionXLImg2ImgPipeline, sampler: Sampler, negative: str | None
) -> None:
    source = Image.open(io.BytesIO(gradient_png(128, 96)))
    image_strength, steps, cfg_scale, seed = 0.35, 30, 7.0, 1234
    request = GenerationRequest(
        prompts=(WeightedPrompt("a red fox in the snow", 1.0),),
        negative_prompts=(WeightedPrompt(negative, 1.0),) if negative else (),
        width=128,
        height=96,
        seed=seed,
        steps=steps,
        cfg_scale=cfg_scale,
        sampler=sampler,
        denoise_from=1 - image_strength,
        init_image=source.convert("RGB"),
    )
    ours = engine.generate([request])[0].image

    reference_pipe.scheduler = SCHEDULERS[sampler].from_config(reference_pipe.scheduler.config)
    theirs = reference_pipe(
        prompt="a red fox in the snow",
        negative_prompt=negative,
        image=source.convert("RGB"),
        strength=1 - image_strength,
        num_inference_steps=steps,
        guidance_scale=cfg_scale,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]

    difference = np.abs(as_array(ours) - as_array(theirs))
    assert ours.size == theirs.size == (128, 96)
    assert difference.max() <= 1, f"max pixel difference {difference.max()}"


def test_a_request_gives_the_same_image_alone_and_inside_a_batch(engine: Engine) -> None:
    source = Image.open(io.BytesIO(gradient_png(64, 64))).convert("RGB")

    def request(prompt: str, seed: int, cfg_scale: float) -> GenerationRequest:
        return generation_request(
            prompt,
            seed=seed,
            steps=12,
            cfg_scale=cfg_scale,
            sampler=Sampler.EULER_ANCESTRAL,
            denoise_from=0.8,
            init_image=source,
        )

    alone = engine.generate([request("a cat", 5, 7.0)])[0].image
    batch = engine.generate([request("a dog", 9, 3.0), request("a cat", 5, 7.0), request("a bird", 11, 1.0)])
    assert np.abs(as_array(alone) - as_array(batch[1].image)).max() <= 1
    assert np.abs(as_array(batch[0].image) - as_array(alone)).max() > 1
