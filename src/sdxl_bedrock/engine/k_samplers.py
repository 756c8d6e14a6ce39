"""Samplers that diffusers lacks, written as k-diffusion writes them, but as coroutines that pause at each
model evaluation.

k-diffusion's samplers have one shape, `(model, x, sigmas, extra_args, callback, ...) -> x`, and call
`model(x, sigma)` for the denoised estimate of `x` at noise level `sigma` (the Karras et al. 2022
parameterisation, x = clean + sigma * noise). Here each algorithm is a generator instead: it yields
`Denoise(x, sigma)` and is sent the denoised estimate back, and after each step yields `StepDone` and is
sent the `x` to go on from. That lets the engine batch the evaluations of many requests, each at its own
point of its own run, into one UNet call (continuous batching), and act between steps (mask blending).
`drive` runs one with a model, which gives back k-diffusion's call shape (`sample_dpmpp_2s_ancestral`).

Unlike k-diffusion, a sampler draws its fresh noise from `noise` (engine/noise.py: each row's own draws,
made ahead on its generator), so that a row's result never depends on the rows beside it; the k-diffusion
call shape takes one torch.Generator per batch row instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor

Denoiser = Callable[..., torch.Tensor]
"""`model(x, sigma, **extra_args) -> denoised`, with `sigma` a host (CPU) tensor of one noise level per batch
row: the schedule lives on the host, and a level read back from the GPU would wait for its queued work."""
StepInfo = dict[str, Any]
Noise = Callable[[torch.Tensor], torch.Tensor]
"""`noise(x)`: standard normal noise of `x`'s shape and dtype, on its device."""


@dataclass(frozen=True)
class Denoise:
    """The sampler asks, during step `step`, for the denoised estimate of `x` at noise level `sigma` (a
    host float)."""

    x: torch.Tensor
    sigma: float
    step: int


@dataclass(frozen=True)
class StepDone:
    """Step `index` is done: `x` is where it landed, `denoised` the last estimate it used."""

    index: int
    x: torch.Tensor
    denoised: torch.Tensor
    sigma: float


KSamplerRun = Generator[Denoise | StepDone, torch.Tensor, torch.Tensor]
"""Yields Denoise (send the denoised estimate) or StepDone (send the x to go on from); returns the final x."""


class KSampler(Protocol):
    def __call__(self, x: torch.Tensor, sigmas: torch.Tensor, noise: Noise) -> KSamplerRun: ...


def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add noise of sigma_up, so
    that the result has noise level sigma_to. eta = 0 makes the step deterministic."""
    if not eta or sigma_to == 0:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def row_noise(like: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like `like`, each batch row drawn from its own generator."""
    if len(generators) != like.shape[0]:
        raise ValueError(f"need one generator per batch row: {len(generators)} for {like.shape[0]} rows")
    return randn_tensor(like.shape, generator=list(generators), device=like.device, dtype=like.dtype)


def dpmpp_2s_ancestral(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> KSamplerRun:
    """Ancestral sampling with DPM-Solver++(2S) steps (k-diffusion's `sample_dpmpp_2s_ancestral`).

    Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"
    (arXiv:2211.01095), the second-order singlestep solver, in half-log-SNR time t = -log(sigma): each step
    evaluates the model once at sigma and once at the midpoint of [t, t_down], lands on sigma_down, then
    adds fresh noise of sigma_up (Ho et al. 2020's ancestral sampling) to reach the next sigma. The last
    step down to sigma 0 is one Euler evaluation.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = yield Denoise(x, sigma, i)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = denoised
        else:
            t, t_down = -math.log(sigma), -math.log(sigma_down)
            h = t_down - t
            sigma_mid = math.exp(-(t + h / 2))
            x_mid = (sigma_mid / sigma) * x - math.expm1(-h / 2) * denoised
            denoised_mid = yield Denoise(x_mid, sigma_mid, i)
            x = (sigma_down / sigma) * x - math.expm1(-h) * denoised_mid
        if sigma_up > 0:
            x = x + noise(x) * s_noise * sigma_up
        x = yield StepDone(i, x, denoised, sigma)
    return x


def drive(
    run: KSamplerRun,
    model: Denoiser,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[StepInfo], None] | None = None,
) -> torch.Tensor:
    """Run a sampler coroutine to its end with `model`, as k-diffusion's samplers run: `callback` sees
    `{"x", "i", "sigma", "sigma_hat", "denoised"}` once per step."""
    extra_args = extra_args or {}
    answer: torch.Tensor | None = None
    try:
        while True:
            event = run.send(answer) if answer is not None else next(run)
            if isinstance(event, Denoise):
                ones = torch.ones(event.x.shape[0], dtype=torch.float64)
                answer = model(event.x, event.sigma * ones, **extra_args)
            else:
                if callback is not None:
                    callback(
                        {
                            "x": event.x,
                            "i": event.index,
                            "sigma": event.sigma,
                            "sigma_hat": event.sigma,
                            "denoised": event.denoised,
                        }
                    )
                answer = event.x
    except StopIteration as finished:
        result: torch.Tensor = finished.value
        return result


def sample_dpmpp_2s_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    generators: Sequence[torch.Generator] = (),
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """`dpmpp_2s_ancestral` in k-diffusion's call shape: the whole run with `model`."""
    noise = functools.partial(row_noise, generators=generators)
    return drive(dpmpp_2s_ancestral(x, sigmas, noise, eta, s_noise), model, extra_args, callback)
