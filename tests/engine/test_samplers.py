"""All ten samplers: diffusers parity for the nine diffusers implements, our DPM-Solver++(2S) ancestral
against an independent implementation, per-request randomness, windows and progress of second-order ones."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from PIL import Image

from sdxl_bedrock.engine.k_samplers import get_ancestral_step, sample_dpmpp_2s_ancestral
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.samplers import (
    SAMPLERS,
    KDiffusionPlan,
    ModelCall,
    SamplingPlan,
    diffusers_numpy_warnings_silenced,
    make_scheduler,
    plan_sampling,
    sigma_to_timestep,
    timestep_to_sigma,
    training_sigmas,
)
from sdxl_bedrock.schema import GenerationRequest, Sampler
from tests.engine.conftest import as_array, generation_request

DIFFUSERS_SAMPLERS = [sampler for sampler, spec in SAMPLERS.items() if spec.k_sampler is None]


def img2img(
    source: Image.Image, sampler: Sampler, prompt: str = "a cat", seed: int = 5, cfg_scale: float = 7.0
) -> GenerationRequest:
    return generation_request(
        prompt, seed=seed, cfg_scale=cfg_scale, sampler=sampler, denoise_from=0.8, init_image=source
    )


def test_the_table_names_all_ten_samplers() -> None:
    assert set(SAMPLERS) == set(Sampler)
    assert [s for s, spec in SAMPLERS.items() if spec.k_sampler is not None] == [Sampler.DPMPP_2S_ANCESTRAL]


@pytest.mark.parametrize("sampler", DIFFUSERS_SAMPLERS)
def test_image_to_image_matches_diffusers_with_its_scheduler(
    engine: Engine, reference_pipe: StableDiffusionXLImg2ImgPipeline, source: Image.Image, sampler: Sampler
) -> None:
    ours = engine.generate([img2img(source, sampler)])[0].image
    reference_pipe.scheduler = make_scheduler(sampler, dict(reference_pipe.scheduler.config))
    with diffusers_numpy_warnings_silenced():
        theirs = reference_pipe(
            prompt="a cat",
            image=source,
            strength=0.8,
            num_inference_steps=10,
            guidance_scale=7.0,
            generator=torch.Generator().manual_seed(5),
        ).images[0]
    assert np.abs(as_array(ours) - as_array(theirs)).max() <= 1


@pytest.mark.parametrize("sampler", list(Sampler))
def test_a_request_gives_the_same_image_alone_and_in_a_batch_of_three(
    engine: Engine, source: Image.Image, sampler: Sampler
) -> None:
    alone = engine.generate([img2img(source, sampler)])[0].image
    batch = engine.generate(
        [
            img2img(source, sampler, "a dog", seed=9, cfg_scale=3.0),
            img2img(source, sampler),
            img2img(source, sampler, "a bird", seed=11, cfg_scale=1.0),
        ]
    )
    assert np.abs(as_array(alone) - as_array(batch[1].image)).max() <= 1
    assert np.abs(as_array(batch[0].image) - as_array(alone)).max() > 1


@pytest.mark.parametrize("sampler", [Sampler.HEUN, Sampler.DPM_2, Sampler.DPM_2_ANCESTRAL, Sampler.EULER])
def test_progress_counts_steps_of_the_window_not_model_calls(
    engine: Engine, source: Image.Image, sampler: Sampler
) -> None:
    seen: list[tuple[int, int]] = []
    request = img2img(source, sampler)  # 10 steps from 0.8: the last 8
    engine.generate([request], [lambda done, total, preview: seen.append((done, total))])
    assert seen == [(done, 8) for done in range(1, 9)]


def run_with(
    plan: SamplingPlan, predict_noise: Any, latents: torch.Tensor, steps_seen: list[int] | None = None
) -> torch.Tensor:
    """A plan's run to its end, each model call answered by `predict_noise(model_input, timestep)`."""
    run = plan.run(latents)
    event = next(run)
    try:
        while True:
            if isinstance(event, ModelCall):
                event = run.send(predict_noise(event.model_input, event.timestep))
            else:
                if steps_seen is not None:
                    steps_seen.append(event.index)
                event = run.send(event.latents)
    except StopIteration as end:
        result: torch.Tensor = end.value
        return result


