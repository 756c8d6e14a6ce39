"""Sampler names -> the algorithm, and one request's run of that algorithm over its window of the noise
schedule, as a coroutine.

One table: each sampler is a diffusers scheduler made `from_config` of the model's own scheduler config (so
beta schedule and timestep spacing stay the model's) with only the overrides that select the algorithm, or,
where diffusers has no such scheduler, one of our k-diffusion-style samplers (engine/k_samplers.py) walking
the sigmas of the model's Euler schedule.

Each request gets its own scheduler instance (its own timesteps, begin index and multistep history) and
its own generator. Its run is a generator (`SamplingPlan.run`): it yields `ModelCall(model_input, timestep,
step)` and is sent the (guided) noise prediction back; after each of the request's steps it yields
`StepEnd(index, latents, denoised)` and is sent the latents to go on from. The engine can so gather the
model calls of many requests, each at its own point of its own sampler (a second-order sampler's second
call beside another's first), into one UNet call, and act between steps (mask blending, progress). A step
is a step of the user's `steps`: a second-order scheduler (Heun, DPM2) calls the model twice in it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

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

from sdxl_bedrock.engine.k_samplers import Denoise, KSampler, KSamplerRun, dpmpp_2s_ancestral
from sdxl_bedrock.engine.noise import NOISE_LOOK_AHEAD, RowNoise
from sdxl_bedrock.schema import Sampler, SigmaSchedule


@dataclass(frozen=True)
class SamplerSpec:
    # The diffusers scheduler that implements the algorithm or, with `k_sampler`, supplies its schedule.
    scheduler_class: type[Any]  # (diffusers' lazy imports defeat precise types)
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: str = ""
    k_sampler: KSampler | None = None
    # Its steps draw fresh noise (engine/noise.py serves it); `eta_noise`: only with an eta above 0.
    step_noise: bool = False
    eta_noise: bool = False


SAMPLERS: dict[Sampler, SamplerSpec] = {
    Sampler.DDIM: SamplerSpec(
        DDIMScheduler, paper="Song et al. 2020, Denoising Diffusion Implicit Models", eta_noise=True
    ),
    Sampler.DDPM: SamplerSpec(
        DDPMScheduler, paper="Ho et al. 2020, Denoising Diffusion Probabilistic Models", step_noise=True
    ),
    Sampler.DPMPP_2M: SamplerSpec(
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        paper="Lu et al. 2022, DPM-Solver++ (2M)",
    ),
    Sampler.DPMPP_2S_ANCESTRAL: SamplerSpec(
        EulerDiscreteScheduler,
        paper="Lu et al. 2022, DPM-Solver++ (2S), ancestral",
        k_sampler=dpmpp_2s_ancestral,
        step_noise=True,
    ),
    Sampler.DPM_2: SamplerSpec(KDPM2DiscreteScheduler, paper="Karras et al. 2022, DPM-Solver-2 variant"),
    Sampler.DPM_2_ANCESTRAL: SamplerSpec(
        KDPM2AncestralDiscreteScheduler, paper="Karras et al. 2022, DPM-Solver-2, ancestral", step_noise=True
    ),
    Sampler.EULER: SamplerSpec(EulerDiscreteScheduler, paper="Karras et al. 2022, Algorithm 2 (Euler)"),
    Sampler.EULER_ANCESTRAL: SamplerSpec(
        EulerAncestralDiscreteScheduler,
        paper="Ho et al. 2020 / Karras et al. 2022, Euler ancestral",
        step_noise=True,
    ),
    Sampler.HEUN: SamplerSpec(HeunDiscreteScheduler, paper="Karras et al. 2022, Algorithm 2 (Heun)"),
    Sampler.LMS: SamplerSpec(LMSDiscreteScheduler, paper="Karras et al. 2022, linear multistep"),
}


def make_scheduler(
    sampler: Sampler,
    model_scheduler_config: dict[str, Any],
    sigma_schedule: SigmaSchedule = SigmaSchedule.DEFAULT,
) -> Any:
    """The sampler's scheduler from the model's config; KARRAS adds `use_karras_sigmas`, or raises
    ValueError where the scheduler has no such option."""
    spec = SAMPLERS[sampler]
    overrides = dict(spec.overrides)
    if sigma_schedule is SigmaSchedule.KARRAS:
        if not takes_karras_sigmas(sampler):
            raise ValueError(f"the {sampler} sampler's scheduler has no Karras sigma schedule")
        overrides["use_karras_sigmas"] = True
    with diffusers_numpy_warnings_silenced():
        return spec.scheduler_class.from_config(model_scheduler_config, **overrides)


def takes_karras_sigmas(sampler: Sampler) -> bool:
    return "use_karras_sigmas" in inspect.signature(SAMPLERS[sampler].scheduler_class.__init__).parameters


def draws_step_noise(sampler: Sampler, eta: float | None = None) -> bool:
    """Whether the sampler's steps draw fresh noise, with this eta (None: its default)."""
    spec = SAMPLERS[sampler]
    return spec.step_noise or (spec.eta_noise and eta is not None and eta > 0)


