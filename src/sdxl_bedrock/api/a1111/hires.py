"""A1111's hires fix: txt2img in two passes, each a row of the batcher like any other request.

As modules/processing.py (StableDiffusionProcessingTxt2Img: calculate_target_resolution, init,
sample_hr_pass) and modules/upscaler.py and images.py (resize_image with an upscaler) of A1111 do it:

1. the first pass at `width` x `height`;
2. the upscale to `hr_scale` x the size (each side rounded down), or to `hr_resize_x` / `hr_resize_y` (one
   of them 0: the other from the aspect; both: the first pass's aspect scaled to cover them, the excess cut
   around the centre in latent space), by `hr_upscaler`:
   - a latent mode (`Latent`, the default, and A1111's five others: torch's interpolate modes, with or
     without antialiasing) resizes the first pass's latents, which the engine hands back;
   - `Lanczos` and `Nearest` scale the decoded image by the factor (then Lanczos to the size, as A1111's
     upscaler base class does); `None` is a Lanczos resize to the size (A1111's resize_image without an
     upscaler). These run on the host; no upscaler model is loaded here;
3. image-to-image at `denoising_strength` for `hr_second_pass_steps` steps (0: the first pass's), taken as
   A1111 takes a step count given to img2img: the last N steps of a schedule of int(N / strength) steps;
   with `hr_sampler_name`, `hr_scheduler`, `hr_prompt`, `hr_negative_prompt` where given (else the first
   pass's), and Forge's `hr_cfg` where given (A1111 has none: the first pass's `cfg_scale`).

A skip (`/sdapi/v1/skip`) during the first pass, or after it and before the second pass's first step,
leaves that image's second pass no step: the upscale of what the first pass had, decoded (A1111's
state.skipped stays set until the next batch, and its sampler returns its starting latents at the first
model call). An interrupt by the end of the first pass answers the first pass's images at the first pass's
size (sample_hr_pass returns them); one after that and before a second pass's first step answers the
upscale with no step, as a skip. A pixel upscaler's image is answered as it is, where A1111 passes it
through the VAE (encode and decode) first.

The output has the latent grid's size, a multiple of 8: a target that is not one loses its remainder (A1111
encodes it and gets the same grid). A cut for `hr_resize_x` and `hr_resize_y` together crops the pixel
image of the pixel upscalers by whole latents, where A1111 crops the latents encoded from it.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

from PIL import Image

from sdxl_bedrock.schema import Artifact, GenerationRequest, InitLatents, LatentResize

LATENT_FACTOR = 8  # SDXL's VAE: one latent per 8x8 pixels
LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

# shared.latent_upscale_modes, in A1111's order; `Latent` is its default mode (hr_upscaler null).
LATENT_MODES: dict[str, tuple[LatentResize, bool]] = {
    "Latent": (LatentResize.BILINEAR, False),
    "Latent (antialiased)": (LatentResize.BILINEAR, True),
    "Latent (bicubic)": (LatentResize.BICUBIC, False),
    "Latent (bicubic antialiased)": (LatentResize.BICUBIC, True),
    "Latent (nearest)": (LatentResize.NEAREST, False),
    "Latent (nearest-exact)": (LatentResize.NEAREST_EXACT, False),
}
DEFAULT_LATENT_MODE = "Latent"
# The pixel upscalers of shared.sd_upscalers that need no model, in A1111's order; each lists scale 4
# (UpscalerData's default).
PIXEL_UPSCALERS = ("None", "Lanczos", "Nearest")
UPSCALER_SCALE = 4.0


@dataclass(frozen=True)
class Sizes:
    """`target`: A1111's hr_upscale_to_x/_y; `cut`: its truncate_x/_y, in latents; `output`: the
    second pass's size."""

    target: tuple[int, int]
    cut: tuple[int, int]

    @property
    def output(self) -> tuple[int, int]:
        (width, height), (cut_x, cut_y) = self.target, self.cut
        return (width // LATENT_FACTOR - cut_x) * LATENT_FACTOR, (
            height // LATENT_FACTOR - cut_y
        ) * LATENT_FACTOR


