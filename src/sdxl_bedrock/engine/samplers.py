"""Sampler names -> the algorithm, and a run of that algorithm over a window of the noise schedule.

One table: each sampler is a diffusers scheduler made `from_config` of the model's own scheduler config (so
beta schedule and timestep spacing stay the model's) with only the overrides that select the algorithm, or,
where diffusers has no such scheduler, one of our k-diffusion-style functions (engine/k_samplers.py) walking
the sigmas of the model's Euler schedule.

The Engine's loop sees either through one small interface, `SamplingRun`: a number of steps, the noise
level to start from, and `step(predict_noise, x, index) -> (x, denoised)`. A step is a step of the
user's `steps`: a second-order scheduler (Heun, DPM2) calls the model twice in it.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
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

from sdxl_bedrock.engine.k_samplers import KSampler, StepInfo, sample_dpmpp_2s_ancestral
from sdxl_bedrock.schema import Sampler

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`predict_noise(model_input, timestep) -> noise`: the guided UNet, for scheduler-scaled latents."""


@dataclass(frozen=True)
class SamplerSpec:
    # The diffusers scheduler that implements the algorithm or, with `k_sampler`, supplies its schedule.
    scheduler_class: type[Any]  # (diffusers' lazy imports defeat precise types)
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: str = ""
    k_sampler: KSampler | None = None


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
    Sampler.K_DPMPP_2S_ANCESTRAL: SamplerSpec(
        EulerDiscreteScheduler,
        paper="Lu et al. 2022, DPM-Solver++ (2S), ancestral",
        k_sampler=sample_dpmpp_2s_ancestral,
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


def make_scheduler(sampler: Sampler, model_scheduler_config: dict[str, Any]) -> Any:
    spec = SAMPLERS[sampler]
    with diffusers_numpy_warnings_silenced():
        return spec.scheduler_class.from_config(model_scheduler_config, **spec.overrides)


@contextlib.contextmanager
def diffusers_numpy_warnings_silenced() -> Iterator[None]:
    """diffusers' DPM2 schedulers hand torch tensors to numpy in `set_timesteps`, which NumPy 2 deprecates
    (`__array_wrap__`); the warning is theirs to fix and says nothing about our use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array_wrap__", DeprecationWarning)
        yield


def denoising_window(steps: int, denoise_from: float, denoise_to: float) -> tuple[int, int]:
    """Indices [first, last) of a `steps`-step schedule run by a window from `denoise_from` to `denoise_to`.

    `denoise_from` = 1 - image_strength. The start matches diffusers' `get_timesteps` for `strength`.
    """
    first = steps - min(int(steps * denoise_from), steps)
    last = steps - min(int(steps * denoise_to), steps)
    return first, max(last, first)


# -- a run over the window, as the Engine's loop sees it ----------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    latents: torch.Tensor
    denoised: torch.Tensor
    """The model's estimate of the clean latents at this step's last model call."""


class SamplingRun(Protocol):
    steps: int
    init_noise_sigma: float
    ends_clean: bool  # the window runs to the schedule's end, so the last latents are a clean image

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """`clean` latents noised to the level of step `index`'s input (`index == steps`: the window's end).

        Call it for `index` 0 before the first step and for `index + 1` right after step `index`: diffusers'
        index-keeping schedulers read their own position rather than the timestep."""
        ...

    def step(self, predict_noise: NoisePredictor, latents: torch.Tensor, index: int) -> StepResult: ...


def start_sampling(
    sampler: Sampler,
    model_scheduler_config: dict[str, Any],
    steps: int,
    window: tuple[int, int],
    generators: Sequence[torch.Generator],
    device: torch.device,
) -> SamplingRun:
    """The run of `sampler` over steps [first, last) of a `steps`-step schedule, one generator per row."""
    scheduler = make_scheduler(sampler, model_scheduler_config)
    with diffusers_numpy_warnings_silenced():
        # The schedule stays on the host, where schedulers read its values (DDIM indexes by timestep);
        # a device copy feeds the model, so no step reads a value back from the device.
        scheduler.set_timesteps(steps, device="cpu")
    k_sampler = SAMPLERS[sampler].k_sampler
    if k_sampler is not None:
        return KDiffusionRun(k_sampler, scheduler, window, generators)
    return SchedulerRun(scheduler, window, generators, device)


class SchedulerRun:
    """A diffusers scheduler over a window; `scheduler.order` model calls (timesteps) per step."""

    def __init__(
        self,
        scheduler: Any,
        window: tuple[int, int],
        generators: Sequence[torch.Generator],
        device: torch.device,
    ) -> None:
        first, last = window
        self.scheduler = scheduler
        self.order = int(scheduler.order)
        self.steps = last - first
        # The whole schedule from the window's start: its tail past the window gives the end's noise level.
        self.timesteps = scheduler.timesteps[first * self.order :]
        self.model_timesteps = self.timesteps.to(device)
        self.ends_clean = last * self.order >= len(scheduler.timesteps)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first * self.order)
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        self.step_kwargs: dict[str, Any] = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            # diffusers' randn_tensor draws row i from generators[i] when the list matches the batch.
            self.step_kwargs["generator"] = list(generators) if len(generators) > 1 else generators[0]

    def timesteps_of_step(self, index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(scheduler timestep, the same on the model's device) for each model call of step `index`."""
        calls = slice(index * self.order, (index + 1) * self.order)
        return zip(self.timesteps[calls], self.model_timesteps[calls], strict=True)

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        if index == self.steps and self.ends_clean:
            return clean
        timestep = self.timesteps[index * self.order]
        noisy: torch.Tensor = self.scheduler.add_noise(clean, noise, timestep.repeat(clean.shape[0]))
        return noisy

    def step(self, predict_noise: NoisePredictor, latents: torch.Tensor, index: int) -> StepResult:
        denoised = latents
        for timestep, model_timestep in self.timesteps_of_step(index):
            noise = predict_noise(self.scheduler.scale_model_input(latents, timestep), model_timestep)
            output = self.scheduler.step(noise, timestep, latents, **self.step_kwargs)
            latents = output.prev_sample
            denoised = clean_estimate(self.scheduler, output)
        return StepResult(latents, denoised)


