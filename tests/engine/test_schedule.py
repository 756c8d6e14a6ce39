"""Text-to-image, cfg_scale <= 1 and the step schedule window, against diffusers and the model's own maths."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.engine.conftest import as_array


def make_request(**fields: Any) -> GenerationRequest:
    defaults: dict[str, Any] = {
        "prompts": (WeightedPrompt("a red fox", 1.0),),
        "negative_prompts": (),
        "width": 64,
        "height": 64,
        "seed": 21,
        "steps": 10,
        "cfg_scale": 7.0,
        "sampler": Sampler.EULER,
    }
    return GenerationRequest(**{**defaults, **fields})


def unet_batch_sizes(engine: Engine) -> tuple[list[int], Any]:
    sizes: list[int] = []
    handle = engine.pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes, handle


def test_text_to_image_matches_diffusers(
    engine: Engine, reference_pipe: StableDiffusionXLImg2ImgPipeline
) -> None:
    ours = engine.generate([make_request(width=128, height=64)])[0].image
    text_to_image = StableDiffusionXLPipeline.from_pipe(reference_pipe)
    text_to_image.scheduler = EulerDiscreteScheduler.from_config(reference_pipe.scheduler.config)
    theirs = text_to_image(
        prompt="a red fox",
        width=128,
        height=64,
        num_inference_steps=10,
        guidance_scale=7.0,
        generator=torch.Generator().manual_seed(21),
    ).images[0]
    assert ours.size == theirs.size == (128, 64)
    assert np.abs(as_array(ours) - as_array(theirs)).max() <= 1


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_at_cfg_scale_up_to_1_the_unconditional_pass_is_skipped_and_diffusers_agrees(
    engine: Engine, reference_pipe: StableDiffusionXLImg2ImgPipeline, source: Image.Image, cfg_scale: float
) -> None:
    sizes, handle = unet_batch_sizes(engine)
    try:
        ours = engine.generate([make_request(cfg_scale=cfg_scale, init_image=source, denoise_from=0.7)])
    finally:
        handle.remove()
    assert set(sizes) == {1}
    reference_pipe.scheduler = EulerDiscreteScheduler.from_config(reference_pipe.scheduler.config)
    theirs = reference_pipe(
        prompt="a red fox",
        image=source,
        strength=0.7,
        num_inference_steps=10,
        guidance_scale=cfg_scale,
        generator=torch.Generator().manual_seed(21),
    ).images[0]
    assert np.abs(as_array(ours[0].image) - as_array(theirs)).max() <= 1


def test_only_rows_above_1_run_the_unconditional_pass_and_a_row_at_1_keeps_its_image(
    engine: Engine, source: Image.Image
) -> None:
    unguided = make_request(cfg_scale=1.0, init_image=source, denoise_from=0.7)
    alone = engine.generate([unguided])[0].image
    sizes, handle = unet_batch_sizes(engine)
    try:
        batch = engine.generate([make_request(init_image=source, denoise_from=0.7, seed=3), unguided])
    finally:
        handle.remove()
    # The guided row's unconditional and conditional rows, and the unguided row's conditional row only.
    assert set(sizes) == {3}
    assert np.abs(as_array(alone) - as_array(batch[1].image)).max() <= 1


def test_a_window_that_stops_early_returns_the_clean_estimate_of_its_last_step(
    engine: Engine, source: Image.Image
) -> None:
    # DDIM, no classifier-free guidance: the UNet's output is the noise, and x0 follows from alpha_bar.
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        calls.append((args[0].clone(), torch.as_tensor(args[1]).clone(), output[0].clone()))

    handle = engine.pipe.unet.register_forward_hook(record, with_kwargs=True)
    try:
        request = make_request(
            sampler=Sampler.DDIM, cfg_scale=1.0, init_image=source, denoise_from=0.8, denoise_to=0.3
        )
        image = engine.generate([request])[0].image
    finally:
        handle.remove()
    assert len(calls) == 5  # steps 2..6 of 10
    latents, timestep, noise = calls[-1]
    alpha_bar = engine.pipe.scheduler.alphas_cumprod[int(timestep)]
    clean = (latents - (1 - alpha_bar) ** 0.5 * noise) / alpha_bar**0.5
    with torch.inference_mode():
        expected = engine.decode(clean)[0]
    assert np.abs(as_array(image) - as_array(expected)).max() <= 1


@pytest.mark.parametrize("sampler", [Sampler.EULER, Sampler.HEUN, Sampler.DPMPP_2S_ANCESTRAL, Sampler.DDPM])
def test_a_window_that_stops_early_gives_an_image_for_every_kind_of_sampler(
    engine: Engine, source: Image.Image, sampler: Sampler
) -> None:
    request = make_request(sampler=sampler, init_image=source, denoise_from=0.8, denoise_to=0.3)
    full = make_request(sampler=sampler, init_image=source, denoise_from=0.8)
    early, finished = engine.generate([request])[0].image, engine.generate([full])[0].image
    assert early.size == (64, 64)
    assert np.abs(as_array(early) - as_array(finished)).max() > 1


@pytest.mark.parametrize(("denoise_from", "denoise_to"), [(0.0, 0.0), (0.05, 0.0), (0.65, 0.61)])
def test_a_window_without_a_step_returns_the_init_image_itself(
    engine: Engine, source: Image.Image, denoise_from: float, denoise_to: float
) -> None:
    request = make_request(init_image=source, denoise_from=denoise_from, denoise_to=denoise_to)
    assert np.array_equal(as_array(engine.generate([request])[0].image), as_array(source))
