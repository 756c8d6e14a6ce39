"""The VAE under its memory budget (engine/vae.py): slices that fit it give the images one call gives, an
image too large for it alone goes through tiles, and a non-finite decode is decoded again with the VAE
alone in float32."""

from __future__ import annotations

import numpy as np
import torch

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.vae import VAE_BYTES_PER_PIXEL
from tests.engine.conftest import as_array, generation_request


def test_finished_rows_decode_in_slices_that_fit_the_budget(engine: Engine, cache_dir: object) -> None:
    requests = [generation_request(f"a lamp {seed}", seed=seed) for seed in range(1, 6)]
    one_image = 64 * 64 * VAE_BYTES_PER_PIXEL * 4  # float32
    budgeted = Engine.load("tiny", "cpu", "float32", vae_budget_bytes=2 * one_image)
    before = budgeted.vae.calls
    sliced = budgeted.generate(requests)
    assert budgeted.vae.calls - before == 3, "five images, two a call"
    whole = engine.generate(requests)
    for ours, reference in zip(sliced, whole, strict=True):
        assert np.abs(as_array(ours.image) - as_array(reference.image)).max() <= 1


def test_an_image_larger_than_the_budget_alone_is_decoded_and_encoded_in_tiles(cache_dir: object) -> None:
    tiled = Engine.load("tiny", "cpu", "float32", vae_budget_bytes=64 * 2**20)
    assert tiled.vae.images_per_call(512, 512) == 0
    request = generation_request("a lamp", width=512, height=512)
    source = torch.rand(1, 3, 512, 512) * 2 - 1
    latents = tiled.vae.encode(source, [torch.Generator().manual_seed(1)])
    assert latents.shape[-2:] == (512 // tiled.vae_scale_factor,) * 2
    pixels = tiled.decode_pixels(tiled.to_model_latents(latents))
    assert pixels.shape == (1, 3, 512, 512) and bool(torch.isfinite(pixels).all())
    [image] = tiled.generate([request])
    assert image.image.size == (512, 512)
    assert tiled.pipe.vae.use_tiling is False, "tiling is for that call only"


def test_a_vae_nan_is_decoded_again_in_float32_once_and_the_vae_goes_back(cache_dir: object) -> None:
    engine = Engine.load("tiny", "cpu", "float32", vae_dtype="bfloat16")
    calls = 0

    def nan_once(module: object, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        nonlocal calls
        calls += 1
        return output * float("nan") if calls == 1 else None

    engine.pipe.vae.decoder.conv_out.register_forward_hook(nan_once)
    [image] = engine.generate([generation_request("a lamp")])
    assert image.image.size == (64, 64)
    assert engine.non_finite == {"redecoded": 1}
    assert engine.pipe.vae.dtype == torch.bfloat16
