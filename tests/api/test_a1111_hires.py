"""The hires fix's host side: its sizes, its second pass's schedule and upscale, and its fields, as A1111's
modules/processing.py (StableDiffusionProcessingTxt2Img) and modules/upscaler.py do them, at
AUTOMATIC1111/stable-diffusion-webui (processing.py as stored, calculate_target_resolution and
sample_hr_pass; sd_samplers_common.setup_img2img_steps)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from sdxl_bedrock.api.a1111.bodies import Plan, parse_txt2img
from sdxl_bedrock.api.a1111.hires import Sizes, hires_sizes, second_pass_schedule, upscale
from sdxl_bedrock.api.a1111.options import ServedModel
from sdxl_bedrock.api.a1111.responses import info_json
from sdxl_bedrock.codecs import encode_png
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import MalformedBody
from sdxl_bedrock.schema import Artifact, FinishReason, LatentResize, Sampler
from sdxl_bedrock.strength import window_steps
from tests.conftest import gradient_png

SETTINGS = Settings(model="tiny")


def txt2img(**body: Any) -> Plan:
    return parse_txt2img(json.dumps(body).encode(), settings=SETTINGS, max_images=64, random_seed=lambda: 5)


def refused_field(**body: Any) -> tuple[str | int, ...]:
    with pytest.raises(MalformedBody) as raised:
        txt2img(**body)
    return raised.value.problem.field_path()


@pytest.mark.parametrize(
    ("size", "scale", "resize", "expected"),
    [
        ((512, 512), 2.0, (0, 0), Sizes((1024, 1024), (0, 0))),
        ((520, 512), 1.3, (0, 0), Sizes((676, 665), (0, 0))),  # int(520 x 1.3), int(512 x 1.3)
        ((512, 768), 2.0, (1024, 0), Sizes((1024, 1536), (0, 0))),
        ((512, 768), 2.0, (0, 1024), Sizes((682, 1024), (0, 0))),
        ((512, 512), 2.0, (1024, 768), Sizes((1024, 1024), (0, 32))),  # the first pass's aspect covers it
        ((768, 512), 2.0, (1024, 1024), Sizes((1536, 1024), (64, 0))),
    ],
)
def test_the_target_size_is_a1111s(
    size: tuple[int, int], scale: float, resize: tuple[int, int], expected: Sizes
) -> None:
    assert hires_sizes(*size, scale, *resize) == expected


def test_the_output_is_the_latent_grid_less_the_cut() -> None:
    assert Sizes((676, 665), (0, 0)).output == (672, 664)
    assert Sizes((1024, 1024), (0, 32)).output == (1024, 768)


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 30, 150])
@pytest.mark.parametrize("strength", [0.01, 0.3, 0.5, 0.7, 0.75, 0.999, 1.0])
def test_the_second_pass_runs_its_steps_at_the_end_of_a1111s_schedule(steps: int, strength: float) -> None:
    schedule, denoise_from = second_pass_schedule(steps, strength)
    assert schedule == int(steps / min(strength, 0.999))
    first, last = window_steps(schedule, denoise_from, 0.0)
    assert (first, last) == (schedule - steps, schedule)


def test_the_pixel_upscalers_need_no_model() -> None:
    image = Image.open(io.BytesIO(gradient_png(64, 48))).convert("RGB")
    nearest = upscale(image, 128, 96, "Nearest")
    assert nearest.tobytes() == image.resize((128, 96), Image.Resampling.NEAREST).tobytes()
    assert (
        upscale(image, 128, 96, "Lanczos").tobytes()
        == image.resize((128, 96), Image.Resampling.LANCZOS).tobytes()
    )
    # A factor whose size is not a multiple of 8: scaled, cut to 8s, then stretched to the size (Lanczos).
    odd = upscale(image, 100, 75, "Nearest")
    step = image.resize((100, 75), Image.Resampling.NEAREST).resize((96, 72), Image.Resampling.LANCZOS)
    assert odd.tobytes() == step.resize((100, 75), Image.Resampling.LANCZOS).tobytes()
    assert (
        upscale(image, 100, 75, "None").tobytes()
        == image.resize((100, 75), Image.Resampling.LANCZOS).tobytes()
    )


# SillyTavern's hires settings (public/scripts/extensions/stable-diffusion/index.js at SillyTavern/SillyTavern
# ba6f7b7a98cf7a5eaf4f0e81da9779a9a668ced4: defaultSettings and generateAutoImage).
SILLYTAVERN_HIRES = {
    "enable_hr": True,
    "hr_upscaler": "Latent",
    "hr_scale": 2.0,
    "denoising_strength": 0.7,
    "hr_second_pass_steps": 0,
}


def test_a_latent_upscaler_has_the_first_pass_return_its_latents() -> None:
    plan = txt2img(
        prompt="a castle", width=64, height=64, steps=20, sampler_name="Euler", **SILLYTAVERN_HIRES
    )
    assert plan.request.return_latents and (plan.request.width, plan.request.height) == (64, 64)
    assert plan.hires is not None
    fix = plan.hires.fix
    assert fix.latent == (LatentResize.BILINEAR, False) and fix.steps == 20
    second = fix.request
    assert (second.width, second.height, second.steps, second.sampler) == (128, 128, 28, Sampler.EULER)
    assert second.cfg_scale == plan.request.cfg_scale and second.prompts == plan.request.prompts
    assert plan.steps_per_image == 40
    first = Artifact(b"", 11, FinishReason.SUCCESS, latents="the first pass's latents")
    made = fix.second_pass(first)
    assert made.seed == 11 and made.init_image is None and made.init_latents is not None
    assert made.init_latents.latents == "the first pass's latents"
    assert made.init_latents.resize_to == (128, 128)


def test_a_pixel_upscaler_starts_the_second_pass_from_the_upscaled_image() -> None:
    plan = txt2img(
        width=64, height=64, steps=8, enable_hr=True, hr_upscaler="Nearest", hr_resize_x=128, hr_resize_y=96
    )
    assert plan.hires is not None and not plan.request.return_latents
    image = Image.open(io.BytesIO(gradient_png(64, 64))).convert("RGB")
    made = plan.hires.fix.second_pass(Artifact(encode_png(image), 3, FinishReason.SUCCESS))
    assert made.init_latents is None and made.init_image is not None
    expected = image.resize((128, 128), Image.Resampling.NEAREST).crop((0, 16, 128, 112))
    assert made.init_image.tobytes() == expected.tobytes()
    assert (made.width, made.height) == (128, 96)


def test_the_hires_fields_take_their_first_pass_defaults_or_their_own() -> None:
    plan = txt2img(
        prompt="a castle",
        negative_prompt="fog",
        sampler_name="Euler",
        enable_hr=True,
        hr_sampler_name="DPM++ 2M",
        hr_scheduler="Automatic",
        hr_prompt="a castle, detailed",
        hr_cfg=4.5,
        hr_second_pass_steps=6,
        hr_checkpoint_name="Use same checkpoint",
    )
    assert plan.hires is not None
    second = plan.hires.fix.request
    assert second.sampler is Sampler.DPMPP_2M and second.cfg_scale == 4.5
    assert second.prompts[0].text == "a castle, detailed" and second.negative_prompts[0].text == "fog"
    assert plan.hires.fix.steps == 6 and plan.hires.fix.upscaler == "Latent", "null is A1111's default mode"
    info = json.loads(info_json(plan, [Artifact(b"", 5, FinishReason.SUCCESS)], ServedModel.of(SETTINGS)))
    assert (info["width"], info["height"]) == (512, 512), "A1111 reports the first pass's size"
    text = info["infotexts"][0]
    assert "Size: 512x512, Model: tiny, Denoising strength: 0.75, RNG: CPU, Hires sampler: DPM++ 2M" in text
    assert 'Hires prompt: "a castle, detailed", Hires schedule type: Karras' in text
    assert "Hires CFG Scale: 4.5, Hires upscale: 2.0, Hires steps: 6, Version:" in text


def test_the_infotext_of_sillytaverns_hires_fix() -> None:
    plan = txt2img(prompt="a castle", width=64, height=64, steps=20, sampler_name="DDIM", **SILLYTAVERN_HIRES)
    info = json.loads(info_json(plan, [Artifact(b"", 5, FinishReason.SUCCESS)], ServedModel.of(SETTINGS)))
    assert info["extra_generation_params"]["Hires upscaler"] == "Latent"
    assert (
        "Denoising strength: 0.7, RNG: CPU, Hires upscale: 2.0, Hires upscaler: Latent, Version"
        in (info["infotexts"][0])
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
        ({"denoising_strength": 0.0}, "denoising_strength"),
        ({"denoising_strength": None}, "denoising_strength"),
        ({"width": 1024, "hr_scale": 2.5}, "hr_scale"),
        ({"hr_resize_x": 2048, "width": 512, "height": 1024}, "hr_resize_x"),
        ({"hr_checkpoint_name": "sd_xl_refiner_1.0"}, "hr_checkpoint_name"),
        ({"hr_sampler_name": "UniPC"}, "hr_sampler_name"),
        ({"hr_scheduler": "Exponential", "sampler_name": "Euler"}, "hr_scheduler"),
        ({"hr_prompt": "a [cat|dog]"}, "hr_prompt"),
    ],
)
def test_a_hires_field_that_cannot_be_honoured_is_refused_by_name(body: dict[str, Any], field: str) -> None:
    assert field in refused_field(enable_hr=True, **body)


def test_without_enable_hr_the_hires_fields_have_no_effect() -> None:
    plan = txt2img(hr_upscaler="R-ESRGAN 4x+", hr_scale=9.0, hr_sampler_name="UniPC")
    assert plan.hires is None and not plan.request.return_latents
