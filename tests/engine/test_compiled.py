"""`--compile`: the UNet compiled for the warmed-up shapes gives the eager engine's images, and no request
after warm-up compiles anything (other batch sizes run as padded chunks, other shapes run eager)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.acceleration import UNetInputs, UNetRunner, chunk_rows
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import GenerationRequest, Sampler
from tests.engine.conftest import as_array, compilations, generation_request

pytestmark = pytest.mark.slow


def request(prompt: str = "a lamp", seed: int = 1, **changes: Any) -> GenerationRequest:
    return generation_request(prompt, seed=seed, steps=8, **changes)


@pytest.fixture(scope="module")
def compiled(cache_dir: object) -> Engine:
    engine = Engine.load("tiny", "cpu", "float32", compile_unet=True)
    engine.warm_up(64, 64, 1)  # 2 UNet rows under classifier-free guidance
    engine.warm_up(64, 64, 2)  # 4 rows
    return engine


def assert_same_images(compiled: Engine, eager: Engine, requests: list[GenerationRequest]) -> None:
    for ours, theirs in zip(compiled.generate(requests), eager.generate(requests), strict=True):
        assert np.abs(as_array(ours.image) - as_array(theirs.image)).max() <= 1


def test_rows_are_cut_into_warmed_counts_and_the_remainder_padded() -> None:
    assert chunk_rows(4, [2, 4]) == [(4, 4)]
    assert chunk_rows(6, [2, 4]) == [(4, 4), (2, 2)]
    assert chunk_rows(1, [2, 4]) == [(1, 2)]
    assert chunk_rows(7, [2, 4]) == [(4, 4), (2, 2), (1, 2)]
    assert chunk_rows(16, [2, 4, 8]) == [(8, 8), (8, 8)]


def test_padding_rows_change_no_real_row(engine: Engine) -> None:
    config = engine.pipe.unet.config
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    generator = torch.Generator().manual_seed(0)
    inputs = UNetInputs(
        torch.randn(3, 4, 8, 8, generator=generator).to(memory_format=torch.channels_last),
        torch.full((3,), 500.0),
        torch.randn(3, 77, config.cross_attention_dim, generator=generator),
        None,
        torch.randn(3, pooled, generator=generator),
        torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 3),
    )
    with torch.inference_mode():
        alone = UNetRunner.run(engine.pipe.unet, inputs)
        padded = UNetRunner.run(engine.pipe.unet, inputs.padded_to(8))[:3]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


def test_warmed_shapes_run_compiled_for_any_batch_size_without_compiling(
    compiled: Engine, engine: Engine, source: Image.Image
) -> None:
    """Warmed up on text-to-image with one sampler; served: image-to-image (latents from the VAE, in
    another memory layout), other samplers (float timesteps, a second model call per step), any batch."""
    before, eager_calls = compilations(), compiled.unet.calls["eager"]
    image_to_image: dict[str, Any] = {"init_image": source, "denoise_from": 0.65}
    assert_same_images(compiled, engine, [request()])  # 2 rows: warmed
    assert_same_images(compiled, engine, [request(**image_to_image)])
    assert_same_images(  # 6 rows = 4 + 2
        compiled, engine, [request(f"prompt {i}", seed=i, **image_to_image) for i in range(3)]
    )
    assert_same_images(compiled, engine, [request(cfg_scale=1.0)])  # 1 row, padded to 2
    for sampler in (Sampler.EULER, Sampler.HEUN, Sampler.DPMPP_2S_ANCESTRAL):
        assert_same_images(compiled, engine, [request(sampler=sampler, **image_to_image)])
    assert compilations() == before, "a request compiled a graph after warm-up"
    assert compiled.unet.calls["eager"] == eager_calls, "every call went through the compiled graphs"


def test_other_shapes_run_eager_with_a_warning(
    compiled: Engine, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    before, eager_calls = compilations(), compiled.unet.calls["eager"]
    with caplog.at_level(logging.WARNING, "sdxl_bedrock.engine.acceleration"):
        assert_same_images(compiled, engine, [request(width=128)])
        assert_same_images(compiled, engine, [request("a long prompt, " * 20)])  # 2 chunks of 77 tokens
    assert compilations() == before
    assert compiled.unet.calls["eager"] == eager_calls + 2 * 8, "two requests of 8 steps ran eager"
    assert sum("was not warmed up" in record.message for record in caplog.records) == 2
