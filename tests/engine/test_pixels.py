"""Image <-> pixel-tensor conversion on the device gives diffusers' VaeImageProcessor results to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from sdxl_bedrock.engine.pixels import images_from_pixels, pixels_from_images

PROCESSOR = VaeImageProcessor(vae_scale_factor=8)


def noise_image(seed: int, mode: str = "RGB") -> Image.Image:
    levels = np.random.default_rng(seed).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    return Image.fromarray(levels).convert(mode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_images_become_diffusers_pixels(dtype: torch.dtype) -> None:
    images = [noise_image(1), noise_image(2)]
    ours = pixels_from_images(images, torch.device("cpu"), dtype)
    theirs = torch.cat([PROCESSOR.preprocess(image) for image in images]).to(dtype)
    assert ours.dtype == dtype
    assert torch.equal(ours, theirs)


def test_a_grey_image_comes_in_as_rgb() -> None:
    grey = noise_image(3, "L")
    ours = pixels_from_images([grey], torch.device("cpu"), torch.float32)
    assert torch.equal(ours, PROCESSOR.preprocess(grey.convert("RGB")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pixels_become_diffusers_images(dtype: torch.dtype) -> None:
    # Past [-1, 1] and exactly between two levels, where clamping and rounding show.
    pixels = torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(0)).mul(0.7).to(dtype)
    pixels[0, 0, 0, :4] = torch.tensor([-1.5, 1.5, 1 / 255, -1 + 1 / 255])
    ours = images_from_pixels(pixels)
    theirs = PROCESSOR.postprocess(pixels, output_type="pil")
    for our_image, their_image in zip(ours, theirs, strict=True):
        assert our_image.mode == "RGB" and our_image.size == (128, 64)
        assert np.array_equal(np.asarray(our_image), np.asarray(their_image))
