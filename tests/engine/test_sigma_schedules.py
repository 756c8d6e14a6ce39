"""Karras sigmas and eta: real changes of the sampler's run, refused where the sampler cannot take them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.samplers import plan_sampling, takes_eta, takes_karras_sigmas
from sdxl_bedrock.schema import SAMPLERS_WITH_ETA, SAMPLERS_WITH_KARRAS_SIGMAS, Sampler, SigmaSchedule
from tests.engine.conftest import as_array, generation_request

RHO = 7.0


def plan(
    engine: Engine, sampler: Sampler, schedule: SigmaSchedule, steps: int = 8, eta: float | None = None
) -> Any:
    generator = torch.Generator("cpu").manual_seed(1)
    return plan_sampling(
        sampler, engine.scheduler_config, steps, (0, steps), generator, engine.device, schedule, eta
    )


def test_the_torch_free_tables_match_the_schedulers() -> None:
    assert {sampler for sampler in Sampler if takes_karras_sigmas(sampler)} == SAMPLERS_WITH_KARRAS_SIGMAS
    assert {sampler for sampler in Sampler if takes_eta(sampler)} == SAMPLERS_WITH_ETA


def test_karras_sigmas_are_karras_et_al_2022_between_the_schedules_extremes(engine: Engine) -> None:
    """Karras et al. 2022, eq. (5): sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho, between
    the highest and lowest sigma of the scheduler's own schedule (diffusers' rule: with SDXL's "leading"
    spacing that is not the model's full range, which A1111's k-diffusion spans)."""
    steps = 8
    sigmas = plan(engine, Sampler.EULER, SigmaSchedule.KARRAS, steps).scheduler.sigmas[:-1].double()
    default = plan(engine, Sampler.EULER, SigmaSchedule.DEFAULT, steps).scheduler.sigmas[:-1].double()
    low, high = default.min() ** (1 / RHO), default.max() ** (1 / RHO)
    expected = (high + torch.linspace(0, 1, steps, dtype=torch.float64) * (low - high)) ** RHO
    assert torch.allclose(sigmas, expected, rtol=1e-4)
    assert not torch.allclose(sigmas, default, rtol=1e-2)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS_WITH_KARRAS_SIGMAS))
def test_every_karras_sampler_makes_another_image(engine: Engine, sampler: Sampler) -> None:
    default, karras = engine.generate(
        [
            generation_request(sampler=sampler, steps=6),
            generation_request(sampler=sampler, steps=6, sigma_schedule=SigmaSchedule.KARRAS),
        ]
    )
    assert np.abs(as_array(default.image) - as_array(karras.image)).max() > 1


@pytest.mark.parametrize("sampler", sorted(set(Sampler) - SAMPLERS_WITH_KARRAS_SIGMAS))
def test_karras_is_refused_where_the_scheduler_has_none(engine: Engine, sampler: Sampler) -> None:
    with pytest.raises(ValueError, match="Karras"):
        plan(engine, sampler, SigmaSchedule.KARRAS)


def test_karras_with_an_image_to_image_window_and_a_mask_runs(engine: Engine, source: Image.Image) -> None:
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (16, 16, 48, 48))
    (result,) = engine.generate(
        [
            generation_request(
                sampler=Sampler.DPMPP_2M,
                sigma_schedule=SigmaSchedule.KARRAS,
                init_image=source,
                mask=mask,
                denoise_from=0.6,
            )
        ]
    )
    assert result.image.size == source.size


def test_ddim_eta_adds_noise_and_eta_0_is_its_default(engine: Engine) -> None:
    default, zero, one = engine.generate(
        [
            generation_request(sampler=Sampler.DDIM, steps=6),
            generation_request(sampler=Sampler.DDIM, steps=6, eta=0.0),
            generation_request(sampler=Sampler.DDIM, steps=6, eta=1.0),
        ]
    )
    assert np.abs(as_array(default.image) - as_array(zero.image)).max() <= 1
    assert np.abs(as_array(default.image) - as_array(one.image)).max() > 1


def test_dpmpp_2s_ancestral_eta_scales_its_ancestral_noise(engine: Engine) -> None:
    default, one, zero = engine.generate(
        [
            generation_request(sampler=Sampler.DPMPP_2S_ANCESTRAL, steps=6),
            generation_request(sampler=Sampler.DPMPP_2S_ANCESTRAL, steps=6, eta=1.0),
            generation_request(sampler=Sampler.DPMPP_2S_ANCESTRAL, steps=6, eta=0.0),
        ]
    )
    assert np.abs(as_array(default.image) - as_array(one.image)).max() <= 1
    assert np.abs(as_array(default.image) - as_array(zero.image)).max() > 1


@pytest.mark.parametrize("sampler", sorted(set(Sampler) - SAMPLERS_WITH_ETA))
def test_eta_is_refused_where_the_sampler_takes_none(engine: Engine, sampler: Sampler) -> None:
    with pytest.raises(ValueError, match="eta"):
        plan(engine, sampler, SigmaSchedule.DEFAULT, eta=0.5)