def takes_eta(sampler: Sampler) -> bool:
    spec = SAMPLERS[sampler]
    if spec.k_sampler is not None:
        return "eta" in inspect.signature(spec.k_sampler).parameters
    return "eta" in inspect.signature(spec.scheduler_class.step).parameters


@contextlib.contextmanager
def diffusers_numpy_warnings_silenced() -> Iterator[None]:
    """diffusers' DPM2 schedulers hand torch tensors to numpy in `set_timesteps`, which NumPy 2 deprecates
    (`__array_wrap__`); the warning is theirs to fix and says nothing about our use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array_wrap__", DeprecationWarning)
        yield


# -- one request's run over its window -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCall:
    """A run waits for the noise prediction of its (scheduler-scaled) `model_input` [1, C, h, w] at
    `timestep` (a 0-dim float32 tensor on the model's device), during step `step` of its window."""

    model_input: torch.Tensor
    timestep: torch.Tensor
    step: int


@dataclass(frozen=True)
class StepEnd:
    """Step `index` of the window is done: `latents` where it landed, `denoised` the model's estimate of the
    clean latents at its last model call. Send back the latents to go on from."""

    index: int
    latents: torch.Tensor
    denoised: torch.Tensor


SamplerRun = Generator[ModelCall | StepEnd, torch.Tensor, torch.Tensor]
"""A request's run: yields ModelCall (send the noise prediction) and StepEnd (send the latents); returns the
latents at the end of the window, or, where the window stops short of a clean image, the model's clean
estimate at its last step."""


class SamplingPlan(Protocol):
    steps: int
    init_noise_sigma: float
    ends_clean: bool  # the window runs to the schedule's end, so the last latents are a clean image

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """`clean` latents noised to the level of step `index`'s input (`index == steps`: the window's end).

        Call it for `index` 0 before the run and for `index + 1` at StepEnd `index`: diffusers'
        index-keeping schedulers read their own position rather than the timestep."""
        ...

    def run(self, latents: torch.Tensor) -> SamplerRun: ...


def plan_sampling(
    sampler: Sampler,
    model_scheduler_config: dict[str, Any],
    steps: int,
    window: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    sigma_schedule: SigmaSchedule = SigmaSchedule.DEFAULT,
    eta: float | None = None,
    noise_look_ahead: int = NOISE_LOOK_AHEAD,
) -> SamplingPlan:
    """The run of `sampler` over steps [first, last) of a `steps`-step schedule, for one request (batch row)
    whose random draws come from `generator`; `sigma_schedule` spaces its noise levels and `eta` (None: the
    sampler's default) scales the fresh noise of a sampler that takes it. `window` is the request's
    (strength.window_steps: its strength as diffusers' `get_timesteps` counts it). Step noise is drawn
    `noise_look_ahead` draws at a time (engine/noise.py; 1 where something else draws from `generator`
    during the run).

    Raises ValueError for a schedule or an eta the sampler does not take."""
    if eta is not None and not takes_eta(sampler):
        raise ValueError(f"the {sampler} sampler takes no eta")
    scheduler = make_scheduler(sampler, model_scheduler_config, sigma_schedule)
    with diffusers_numpy_warnings_silenced():
        # The schedule stays on the host, where schedulers read its values (DDIM indexes by timestep);
        # a device copy feeds the model, so no step reads a value back from the device.
        scheduler.set_timesteps(steps, device="cpu")
    first, last = window
    # Never more draws ahead than the window has steps (the samplers draw at most once a step).
    noise = RowNoise(generator, device, max(1, min(noise_look_ahead, last - first)))
    k_sampler = SAMPLERS[sampler].k_sampler
    if k_sampler is not None:
        if eta is not None:
            # takes_eta made sure this k-sampler has the parameter, which the KSampler protocol leaves out.
            k_sampler = functools.partial(cast(Callable[..., KSamplerRun], k_sampler), eta=eta)
        return KDiffusionPlan(k_sampler, scheduler, window, noise, device)
    plan = SchedulerPlan(scheduler, window, noise, device, draws_step_noise(sampler, eta))
    if eta is not None:
        plan.step_kwargs["eta"] = eta
    return plan


class SchedulerPlan:
    """A diffusers scheduler over a window; `scheduler.order` model calls (timesteps) per step. Where its
    steps draw noise (`step_noise`), `noise` serves the draws it makes from `noise.generator`."""

    def __init__(
        self,
        scheduler: Any,
        window: tuple[int, int],
        noise: RowNoise,
        device: torch.device,
        step_noise: bool = False,
    ) -> None:
        first, last = window
        self.scheduler = scheduler
        self.noise = noise
        self.step_noise = step_noise
        self.order = int(scheduler.order)
        self.steps = last - first
        # The whole schedule from the window's start: its tail past the window gives the end's noise level.
        self.timesteps = scheduler.timesteps[first * self.order :]
        self.calls = len(self.timesteps[: self.steps * self.order])
        self.model_timesteps = self.timesteps[: self.calls].to(torch.float32).to(device)
        self.ends_clean = last * self.order >= len(scheduler.timesteps)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first * self.order)
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        self.step_kwargs: dict[str, Any] = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            self.step_kwargs["generator"] = noise.generator

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        if index == self.steps and self.ends_clean:
            return clean
        timestep = self.timesteps[index * self.order]
        noisy: torch.Tensor = self.scheduler.add_noise(clean, noise, timestep.repeat(clean.shape[0]))
        return noisy

    def run(self, latents: torch.Tensor) -> SamplerRun:
        denoised = latents
        for call in range(self.calls):
            timestep, step = self.timesteps[call], call // self.order
            noise = yield ModelCall(
                self.scheduler.scale_model_input(latents, timestep), self.model_timesteps[call], step
            )
            with self.noise.serving_diffusers() if self.step_noise else contextlib.nullcontext():
                output = self.scheduler.step(noise, timestep, latents, **self.step_kwargs)
            latents, denoised = output.prev_sample, clean_estimate(self.scheduler, output)
            if (call + 1) % self.order == 0 or call + 1 == self.calls:
                latents = yield StepEnd(step, latents, denoised)
        return latents if self.ends_clean else denoised


