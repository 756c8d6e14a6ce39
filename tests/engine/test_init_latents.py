"""A request's final latents handed back, and a later request starting image-to-image from them (the two
passes of A1111's hires fix with a latent upscale)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.schema import InitLatents, LatentResize
from tests.engine.conftest import as_array, generation_request


def test_the_final_latents_come_back_on_the_cpu_when_asked(engine: Engine) -> None:
    request = generation_request(seed=3, steps=6)
    (plain,) = engine.generate([request])
    (asked,) = engine.generate([dataclasses.replace(request, return_latents=True)])
    assert plain.latents is None
    assert isinstance(asked.latents, torch.Tensor) and asked.latents.device.type == "cpu"
    (expected,) = engine.denoised_latents([request])
    assert expected is not None and torch.equal(asked.latents, expected.float().cpu())
    assert np.array_equal(as_array(asked.image), as_array(plain.image))


def test_init_latents_start_the_row_in_place_of_an_encoded_image(engine: Engine) -> None:
    first = generation_request(seed=4, steps=6, return_latents=True)
    (made,) = engine.generate([first])
    given = InitLatents(made.latents, LatentResize.BICUBIC, antialias=True, resize_to=(128, 128))
    second = generation_request(seed=4, steps=10, width=128, height=128, denoise_from=0.5, init_latents=given)
    with torch.inference_mode():
        (row,) = engine.start([second])
        resized = torch.nn.functional.interpolate(
            torch.as_tensor(made.latents), size=(16, 16), mode="bicubic", antialias=True
        )
        assert row.start is not None and row.start.clean is not None
        assert torch.equal(row.start.clean, resized)
        # No VAE sample drew from the generator: the noise is the seed's first draw at this size.
        noise = torch.randn((1, 4, 16, 16), generator=torch.Generator("cpu").manual_seed(4))
        assert torch.equal(row.start.noise, noise)
    (image,) = engine.generate([second])
    assert image.image.size == (128, 128)


def test_init_latents_are_cut_to_the_output_around_the_centre(engine: Engine) -> None:
    latents = torch.arange(1 * 4 * 8 * 8, dtype=torch.float32).reshape(1, 4, 8, 8)
    # Resized to 80x72 pixels (10x9 latents), then cut to 64x56 (8x7): 2 columns and 2 rows go.
    given = InitLatents(latents, LatentResize.NEAREST, resize_to=(80, 72))
    request = generation_request(width=64, height=56, denoise_from=0.5, init_latents=given)
    with torch.inference_mode():
        (row,) = engine.start([request])
    resized = torch.nn.functional.interpolate(latents, size=(9, 10), mode="nearest")
    assert row.start is not None and row.start.clean is not None
    assert torch.equal(row.start.clean, resized[:, :, 1:8, 1:9])


def test_init_latents_with_no_step_to_take_are_decoded_as_they_are(engine: Engine) -> None:
    # A1111's hires fix skipped before its second pass: the sampler returns the upscaled latents untouched
    # (modules/sd_samplers_kdiffusion.py, sample_img2img: last_latent = x, which launch_sampling returns).
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(2))
    given = InitLatents(latents, LatentResize.NEAREST, resize_to=(128, 128))
    request = generation_request(width=128, height=128, denoise_from=0.0, init_latents=given)
    (made,) = engine.generate([request])
    with torch.inference_mode():
        upscaled = torch.nn.functional.interpolate(latents, size=(16, 16), mode="nearest")
        (expected,) = engine.decode(upscaled.to(engine.device, engine.dtype))
    assert made.image.size == (128, 128)
    assert np.array_equal(as_array(made.image), as_array(expected))


def test_init_latents_take_no_init_image(engine: Engine) -> None:
    given = InitLatents(torch.zeros(1, 4, 8, 8))
    source = Image.new("RGB", (64, 64))
    with pytest.raises(InvalidRequest, match="no init image"):
        engine.start([generation_request(denoise_from=0.5, init_latents=given, init_image=source)])
