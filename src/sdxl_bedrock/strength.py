"""Image strength's one home: every wire's strength into the request's denoising window, and that window
into the steps its sampler runs. No torch here: the wires call it too.

A window is the part of the noise schedule a request runs, as two fractions of it, 1 being pure noise and 0
a clean image (GenerationRequest's `denoise_from` > `denoise_to`). The wires' strengths are one number in
two senses:

- diffusers' `strength` (A1111's `denoising_strength`; OpenAI edits' and variations' `strength`) is the share
  of the schedule run, 1 regenerating from pure noise: the window from `strength` to 0;
- Stability's and Bedrock's `image_strength` is the share of the source kept, 1 returning it: the window from
  `1 - image_strength` to 0. Their STEP_SCHEDULE mode names both ends itself.

The steps a window runs follow diffusers' `StableDiffusionXLImg2ImgPipeline.get_timesteps` for `strength`:

    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = max(num_inference_steps - init_timestep, 0)

so `denoise_from` f starts at step `t_start` of strength f and runs `steps - t_start` steps. The end takes
the same rule (`denoise_to` t stops where a run of strength t would start), not diffusers' `denoising_start`
/ `denoising_end`: those cut at a training timestep, `round(T - fraction * T)` against the scheduler's own
timesteps, so the step they pick moves with each scheduler's spacing (and with its order). Counted in steps,
a window is the same steps whichever sampler runs it, and `step_schedule_start` s is `image_strength` 1 - s
(docs/API.md).
"""

from __future__ import annotations

from typing import NamedTuple


class DenoiseWindow(NamedTuple):
    """The fractions of the noise schedule a request runs from and to (1 pure noise, 0 a clean image)."""

    denoise_from: float = 1.0
    denoise_to: float = 0.0


FULL_SCHEDULE = DenoiseWindow()  # text-to-image, and a mask regenerated from pure noise


def from_strength(strength: float) -> DenoiseWindow:
    """diffusers' `strength`: the share of the schedule run (1 regenerates from noise, 0 keeps the image)."""
    return DenoiseWindow(strength, 0.0)


def from_image_strength(image_strength: float) -> DenoiseWindow:
    """Stability's `image_strength`: the share of the source kept (1 keeps the image, 0 regenerates it)."""
    return DenoiseWindow(1.0 - image_strength, 0.0)


def first_step(steps: int, strength: float) -> int:
    """`get_timesteps`' `t_start`: the first of `steps` steps that a run at diffusers' `strength` takes."""
    init_timestep = min(int(steps * strength), steps)
    return max(steps - init_timestep, 0)


def window_steps(steps: int, denoise_from: float, denoise_to: float) -> tuple[int, int]:
    """Indices [first, last) of a `steps`-step schedule that the window from `denoise_from` to `denoise_to`
    runs; empty (first == last) where no step falls inside it."""
    first = first_step(steps, denoise_from)
    return first, max(first_step(steps, denoise_to), first)