@pytest.mark.parametrize("sampler", [Sampler.HEUN, Sampler.DPM_2])
def test_a_second_order_window_runs_two_model_calls_per_step(sampler: Sampler) -> None:
    config = dict(make_scheduler(Sampler.EULER, {}).config)
    plan = plan_sampling(sampler, config, 10, (2, 10), torch.Generator(), torch.device("cpu"))
    calls: list[float] = []

    def predict_noise(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        calls.append(float(timestep))
        return torch.zeros_like(model_input)

    steps: list[int] = []
    run_with(plan, predict_noise, torch.zeros(1, 4, 8, 8), steps)
    # 8 steps: two calls each, but the last step (down to sigma 0) is a single Euler call.
    assert plan.steps == 8 and steps == list(range(8))
    assert len(calls) == 2 * 8 - 1


# -- DPM-Solver++(2S) ancestral ----------------------------------------------------------------------------


def toy_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A smooth, nonlinear stand-in for a diffusion model (exact for N(0, 1) data, plus a wobble)."""
    level = sigma.view(-1, *([1] * (x.ndim - 1)))
    return x / (1 + level**2) + 0.1 * torch.sin(3 * x) * level / (1 + level**2)


def reference_dpmpp_2s_ancestral(
    x: torch.Tensor, sigmas: list[float], noises: list[torch.Tensor], eta: float = 1.0
) -> torch.Tensor:
    """The algorithm as the paper writes it, one sample, in float64: the midpoint of [sigma, sigma_down] in
    log-SNR time is their geometric mean, and each update is a convex mix of x and the data prediction."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
        denoised = toy_denoiser(x, torch.tensor([sigma], dtype=x.dtype))
        if sigma_down == 0:
            x = denoised
        else:
            sigma_mid = math.sqrt(sigma * sigma_down)
            ratio = sigma_mid / sigma
            x_mid = ratio * x + (1 - ratio) * denoised
            denoised_mid = toy_denoiser(x_mid, torch.tensor([sigma_mid], dtype=x.dtype))
            ratio = sigma_down / sigma
            x = ratio * x + (1 - ratio) * denoised_mid
        if sigma_next > 0:
            x = x + sigma_up * noises[i]
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpmpp_2s_ancestral_matches_an_independent_implementation(eta: float) -> None:
    sigmas = [14.6, 7.0, 3.1, 1.4, 0.6, 0.2, 0.03, 0.0]
    start = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 14.6
    seeds = (1, 2)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    ours = sample_dpmpp_2s_ancestral(
        toy_denoiser, start, torch.tensor(sigmas, dtype=torch.float64), generators=generators, eta=eta
    )
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(seed)
        noises = [torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in sigmas[:-2]]
        theirs = reference_dpmpp_2s_ancestral(start[row : row + 1], sigmas, noises, eta)
        assert torch.allclose(ours[row : row + 1], theirs, rtol=1e-9, atol=1e-9)


def test_dpmpp_2s_without_noise_solves_the_gaussian_flow_to_second_order() -> None:
    # For N(0, 1) data the probability-flow ODE has x(sigma) proportional to sqrt(1 + sigma^2).
    def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1 + sigma.view(-1, 1) ** 2)

    def error(steps: int) -> float:
        start = torch.ones(1, 1, dtype=torch.float64) * 10.0
        sigmas = torch.logspace(1, -1, steps + 1, dtype=torch.float64)
        end = sample_dpmpp_2s_ancestral(gaussian, start, sigmas, eta=0.0)
        exact = 10.0 * math.sqrt(1 + 0.1**2) / math.sqrt(1 + 10.0**2)
        return abs(float(end) - exact) / exact

    assert error(20) < 0.005
    assert 3.5 < error(10) / error(20) < 4.5, "halving the step should quarter the error"


def test_an_ancestral_step_keeps_the_noise_level() -> None:
    sigma_down, sigma_up = get_ancestral_step(3.0, 1.0)
    assert math.isclose(sigma_down**2 + sigma_up**2, 1.0)
    assert get_ancestral_step(3.0, 1.0, eta=0.0) == (1.0, 0.0)
    assert get_ancestral_step(3.0, 0.0) == (0.0, 0.0)


def test_the_k_sampler_run_is_k_diffusions_call_with_the_model_wrapped_as_an_eps_denoiser() -> None:
    config = dict(make_scheduler(Sampler.EULER, {}).config)
    plan = plan_sampling(
        Sampler.DPMPP_2S_ANCESTRAL, config, 10, (0, 10), torch.Generator().manual_seed(3), torch.device("cpu")
    )
    assert isinstance(plan, KDiffusionPlan)

    def predict_noise(model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return torch.sin(model_input) * (1 + timestep / 1000)

    def eps_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """k-diffusion's DiscreteEpsDDPMDenoiser around `predict_noise`."""
        level = sigma[0].to(torch.float32)
        timestep = sigma_to_timestep(level, plan.log_sigmas)
        return x - predict_noise(x * (level**2 + 1) ** -0.5, timestep) * level

    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * plan.init_noise_sigma
    ours = run_with(plan, predict_noise, start)
    whole = sample_dpmpp_2s_ancestral(
        eps_denoiser, start, plan.sigmas, generators=[torch.Generator().manual_seed(3)]
    )
    assert torch.allclose(ours, whole)


def test_sigma_and_timestep_convert_both_ways() -> None:
    log_sigmas = training_sigmas(make_scheduler(Sampler.EULER, {}).alphas_cumprod).log()
    for timestep in (0.0, 1.0, 250.5, 751.0, 999.0):
        sigma = timestep_to_sigma(torch.tensor(timestep), log_sigmas)
        assert math.isclose(float(sigma_to_timestep(sigma, log_sigmas)), timestep, abs_tol=1e-3)
