"""Masked image-to-image: latent blending while denoising, then the original pixels outside the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.masking import EDGE_RADIUS, latent_mask, paste_outside_mask, soft_edge
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import GenerationRequest, Sampler
from tests.engine.conftest import as_array, generation_request


def square_mask(left: int, top: int, right: int, bottom: int, size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (left, top, right, bottom))
    return mask


def outside_band(mask: Image.Image, band: int = EDGE_RADIUS) -> np.ndarray:
    """True where a pixel is farther than `band` pixels (along both axes) from every masked pixel."""
    masked = np.asarray(mask) >= 128
    grown = masked.copy()
    for dy in range(-band, band + 1):
        for dx in range(-band, band + 1):
            grown |= np.roll(np.roll(masked, dy, 0), dx, 1)
    return ~grown


def masked_request(
    source: Image.Image, mask: Image.Image, seed: int = 2, sampler: Sampler = Sampler.EULER
) -> GenerationRequest:
    return generation_request(
        "a red door", seed=seed, sampler=sampler, denoise_from=1.0, init_image=source, mask=mask
    )


def test_the_soft_edge_is_exactly_0_beyond_its_radius_and_1_deep_inside() -> None:
    mask = square_mask(16, 16, 48, 48)
    soft = soft_edge(mask)
    assert np.all(soft[outside_band(mask)] == 0)
    assert np.allclose(soft[16 + EDGE_RADIUS : 48 - EDGE_RADIUS, 16 + EDGE_RADIUS : 48 - EDGE_RADIUS], 1)
    assert 0 < soft[32, 16] < 1  # the edge itself is soft


def test_a_latent_is_regenerated_when_any_pixel_of_its_block_is() -> None:
    mask = square_mask(9, 9, 10, 10)  # one pixel
    latents = latent_mask([mask], 8, torch.zeros(1))
    assert latents.shape == (1, 1, 8, 8)
    assert latents.sum() == 1 and latents[0, 0, 1, 1] == 1


def test_pasting_keeps_the_original_outside_the_band() -> None:
    original = Image.new("RGB", (64, 64), (10, 20, 30))
    generated = Image.new("RGB", (64, 64), (200, 100, 50))
    mask = square_mask(20, 8, 40, 30)
    pasted = as_array(paste_outside_mask(generated, original, mask))
    assert np.all(pasted[outside_band(mask)] == (10, 20, 30))
    assert np.all(pasted[14:24, 26:34] == (200, 100, 50))


@pytest.mark.parametrize("sampler", [Sampler.EULER, Sampler.DDIM, Sampler.DPMPP_2S_ANCESTRAL, Sampler.HEUN])
def test_only_the_masked_region_changes(engine: Engine, source: Image.Image, sampler: Sampler) -> None:
    mask = square_mask(16, 24, 48, 56)
    image = as_array(engine.generate([masked_request(source, mask, sampler=sampler)])[0].image)
    original = as_array(source)
    outside = outside_band(mask)
    assert np.array_equal(image[outside], original[outside])
    inside = np.asarray(mask) >= 128
    assert np.abs(image[inside] - original[inside]).mean() > 5


def test_a_masked_request_gives_the_same_image_alone_and_in_a_batch(
    engine: Engine, source: Image.Image
) -> None:
    mask = square_mask(0, 0, 32, 64)
    alone = engine.generate([masked_request(source, mask)])[0].image
    batch = engine.generate(
        [masked_request(source, square_mask(32, 0, 64, 64), seed=7), masked_request(source, mask)]
    )
    assert np.abs(as_array(alone) - as_array(batch[1].image)).max() <= 1
