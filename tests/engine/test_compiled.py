"""`--compile`: the UNet compiled for the warmed-up shapes gives the eager engine's images, and no request
after warm-up compiles anything (other batch sizes run as padded chunks, prompts padded to a warmed length
with masked-out chunks, other shapes run eager)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.acceleration import UNetInputs, UNetRunner, chunk_buckets, chunk_rows, runs_of
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.prompts import CLIP_WINDOW
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.engine.conftest import as_array, compilations, generation_request

pytestmark = pytest.mark.slow

STEPS = 8  # one UNet call a step with K_DPMPP_2M


def request(prompt: str = "a lamp", seed: int = 1, **changes: Any) -> GenerationRequest:
    return generation_request(prompt, seed=seed, steps=STEPS, **changes)


def long_prompt(chunks: int) -> str:
    """A prompt of `chunks` chunks of 77 tokens (about 4 tokens a phrase, 75 of them a chunk)."""
    return "a long prompt, " * {2: 20, 3: 40, 4: 60, 5: 80}[chunks]


@pytest.fixture(scope="module")
def compiled(cache_dir: object) -> Engine:
    """Warmed up as `serve --compile --warmup 64x64:1,2 --warmup-prompt-chunks 4` does it."""
    engine = Engine.load("tiny", "cpu", "float32", compile_unet=True)
    engine.warm_up(64, 64, 1)  # 2 UNet rows under classifier-free guidance
    engine.warm_up(64, 64, 2)  # 4 rows
    engine.warm_up(64, 64, 1, prompt_chunks=2)  # 2 rows of 154 tokens
    engine.warm_up(64, 64, 1, prompt_chunks=4)  # 2 rows of 308 tokens
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


def test_prompt_lengths_warmed_double_up_to_the_longest() -> None:
    assert chunk_buckets(1) == (1,)
    assert chunk_buckets(2) == (1, 2)
    assert chunk_buckets(3) == (1, 2, 3)
    assert chunk_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert chunk_buckets(27) == (1, 2, 4, 8, 16, 27)
    with pytest.raises(ValueError, match="at least one chunk"):
        chunk_buckets(0)


def test_rows_of_one_bucket_are_taken_in_runs() -> None:
    assert runs_of([0, 1, 3]) == [(0, 2), (3, 4)]
    assert runs_of([2]) == [(2, 3)]
    assert runs_of([0, 2, 4, 5, 6]) == [(0, 1), (2, 3), (4, 7)]


def unet_inputs(
    engine: Engine, rows: int, chunks: int, row_chunks: tuple[int, ...] | None = None
) -> UNetInputs:
    """Random UNet inputs for the tiny model: `rows` rows of 8x8 latents and `chunks` chunks of tokens,
    the tokens past each row's own `row_chunks` masked out."""
    config = engine.pipe.unet.config
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    generator = torch.Generator().manual_seed(0)
    mask = None
    if row_chunks is not None:
        mask = torch.zeros(rows, chunks * CLIP_WINDOW)
        for row, own in enumerate(row_chunks):
            mask[row, : own * CLIP_WINDOW] = 1
    return UNetInputs(
        torch.randn(rows, 4, 8, 8, generator=generator).to(memory_format=torch.channels_last),
        torch.full((rows,), 500.0),
        torch.randn(rows, chunks * CLIP_WINDOW, config.cross_attention_dim, generator=generator),
        mask,
        torch.randn(rows, pooled, generator=generator),
        torch.tensor([[64.0, 64, 0, 0, 64, 64]] * rows),
        row_chunks,
    )


def test_padding_rows_change_no_real_row(engine: Engine) -> None:
    inputs = unet_inputs(engine, 3, 1)
    with torch.inference_mode():
        alone = UNetRunner.run(engine.pipe.unet, inputs)
        padded = UNetRunner.run(engine.pipe.unet, inputs.padded_to(8))[:3]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


