"""Each row's step noise (engine/noise.py): drawn ahead and copied once per look-ahead, with exactly the
values that one draw per step gives, and every sampler's draws pass through it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch.overrides import TorchFunctionMode

from sdxl_bedrock.engine import pipeline
from sdxl_bedrock.engine.noise import NOISE_LOOK_AHEAD, RowNoise
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.samplers import draws_step_noise, make_scheduler, plan_sampling
from sdxl_bedrock.schema import SAMPLERS_WITH_ETA, Sampler
from tests.engine.conftest import generation_request
from tests.engine.test_samplers import run_with

CPU = torch.device("cpu")


# [1, 4, 9, 9] has 324 elements, not a multiple of 16: torch's CPU normal sampler fills 16 at a time and
# redraws the tail, so one [K, ...] draw would not give K draws' values.
@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (1, 4, 9, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_draws_made_ahead_are_the_draws_of_one_per_step(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    like = torch.zeros(shape, dtype=dtype)
    noise = RowNoise(torch.Generator().manual_seed(7), CPU, look_ahead=4)
    served = [noise.like(like) for _ in range(10)]
    generator = torch.Generator().manual_seed(7)
    one_per_step = [torch.randn(shape, generator=generator, dtype=dtype) for _ in range(10)]
    assert all(torch.equal(a, b) for a, b in zip(served, one_per_step, strict=True))
    assert all(draw.shape == shape and draw.dtype == dtype for draw in served)
    assert noise.copies == 3, "10 draws, 4 ahead at a time"


def test_diffusers_draws_from_the_rows_generator_are_served_and_others_are_not() -> None:
    generator, other = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    noise = RowNoise(generator, CPU, look_ahead=3)
    with noise.serving_diffusers():
        ours = randn_tensor((1, 4, 8, 8), generator=generator, device=CPU, dtype=torch.float32)
        theirs = randn_tensor((1, 4, 8, 8), generator=other, device=CPU, dtype=torch.float32)
    assert torch.equal(ours, theirs), "the same first draw"
    assert noise.copies == 1
    assert torch.equal(noise.like(ours), torch.randn(1, 4, 8, 8, generator=other)), "the second, made ahead"


def test_a_draw_of_another_shape_after_draws_made_ahead_is_refused() -> None:
    noise = RowNoise(torch.Generator().manual_seed(1), CPU, look_ahead=2)
    noise.like(torch.zeros(1, 4, 8, 8))
    with pytest.raises(RuntimeError, match="made ahead"):
        noise.like(torch.zeros(1, 4, 4, 4))


class GeneratorDraws(TorchFunctionMode):
    """Counts torch.randn calls that draw from `generator`, whoever makes them."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator
        self.draws = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.randn and kwargs.get("generator") is self.generator:
            self.draws += 1
        return func(*args, **kwargs)


def sampler_cases() -> list[tuple[Sampler, float | None]]:
    return [(sampler, None) for sampler in Sampler] + [
        (sampler, 0.5) for sampler in sorted(SAMPLERS_WITH_ETA)
    ]


@pytest.mark.parametrize(("sampler", "eta"), sampler_cases())
def test_every_sampler_draws_its_step_noise_through_the_rows_noise_source(
    sampler: Sampler, eta: float | None
) -> None:
    """The table's `step_noise` matches what each scheduler does, and every draw from the row's generator
    during a run is one of the noise source's draws made ahead: none is made and copied step by step."""
    config = dict(make_scheduler(Sampler.EULER, {}).config)
    generator = torch.Generator().manual_seed(2)
    plan: Any = plan_sampling(sampler, config, 12, (0, 12), generator, CPU, eta=eta, noise_look_ahead=5)
    counted = GeneratorDraws(generator)
    with counted:
        run_with(plan, lambda model_input, timestep: torch.sin(model_input), torch.randn(1, 4, 8, 8))
    assert (counted.draws > 0) == draws_step_noise(sampler, eta)
    assert counted.draws == 5 * plan.noise.copies
    assert plan.noise.copies <= 3, "at most one draw a step: 12 steps, 5 ahead"


def test_a_window_shorter_than_the_look_ahead_draws_no_more_than_its_steps() -> None:
    config = dict(make_scheduler(Sampler.EULER, {}).config)
    plan: Any = plan_sampling(Sampler.EULER_ANCESTRAL, config, 10, (7, 10), torch.Generator(), CPU)
    assert plan.noise.look_ahead == 3


def test_the_samplers_that_draw_are_the_ancestral_and_stochastic_ones() -> None:
    assert {sampler for sampler in Sampler if draws_step_noise(sampler)} == {
        Sampler.DDPM,
        Sampler.DPMPP_2S_ANCESTRAL,
        Sampler.DPM_2_ANCESTRAL,
        Sampler.EULER_ANCESTRAL,
    }
    assert draws_step_noise(Sampler.DDIM, 0.5) and not draws_step_noise(Sampler.DDIM, 0.0)


@pytest.mark.parametrize(("sampler", "eta"), [case for case in sampler_cases() if draws_step_noise(*case)])
def test_a_seed_makes_the_same_image_with_draws_made_ahead_as_with_one_draw_per_step(
    engine: Engine, source: Image.Image, monkeypatch: pytest.MonkeyPatch, sampler: Sampler, eta: float | None
) -> None:
    """Byte for byte, text-to-image and image-to-image side by side: a look-ahead of 1 draws each step's
    noise at that step, as the engine did before the noise source; 20 steps cross a look-ahead boundary."""
    assert NOISE_LOOK_AHEAD < 20
    requests = [
        generation_request(seed=3, steps=20, sampler=sampler, eta=eta),
        generation_request(seed=4, steps=20, sampler=sampler, eta=eta, init_image=source, denoise_from=0.7),
    ]
    ahead = [np.asarray(result.image) for result in engine.generate(requests)]
    monkeypatch.setattr(pipeline, "NOISE_LOOK_AHEAD", 1)
    one_per_step = [np.asarray(result.image) for result in engine.generate(requests)]
    assert all(np.array_equal(a, b) for a, b in zip(ahead, one_per_step, strict=True))
