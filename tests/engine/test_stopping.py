"""Rows stopped early (A1111's interrupt and skip) and init images of another size (A1111's latent
upscale), on the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.pixels import pixels_from_images
from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.schema import Sampler
from tests.engine.conftest import as_array, generation_request


@pytest.mark.parametrize("sampler", [Sampler.EULER, Sampler.DPMPP_2M, Sampler.DPMPP_2S_ANCESTRAL])
def test_a_stopped_row_answers_the_clean_estimate_of_its_last_step(engine: Engine, sampler: Sampler) -> None:
    request = generation_request(sampler=sampler, steps=10)
    with torch.inference_mode():
        rows = engine.start([request])
        while rows[0].steps_done < 3:
            engine.tick(rows)
        (row,) = rows
        estimate = row.denoised
        assert estimate is not None and not row.done
        engine.stop(rows)
        assert row.done and row.final is estimate
        engine.finish(rows)
        expected = engine.decode(estimate)[0]
    assert row.result is not None
    assert as_array(row.result.image).tolist() == as_array(expected).tolist()
    (full,) = engine.generate([request])
    assert np.abs(as_array(full.image) - as_array(row.result.image)).max() > 1, "it did stop early"


def test_a_stopped_masked_row_keeps_the_source_outside_its_mask(engine: Engine, source: Image.Image) -> None:
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (24, 24, 40, 40))
    request = generation_request(init_image=source, mask=mask, denoise_from=1.0, steps=10)
    with torch.inference_mode():
        rows = engine.start([request])
        engine.tick(rows)
        engine.tick(rows)
        engine.stop(rows)
        engine.finish(rows)
    result = rows[0].result
    assert result is not None
    outside = np.ones((64, 64), dtype=bool)
    outside[16:48, 16:48] = False  # the mask's latent blocks and the pasted edge
    assert np.array_equal(as_array(result.image)[outside], as_array(source)[outside])


def test_an_init_image_of_another_size_has_its_latents_resized(engine: Engine) -> None:
    wide = Image.new("RGB", (96, 64), (180, 40, 40))
    wide.paste((30, 30, 200), (48, 0, 96, 64))
    request = generation_request(init_image=wide, denoise_from=0.5, steps=10, seed=5)
    with torch.inference_mode():
        (row,) = engine.start([request])
        vae = engine.pipe.vae
        pixels = pixels_from_images([wide], engine.device, vae.dtype)
        generator = torch.Generator("cpu").manual_seed(5)
        encoded = engine.to_model_latents(vae.encode(pixels).latent_dist.sample(generator=[generator]))
        expected = torch.nn.functional.interpolate(encoded, size=(8, 8), mode="bilinear")
    assert row.start is not None and row.start.clean is not None
    assert torch.allclose(row.start.clean, expected, atol=1e-6)
    (result,) = engine.generate([request])
    assert result.image.size == (64, 64)


def test_a_window_without_steps_resizes_an_init_image_of_another_size(engine: Engine) -> None:
    wide = Image.new("RGB", (96, 64), (180, 40, 40))
    (result,) = engine.generate([generation_request(init_image=wide, denoise_from=0.0)])
    assert result.image.size == (64, 64)
    assert as_array(result.image)[32, 32].tolist() == [180, 40, 40]


def test_an_init_image_of_another_size_takes_no_mask(engine: Engine) -> None:
    wide = Image.new("RGB", (96, 64))
    with pytest.raises(InvalidRequest, match="no mask"):
        engine.start([generation_request(init_image=wide, mask=Image.new("L", (64, 64), 255))])
