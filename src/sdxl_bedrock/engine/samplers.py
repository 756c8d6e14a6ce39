"""Sampler names -> the diffusers scheduler that implements that algorithm.

Each scheduler is made `from_config` of the model's own scheduler config (so beta schedule and timestep
spacing stay the model's) with only the overrides that select the algorithm. One table, one entry each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from sdxl_bedrock.schema import Sampler


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: type[Any]  # a diffusers scheduler class (their lazy imports defeat precise types)
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: str = ""


SAMPLERS: dict[Sampler, SamplerSpec] = {
    Sampler.DDIM: SamplerSpec(DDIMScheduler, paper="Song et al. 2020, Denoising Diffusion Implicit Models"),
    Sampler.DDPM: SamplerSpec(
        DDPMScheduler, paper="Ho et al. 2020, Denoising Diffusion Probabilistic Models"
    ),
    Sampler.K_DPMPP_2M: SamplerSpec(
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        paper="Lu et al. 2022, DPM-Solver++ (2M)",
    ),
    Sampler.K_DPM_2: SamplerSpec(KDPM2DiscreteScheduler, paper="Karras et al. 2022, DPM-Solver-2 variant"),
    Sampler.K_DPM_2_ANCESTRAL: SamplerSpec(
        KDPM2AncestralDiscreteScheduler, paper="Karras et al. 2022, DPM-Solver-2, ancestral"
    ),
    Sampler.K_EULER: SamplerSpec(EulerDiscreteScheduler, paper="Karras et al. 2022, Algorithm 2 (Euler)"),
    Sampler.K_EULER_ANCESTRAL: SamplerSpec(
        EulerAncestralDiscreteScheduler, paper="Ho et al. 2020 / Karras et al. 2022, Euler ancestral"
    ),
    Sampler.K_HEUN: SamplerSpec(HeunDiscreteScheduler, paper="Karras et al. 2022, Algorithm 2 (Heun)"),
    Sampler.K_LMS: SamplerSpec(LMSDiscreteScheduler, paper="Karras et al. 2022, linear multistep"),
}


def served_samplers() -> frozenset[Sampler]:
    return frozenset(SAMPLERS)


def make_scheduler(sampler: Sampler, model_scheduler_config: dict[str, Any]) -> SchedulerMixin:
    spec = SAMPLERS[sampler]
    scheduler: SchedulerMixin = spec.scheduler_class.from_config(model_scheduler_config, **spec.overrides)
    return scheduler
