"""CLIP guidance: the loss and its pieces, and that it steers the image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sdxl_bedrock.engine.clip_guidance import ClipGuide, random_cutouts, spherical_distance
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.tiny import tiny_clip_path
from sdxl_bedrock.presets import CLIP_GUIDANCE_PRESETS
from sdxl_bedrock.schema import GenerationRequest, Sampler
from tests.engine.conftest import as_array, generation_request


@pytest.fixture(scope="module")
def engine(cache_dir: object) -> Engine:
    return Engine.load("tiny", device="cpu", dtype="float32", clip_model="tiny")


def request(preset: str, seed: int = 6, sampler: Sampler = Sampler.EULER) -> GenerationRequest:
    guidance = CLIP_GUIDANCE_PRESETS.get(preset)  # "NONE" is no entry: no guidance
    return generation_request("a green apple", seed=seed, sampler=sampler, clip_guidance=guidance)


def test_the_preset_table_covers_every_preset_but_none() -> None:
    assert set(CLIP_GUIDANCE_PRESETS) == {"FAST_BLUE", "FAST_GREEN", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"}
    assert CLIP_GUIDANCE_PRESETS["SLOWER"].guides_step(3)
    assert CLIP_GUIDANCE_PRESETS["FAST_BLUE"].guides_step(4) and not CLIP_GUIDANCE_PRESETS[
        "FAST_BLUE"
    ].guides_step(3)
    assert "NONE" not in CLIP_GUIDANCE_PRESETS


def test_spherical_distance_is_0_for_the_same_direction_and_grows_with_the_angle() -> None:
    a = torch.tensor([[1.0, 0.0]])
    assert spherical_distance(a, 3 * a).item() == pytest.approx(0, abs=1e-6)
    # The squared great-circle distance, halved: theta^2 / 2.
    assert spherical_distance(a, torch.tensor([[0.0, 1.0]])).item() == pytest.approx((math.pi / 2) ** 2 / 2)


def test_cutouts_have_the_clip_size_and_follow_the_generator() -> None:
    image = torch.rand(1, 3, 64, 48)
    first = random_cutouts(image, 32, 5, torch.Generator().manual_seed(1))
    again = random_cutouts(image, 32, 5, torch.Generator().manual_seed(1))
    assert first.shape == (5, 3, 32, 32)
    assert torch.equal(first, again)


def test_the_tiny_clip_loads_with_its_tokenizer(cache_dir: object) -> None:
    guide = ClipGuide.load(tiny_clip_path(), torch.device("cpu"))
    with torch.inference_mode():
        features = guide.text_features(["a cat", "a dog"], [1.0, 1.0])
    assert features.shape == (16,)
    assert guide.image_size == 32


def test_clip_guidance_changes_the_image(engine: Engine) -> None:
    plain = engine.generate([request("NONE")])[0].image
    guided = engine.generate([request("SIMPLE")])[0].image
    assert np.abs(as_array(plain) - as_array(guided)).max() > 1


def test_a_guided_request_gives_the_same_image_alone_and_in_a_batch(engine: Engine) -> None:
    alone = engine.generate([request("FAST_GREEN")])[0].image
    batch = engine.generate([request("SLOW", seed=2), request("FAST_GREEN"), request("NONE", seed=3)])
    assert np.abs(as_array(alone) - as_array(batch[1].image)).max() <= 1


def test_guidance_works_with_the_k_diffusion_sampler(engine: Engine) -> None:
    plain = engine.generate([request("NONE", sampler=Sampler.DPMPP_2S_ANCESTRAL)])[0].image
    guided = engine.generate([request("SLOWER", sampler=Sampler.DPMPP_2S_ANCESTRAL)])[0].image
    assert np.abs(as_array(plain) - as_array(guided)).max() > 1
