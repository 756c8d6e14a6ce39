"""Image strength's one home against diffusers' own `StableDiffusionXLImg2ImgPipeline.get_timesteps`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

from sdxl_bedrock.engine.samplers import SchedulerPlan, plan_sampling
from sdxl_bedrock.engine.sdxl_base_config import load_sdxl_base_component_config
from sdxl_bedrock.schema import Sampler
from sdxl_bedrock.strength import FULL_SCHEDULE, first_step, from_image_strength, from_strength, window_steps

SCHEDULER_CONFIG = load_sdxl_base_component_config("scheduler")
# Every hundredth, and strengths whose product with a step count lands just below an integer in floating
# point (100 * 0.29 is 28.999...), where `int` truncation, not rounding, decides.
STRENGTHS = sorted({*(i / 100 for i in range(101)), 0.29, 0.57, 1 - 0.35, 1 - 0.7, 0.1 + 0.2})


def diffusers_timesteps(scheduler: Any, steps: int, strength: float) -> tuple[torch.Tensor, int]:
    """diffusers' `get_timesteps` itself, on a pipeline that has only the scheduler it reads."""
    pipeline = SimpleNamespace(scheduler=scheduler)
    timesteps, count = StableDiffusionXLImg2ImgPipeline.get_timesteps(pipeline, steps, strength, "cpu")
    return timesteps, int(count)


@pytest.mark.parametrize("scheduler_class", [EulerDiscreteScheduler, HeunDiscreteScheduler])
def test_a_window_from_a_strength_starts_and_counts_as_get_timesteps(scheduler_class: Any) -> None:
    scheduler = scheduler_class.from_config(SCHEDULER_CONFIG)
    for steps in range(1, 61):
        scheduler.set_timesteps(steps)
        for strength in STRENGTHS:
            timesteps, count = diffusers_timesteps(scheduler, steps, strength)
            first, last = window_steps(steps, *from_strength(strength))
            assert (first, last - first) == (steps - count, count), (steps, strength)
            assert torch.equal(scheduler.timesteps[first * scheduler.order :], timesteps), (steps, strength)


def test_a_window_ends_where_a_run_at_its_end_strength_would_start() -> None:
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    for steps in range(1, 61):
        scheduler.set_timesteps(steps)
        for denoise_from in STRENGTHS:
            for denoise_to in STRENGTHS[::5]:
                first, last = window_steps(steps, denoise_from, denoise_to)
                start_at_end = steps - diffusers_timesteps(scheduler, steps, denoise_to)[1]
                assert first == first_step(steps, denoise_from)
                # A window whose end comes before its start (fewer steps than one) runs nothing.
                assert last == max(start_at_end, first), (steps, denoise_from, denoise_to)


def test_image_strength_keeps_the_share_of_the_source_that_diffusers_strength_runs() -> None:
    assert from_image_strength(0.35) == from_strength(1 - 0.35) == (0.65, 0.0)
    assert from_image_strength(1.0) == (0.0, 0.0)  # keeps the source: no step
    assert from_strength(1.0) == FULL_SCHEDULE == (1.0, 0.0)
    assert window_steps(20, *from_image_strength(0.35)) == (7, 20)  # docs/API.md's 13 of 20 steps
    assert window_steps(20, *from_image_strength(1.0)) == (20, 20)


@pytest.mark.parametrize(
    "sampler", [Sampler.EULER, Sampler.HEUN, Sampler.DPMPP_2M, Sampler.DDIM, Sampler.EULER_ANCESTRAL]
)
def test_the_engines_run_takes_the_timesteps_get_timesteps_gives(sampler: Sampler) -> None:
    for steps in (1, 2, 3, 7, 10, 20, 30, 50):
        for strength in STRENGTHS[::10]:
            plan = plan_sampling(
                sampler,
                SCHEDULER_CONFIG,
                steps,
                window_steps(steps, *from_strength(strength)),
                torch.Generator().manual_seed(0),
                torch.device("cpu"),
            )
            assert isinstance(plan, SchedulerPlan)
            expected, count = diffusers_timesteps(plan.scheduler, steps, strength)
            assert plan.steps == count, (steps, strength)
            assert torch.equal(plan.timesteps, expected), (steps, strength)