def clean_estimate(scheduler: Any, output: Any) -> torch.Tensor:
    """The x0 prediction of the step just taken. DPM-Solver keeps it as its model output rather than
    returning it."""
    estimate = getattr(output, "pred_original_sample", None)
    if estimate is None:
        estimate = scheduler.model_outputs[-1]
    assert estimate is not None, f"{type(scheduler).__name__} gives no clean-image estimate"
    return estimate


class KDiffusionPlan:
    """A k-diffusion-style sampler over the sigmas of a diffusers (Euler) schedule.

    The model is wrapped as k-diffusion's `DiscreteEpsDDPMDenoiser` / `DiscreteVDDPMDenoiser` does it: input
    scaled by 1/sqrt(sigma^2 + 1), the fractional training timestep of sigma, the noise prediction turned
    into a denoised estimate.
    """

    def __init__(
        self,
        k_sampler: KSampler,
        scheduler: Any,
        window: tuple[int, int],
        noise: RowNoise,
        device: torch.device,
    ) -> None:
        first, last = window
        self.k_sampler = k_sampler
        self.noise = noise
        self.device = device
        self.steps = last - first
        self.sigmas = scheduler.sigmas[first : last + 1].to(torch.float32)
        self.ends_clean = bool(self.sigmas[-1] == 0)
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction type {self.prediction_type!r} is not supported by k-samplers")
        self.log_sigmas = training_sigmas(scheduler.alphas_cumprod).log()

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        return clean + noise * self.sigmas[index].to(clean.dtype)

    def run(self, latents: torch.Tensor) -> SamplerRun:
        k_run = self.k_sampler(latents, self.sigmas, self.noise.like)
        answer: torch.Tensor | None = None
        try:
            while True:
                event = k_run.send(answer) if answer is not None else next(k_run)
                if isinstance(event, Denoise):
                    answer = yield from self.denoise(event)
                else:
                    answer = yield StepEnd(event.index, event.x, event.denoised)
        except StopIteration as finished:
            result: torch.Tensor = finished.value
            return result

    def denoise(self, request: Denoise) -> Generator[ModelCall, torch.Tensor, torch.Tensor]:
        """The denoised estimate the k-sampler asks for, through one model call."""
        x = request.x
        level = torch.tensor(request.sigma, dtype=torch.float32)
        # From pageable host memory without waiting for the device's queued work.
        timestep = sigma_to_timestep(level, self.log_sigmas).to(self.device, non_blocking=True)
        scale_in = (level**2 + 1) ** -0.5
        output = yield ModelCall(x * scale_in.to(x.dtype), timestep, request.step)
        if self.prediction_type == "epsilon":
            return x - output * level.to(x.dtype)
        return (x * scale_in**2 - output * level * scale_in).to(x.dtype)


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
