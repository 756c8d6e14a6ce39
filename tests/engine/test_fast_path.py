"""The fast path keeps results: NaN retry in float32, the prompt-embedding cache, fused projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.config import parse_warmup_buckets
from sdxl_bedrock.engine.loading import resolve_vae_dtype
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.errors import ModelFailure
from sdxl_bedrock.schema import GenerationRequest, Sampler
from tests.engine.conftest import as_array, generation_request


def request(prompt: str = "a lamp", seed: int = 1) -> GenerationRequest:
    return generation_request(prompt, seed=seed, sampler=Sampler.EULER)


def test_a_unet_overflow_fails_its_row_clearly_and_changes_no_dtype(cache_dir: object) -> None:
    engine = Engine.load("tiny", "cpu", "float16")
    with torch.no_grad():
        # Representable in float16, but the activations it makes are not: a typical fp16 overflow.
        engine.pipe.unet.conv_in.weight.mul_(30000.0)
    with pytest.raises(ModelFailure, match="latents hold NaN or infinity"):
        engine.generate([request()])
    # No whole-engine float32 pass on the engine thread (it would stall every row and grow memory).
    assert engine.dtype == torch.float16 and engine.pipe.unet.dtype == torch.float16
    assert engine.non_finite == {"failed": 1}


def test_a_vae_overflow_is_retried_with_the_vae_in_float32(engine: Engine, cache_dir: object) -> None:
    bfloat16_vae = Engine.load("tiny", "cpu", "float32", vae_dtype="bfloat16")

    def overflow_in_bfloat16(module: object, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        return output * float("inf") if output.dtype == torch.bfloat16 else None

    bfloat16_vae.pipe.vae.decoder.conv_out.register_forward_hook(overflow_in_bfloat16)
    [image] = bfloat16_vae.generate([request()])
    assert bfloat16_vae.pipe.vae.dtype == torch.bfloat16, "restored after retry"
    assert bfloat16_vae.non_finite == {"redecoded": 1}
    reference = engine.generate([request()])[0].image
    # The float32 picture, up to the VAE weights' rounding to bfloat16 and back.
    assert np.abs(as_array(image.image) - as_array(reference)).max() <= 2


def test_a_non_finite_image_in_float32_is_a_model_error(cache_dir: object) -> None:
    engine = Engine.load("tiny", "cpu", "float32")
    with torch.no_grad():
        engine.pipe.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(ModelFailure, match="non-finite"):
        engine.generate([request()])


def test_repeated_prompts_skip_the_text_encoders_and_give_the_same_image(cache_dir: object) -> None:
    engine = Engine.load("tiny", "cpu", "float32")
    calls = 0
    encode = engine.prompts.encode_uncached

    def counting(texts: list[str], *layer: int) -> list:  # type: ignore[type-arg]
        nonlocal calls
        calls += 1
        return encode(texts, *layer)

    engine.prompts.encode_uncached = counting  # type: ignore[method-assign]
    first = engine.generate([request()])[0].image
    calls_after_first = calls
    second = engine.generate([request()])[0].image
    assert calls == calls_after_first, "the second request found its prompts in the cache"
    assert first.tobytes() == second.tobytes()
    engine.prompts.cache_bytes = 0
    engine.generate([request("another prompt")])
    # Keyed by (the first encoder's layer, text): clip skip's layers are kept apart.
    assert set(engine.prompts.cache) == {(2, (), ""), (2, (), "another prompt")}, (
        "the cache keeps what it is bounded to"
    )


def test_the_projections_are_fused() -> None:
    engine_unet = Engine.load("tiny", "cpu", "float32").pipe.unet
    assert any(getattr(m, "fused_projections", False) for m in engine_unet.modules())


def test_warm_up_buckets_parse() -> None:
    assert parse_warmup_buckets("1024x1024:1,2;832x1216") == (
        (1024, 1024, 1),
        (1024, 1024, 2),
        (832, 1216, 1),
    )


@pytest.mark.parametrize(
    ("device", "model_dtype", "force_upcast", "expected"),
    [
        ("cpu", torch.float32, True, torch.float32),
        ("cpu", torch.float16, True, torch.float32),  # no fast bfloat16 convolutions to count on
        ("cpu", torch.float16, False, torch.float16),  # a VAE fixed for float16 runs in it
        ("cuda", torch.float32, True, torch.float32),  # a float32 model is asked for exactness
    ],
)
def test_the_automatic_vae_dtype(
    device: str, model_dtype: torch.dtype, force_upcast: bool, expected: torch.dtype
) -> None:
    assert resolve_vae_dtype("auto", torch.device(device), model_dtype, force_upcast) == expected
    assert resolve_vae_dtype("bfloat16", torch.device(device), model_dtype, force_upcast) == torch.bfloat16


def test_a_bfloat16_vae_makes_the_float32_picture(engine: Engine, source: Image.Image) -> None:
    """What a GPU runs by default (bfloat16 VAE, float16 UNet), on the CPU: only rounding apart."""
    half = Engine.load("tiny", "cpu", "float16", vae_dtype="bfloat16")
    assert half.pipe.vae.dtype == torch.bfloat16
    image_to_image = generation_request(init_image=source, denoise_from=0.65, steps=30)
    ours, reference = (as_array(e.generate([image_to_image])[0].image) for e in (half, engine))
    assert np.abs(ours - reference).mean() < 1.5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precisions_make_the_float32_picture(engine: Engine, source: Image.Image, dtype: str) -> None:
    """The GPU's dtypes on the CPU: the same code path, only rounding apart (the VAE stays in float32)."""
    half = Engine.load("tiny", "cpu", dtype)
    assert half.pipe.vae.dtype == torch.float32
    image_to_image = generation_request(init_image=source, denoise_from=0.65, steps=30)
    ours, reference = (as_array(e.generate([image_to_image])[0].image) for e in (half, engine))
    assert np.abs(ours - reference).mean() < 1.5