def hires_sizes(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> Sizes:
    """A1111's calculate_target_resolution."""
    if resize_x == 0 and resize_y == 0:
        return Sizes((int(width * scale), int(height * scale)), (0, 0))
    if resize_y == 0:
        return Sizes((resize_x, resize_x * height // width), (0, 0))
    if resize_x == 0:
        return Sizes((resize_y * width // height, resize_y), (0, 0))
    if width / height < resize_x / resize_y:
        target = (resize_x, resize_x * height // width)
    else:
        target = (resize_y * width // height, resize_y)
    cut = ((target[0] - resize_x) // LATENT_FACTOR, (target[1] - resize_y) // LATENT_FACTOR)
    return Sizes(target, cut)


def second_pass_schedule(steps: int, strength: float) -> tuple[int, float]:
    """(schedule steps, denoise_from) that run the last `steps` steps of A1111's int(steps / strength)-step
    schedule (sd_samplers_common.setup_img2img_steps with a step count given): the half step keeps the
    engine's int(schedule x denoise_from) at `steps` exactly."""
    schedule = int(steps / min(strength, 0.999))
    return schedule, min(1.0, (steps + 0.5) / schedule)


@dataclass(frozen=True)
class HiresFix:
    """The second pass of each image: `request` without its seed and start, which `second_pass` adds."""

    upscaler: str
    sizes: Sizes
    steps: int  # the second pass's steps
    request: GenerationRequest

    @property
    def latent(self) -> tuple[LatentResize, bool] | None:
        return LATENT_MODES.get(self.upscaler)

    def second_pass(self, first: Artifact) -> GenerationRequest:
        """The second pass of one first-pass image (host work: the pixel upscale)."""
        latent = self.latent
        if latent is not None:
            mode, antialias = latent
            width, height = self.sizes.target
            resize_to = (width // LATENT_FACTOR * LATENT_FACTOR, height // LATENT_FACTOR * LATENT_FACTOR)
            given = InitLatents(first.latents, mode, antialias, resize_to)
            return dataclasses.replace(self.request, seed=first.seed, init_latents=given)
        with Image.open(io.BytesIO(first.png)) as image:
            upscaled = upscale(image.convert("RGB"), *self.sizes.target, self.upscaler)
        cut_x, cut_y = self.sizes.cut
        left, top = cut_x // 2 * LATENT_FACTOR, cut_y // 2 * LATENT_FACTOR
        width, height = self.sizes.output
        source = upscaled.crop((left, top, left + width, top + height))
        return dataclasses.replace(self.request, seed=first.seed, init_image=source)


def without_steps(second: GenerationRequest) -> GenerationRequest:
    """A second pass that takes no step: the upscaled first pass decoded as it is, A1111's answer where a
    skip or an interrupt reaches the second pass before its first step (the sampler's InterruptedException
    returns the latents it started from: sd_samplers_kdiffusion.py, sample_img2img's last_latent)."""
    return dataclasses.replace(second, denoise_from=0.0)


def upscale(image: Image.Image, width: int, height: int, upscaler: str) -> Image.Image:
    """A1111's images.resize_image(0, ...) with a pixel upscaler that needs no model."""
    if upscaler == "None":
        return image.resize((width, height), resample=LANCZOS)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = scaled(image, scale, NEAREST if upscaler == "Nearest" else LANCZOS)
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image


def scaled(image: Image.Image, scale: float, resample: Image.Resampling) -> Image.Image:
    """A1111's Upscaler.upscale for Lanczos and Nearest: one resize by `scale`, then Lanczos to the size
    rounded down to a multiple of 8."""
    destination = (int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8))
    if image.width < destination[0] or image.height < destination[1]:
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
    if image.size != destination:
        image = image.resize(destination, resample=LANCZOS)
    return image