def test_prompts_fit_a_length_padded_with_masked_out_chunks(engine: Engine) -> None:
    inputs = unet_inputs(engine, 3, 2, row_chunks=(2, 1, 1))
    padded = inputs.in_chunks(4)
    assert padded.tokens.shape[1] == padded.token_mask.shape[1] == 4 * CLIP_WINDOW
    assert torch.equal(padded.tokens[:, : 2 * CLIP_WINDOW], inputs.tokens)
    assert padded.token_mask.sum(1).tolist() == [2 * CLIP_WINDOW, CLIP_WINDOW, CLIP_WINDOW]
    assert padded.row_chunks == (2, 1, 1)
    # A mask above one chunk whatever the rows (one graph per length), none at one chunk.
    assert unet_inputs(engine, 2, 2).in_chunks(2).token_mask.tolist() == [[1.0] * 2 * CLIP_WINDOW] * 2
    one = inputs.rows_slice(1, 3).in_chunks(1)
    assert one.token_mask is None and torch.equal(one.tokens, inputs.tokens[1:3, :CLIP_WINDOW])
    with pytest.raises(ValueError, match="rows of 2 chunks do not fit in 1"):
        inputs.in_chunks(1)
    with torch.inference_mode():
        plain = UNetRunner.run(engine.pipe.unet, inputs)
        torch.testing.assert_close(UNetRunner.run(engine.pipe.unet, padded), plain, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            UNetRunner.run(engine.pipe.unet, inputs.rows_slice(1, 3).in_chunks(1)),
            plain[1:3],
            rtol=1e-4,
            atol=1e-5,
        )


def test_masked_out_padding_chunks_change_no_image(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every UNet call padded to 6 chunks (what a compiled call does to fit a warmed length) makes the
    eager images: short and long prompts, alone and sharing a batch, negative prompts, image-to-image."""
    batches = [
        [request()],
        [request(long_prompt(2))],
        [request(long_prompt(3), seed=2, negative_prompts=(WeightedPrompt("blurry", 1.0),))],
        [request("a lamp", seed=3), request(long_prompt(5), seed=4), request("a fox", seed=5, cfg_scale=1.0)],
    ]
    plain = [engine.generate(batch) for batch in batches]
    run_eager = engine.unet.run_eager
    monkeypatch.setattr(engine.unet, "run_eager", lambda inputs: run_eager(inputs.in_chunks(6)))
    padded = [engine.generate(batch) for batch in batches]
    for ours, theirs in zip(padded, plain, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert np.abs(as_array(a.image) - as_array(b.image)).max() <= 1


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


def test_long_prompts_run_compiled_padded_to_a_warmed_length(compiled: Engine, engine: Engine) -> None:
    """Warmed at 1, 2 and 4 chunks: prompts of 2 and 3 chunks (the latter padded to 4) run compiled, and a
    batch of short and long prompts runs each length's rows in their own graphs."""
    before, calls = compilations(), compiled.unet.calls.copy()
    assert_same_images(compiled, engine, [request(long_prompt(2))])
    assert_same_images(compiled, engine, [request(long_prompt(3), seed=2)])
    assert_same_images(
        compiled, engine, [request(long_prompt(4), negative_prompts=(WeightedPrompt("dark", 1.0),))]
    )
    assert_same_images(compiled, engine, [request("a lamp", seed=3), request(long_prompt(3), seed=4)])
    assert compilations() == before, "a request compiled a graph after warm-up"
    assert compiled.unet.calls["eager"] == calls["eager"], "every call went through the compiled graphs"
    # One call a step for each request alone (the negative prompt's row of one chunk in its own graph
    # too), one for each of the two lengths in the shared batch.
    assert compiled.unet.calls["compiled"] == calls["compiled"] + STEPS * (1 + 1 + 2 + 2)


def test_other_shapes_run_eager_with_a_warning(
    compiled: Engine, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """An image size not warmed up runs eager; so do prompts longer than every warmed length, alone: the
    short prompt beside one stays compiled."""
    before, calls = compilations(), compiled.unet.calls.copy()
    with caplog.at_level(logging.WARNING, "sdxl_bedrock.engine.acceleration"):
        assert_same_images(compiled, engine, [request(width=128)])
        assert_same_images(compiled, engine, [request("a lamp"), request(long_prompt(5), seed=2)])
    assert compilations() == before
    assert compiled.unet.calls["eager"] == calls["eager"] + 2 * STEPS, "the 128x128 and the 5-chunk rows"
    assert compiled.unet.calls["compiled"] == calls["compiled"] + STEPS, "the short prompt's rows"
    messages = [record.message for record in caplog.records]
    assert sum("was not warmed up" in message for message in messages) == 1
    assert sum("prompts over the 308 tokens warmed up run eager" in message for message in messages) == 1