def clean_estimate(scheduler: Any, output: Any) -> torch.Tensor:
    """The x0 prediction of the step just taken. DPM-Solver keeps it as its model output rather than
    returning it."""
    estimate = getattr(output, "pred_original_sample", None)
    if estimate is None:
        estimate = scheduler.model_outputs[-1]
    assert estimate is not None, f"{type(scheduler).__name__} gives no clean-image estimate"
    return estimate


class KDiffusionRun:
    """A k-diffusion-style sampler function over the sigmas of a diffusers (Euler) schedule.

    The function runs one step at a time (`sigmas[i:i + 2]`), so the loop can act between steps; that
    equals one call over all sigmas for the singlestep samplers used here, which keep no state across steps.
    The model is wrapped as k-diffusion's `DiscreteEpsDDPMDenoiser` / `DiscreteVDDPMDenoiser` does it.
    """

    def __init__(
        self,
        k_sampler: KSampler,
        scheduler: Any,
        window: tuple[int, int],
        generators: Sequence[torch.Generator],
    ) -> None:
        first, last = window
        self.k_sampler = k_sampler
        self.generators = list(generators)
        self.steps = last - first
        self.sigmas = scheduler.sigmas[first : last + 1].to(torch.float32)
        self.ends_clean = bool(self.sigmas[-1] == 0)
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        self.prediction_type = scheduler.config.prediction_type
        self.log_sigmas = training_sigmas(scheduler.alphas_cumprod).log()

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        return clean + noise * self.sigmas[index].to(clean.dtype)

    def step(self, predict_noise: NoisePredictor, latents: torch.Tensor, index: int) -> StepResult:
        seen: StepInfo = {}
        latents = self.k_sampler(
            self.denoiser(predict_noise),
            latents,
            self.sigmas[index : index + 2],
            callback=seen.update,
            generators=self.generators,
        )
        return StepResult(latents, seen["denoised"])

    def denoiser(self, predict_noise: NoisePredictor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            level = sigma[0].to("cpu", torch.float32)
            # From pageable host memory without waiting for the device's queued work.
            timestep = sigma_to_timestep(level, self.log_sigmas).to(x.device, non_blocking=True)
            scale_in = (level**2 + 1) ** -0.5
            output = predict_noise(x * scale_in.to(x.dtype), timestep)
            if self.prediction_type == "epsilon":
                return x - output * level.to(x.dtype)
            if self.prediction_type == "v_prediction":
                return (x * scale_in**2 - output * level * scale_in).to(x.dtype)
            raise ValueError(f"prediction type {self.prediction_type!r} is not supported by k-samplers")

        return model


# -- noise levels and timesteps (pure) ----------------------------------------------------------------------


def training_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) of each training timestep."""
    alphas_cumprod = alphas_cumprod.to(torch.float32)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def sigma_to_timestep(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """The (fractional) training timestep of noise level `sigma`: linear interpolation in log sigma, as
    k-diffusion's `sigma_to_t` and diffusers' `_sigma_to_t` do."""
    log_sigma = sigma.clamp(min=1e-10).log()
    low = int((log_sigma >= log_sigmas).sum().clamp(1, len(log_sigmas) - 1)) - 1
    low_value, high_value = log_sigmas[low], log_sigmas[low + 1]
    weight = ((low_value - log_sigma) / (low_value - high_value)).clamp(0, 1)
    return (1 - weight) * low + weight * (low + 1)


def timestep_to_sigma(timestep: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """The inverse of `sigma_to_timestep`: the noise level at a (fractional) training timestep."""
    position = timestep.to("cpu", torch.float32).clamp(0, len(log_sigmas) - 1)
    low = int(position.floor().clamp(max=len(log_sigmas) - 2))
    weight = position - low
    return ((1 - weight) * log_sigmas[low] + weight * log_sigmas[low + 1]).exp()
