"""The A1111 wire's bodies: what webuiapi sends by default is taken, what cannot be honoured is a 422 naming
its field, and the fields resolve into the engine's request (sampler, schedule, eta, styles, sizes, seeds,
the img2img pixel work)."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
from typing import Any

import pytest
import webuiapi
from PIL import Image

from sdxl_bedrock.api.a1111 import responses
from sdxl_bedrock.api.a1111.bodies import Plan, parse_img2img, parse_txt2img
from sdxl_bedrock.api.a1111.errors import A1111Refusal
from sdxl_bedrock.api.a1111.options import ADJUSTABLE_DEFAULTS, ServedModel, check_settings, options
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import MalformedBody
from sdxl_bedrock.library import only_model
from sdxl_bedrock.schema import Sampler, SigmaSchedule
from tests.frontends import SILLYTAVERN_TXT2IMG

SETTINGS = Settings(model="/models/sd_xl_base_1.0.safetensors")
SERVED = ServedModel.current(only_model(SETTINGS.model), {})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webuiapi_payload(method: str, **arguments: Any) -> dict[str, Any]:
    """The JSON body webuiapi 0.9.17 sends for a call, captured instead of sent."""
    api = webuiapi.WebUIApi(host="127.0.0.1", port=closed_port())  # its extension probe fails, harmlessly
    sent: list[dict[str, Any]] = []
    api.post_and_get_api_result = lambda url, json, use_async: sent.append(json)  # type: ignore[method-assign]
    getattr(api, method)(**arguments)
    (payload,) = sent
    return json.loads(json.dumps(payload))  # as it travels (enums as their values)


def txt2img(**body: Any) -> Plan:
    return parse_txt2img(json.dumps(body).encode(), settings=SETTINGS, max_images=64, random_seed=lambda: 77)


def img2img(**body: Any) -> Plan:
    body.setdefault("init_images", [png_base64(Image.new("RGB", (64, 64), (200, 40, 40)))])
    return parse_img2img(json.dumps(body).encode(), settings=SETTINGS, max_images=64, random_seed=lambda: 77)


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def refused(parse: Any, **body: Any) -> MalformedBody:
    with pytest.raises(MalformedBody) as raised:
        parse(**body)
    return raised.value


# -- what webuiapi sends -------------------------------------------------------------------------------------


def test_webuiapis_default_txt2img_is_taken() -> None:
    payload = webuiapi_payload("txt2img", prompt="a lighthouse")
    plan = parse_txt2img(json.dumps(payload).encode(), settings=SETTINGS, max_images=64)
    request = plan.request
    assert (request.width, request.height, request.steps, request.samples) == (512, 512, 20, 1)
    assert request.sampler is Sampler.EULER_ANCESTRAL and request.sigma_schedule is SigmaSchedule.DEFAULT
    assert request.eta is None, "eta 1 is Euler a's own"
    assert request.seed >= 1 and request.init_image is None


def test_webuiapis_default_img2img_is_taken_with_and_without_a_mask() -> None:
    image = Image.new("RGB", (96, 64), (10, 120, 200))
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (40, 16, 64, 48))
    for arguments in ({}, {"mask_image": mask}):
        payload = webuiapi_payload(
            "img2img", images=[image], prompt="a boat", width=64, height=64, **arguments
        )
        plan = parse_img2img(json.dumps(payload).encode(), settings=SETTINGS, max_images=64)
        assert plan.request.init_image is not None
        assert plan.request.init_image.size == (64, 64)
        assert plan.request.denoise_from == 0.75
        assert (plan.request.mask is not None) == bool(arguments)
        assert (plan.overlay is not None) == bool(arguments)


# -- fields that cannot be honoured --------------------------------------------------------------------------

REFUSED_TXT2IMG: list[tuple[str, Any]] = [
    ("firstphase_width", 256),
    ("restore_faces", True),
    ("tiling", True),
    ("subseed_strength", 0.5),
    ("seed_resize_from_w", 256),
    ("s_churn", 1.0),
    ("s_noise", 0.9),
    ("s_min_uncond", 0.1),
    ("script_name", "x/y/z plot"),
    ("script_args", [1]),
    ("alwayson_scripts", {"ControlNet": {"args": []}}),
    ("infotext", "a cat\nSteps: 20"),
    ("refiner_checkpoint", "sdxl_refiner"),
    ("firstpass_image", "abc"),
    ("comments", {"x": 1}),
    ("override_settings", {"sd_vae": "other.vae.pt"}),
    ("styles", ["no-such-style"]),
    ("width", 100),
    ("height", 2056),
    ("seed", -2),
    ("steps", 151),
    ("sampler_name", "UniPC"),
    ("sampler_name", "Nonsense"),
    ("scheduler", "Exponential"),
    ("batch_size", "2"),
    ("prompt", "a [cat|dog]"),
]


@pytest.mark.parametrize(("field", "value"), REFUSED_TXT2IMG, ids=[f for f, _ in REFUSED_TXT2IMG])
def test_a_field_that_cannot_be_honoured_is_refused_by_name(field: str, value: Any) -> None:
    error = refused(txt2img, **{field: value})
    assert field in error.problem.field_path()


REFUSED_IMG2IMG: list[tuple[str, Any]] = [
    ("inpainting_fill", 2),
    ("mask_round", False),
    ("initial_noise_multiplier", 0.5),
    ("latent_mask", "abc"),
    ("resize_mode", 4),
    ("init_images", ["a", "b"]),
]


@pytest.mark.parametrize(("field", "value"), REFUSED_IMG2IMG, ids=[f for f, _ in REFUSED_IMG2IMG])
def test_an_img2img_field_that_cannot_be_honoured_is_refused_by_name(field: str, value: Any) -> None:
    assert field in refused(img2img, **{field: value}).problem.field_path()


def test_img2img_needs_an_image_and_a_mask_takes_no_latent_upscale() -> None:
    assert refused(img2img, init_images=[]).problem.field_path() == ("init_images",)
    # A1111's own refusals (modules/api/api.py at AUTOMATIC1111/stable-diffusion-webui
    # 2fec94710bbba31b282fe123b198068aef38df21: img2imgapi, decode_base64_to_image), in its statuses.
    with pytest.raises(A1111Refusal) as missing:
        img2img(init_images=None)
    assert (missing.value.status, missing.value.detail) == (404, "Init image not found")
    with pytest.raises(A1111Refusal) as undecodable:
        img2img(init_images=["data:image/png;base64,!!"])
    assert (undecodable.value.status, undecodable.value.detail) == (500, "Invalid encoded image")
    mask = png_base64(Image.new("L", (64, 64), 255))
    assert refused(img2img, resize_mode=3, mask=mask).problem.field_path() == ("resize_mode",)


def test_too_many_images_are_refused() -> None:
    assert refused(txt2img, batch_size=8, n_iter=9).problem.field_path() == ("n_iter",)
    assert txt2img(batch_size=8, n_iter=8).request.samples == 64


# -- samplers and schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "sampler", "schedule", "label"),
    [
        ({"sampler_name": "Euler"}, Sampler.EULER, SigmaSchedule.DEFAULT, "Automatic"),
        ({"sampler_name": "Euler", "scheduler": "karras"}, Sampler.EULER, SigmaSchedule.KARRAS, "Karras"),
        ({"sampler_name": "DPM++ 2M"}, Sampler.DPMPP_2M, SigmaSchedule.KARRAS, "Karras"),  # A1111's automatic
        (
            {"sampler_name": "DPM++ 2M Karras"},
            Sampler.DPMPP_2M,
            SigmaSchedule.KARRAS,
            "Karras",
        ),  # legacy name
        (
            {"sampler_name": "DPM2 a", "scheduler": "Automatic"},
            Sampler.DPM_2_ANCESTRAL,
            SigmaSchedule.KARRAS,
            "Karras",
        ),
        ({"sampler_name": "LMS Karras"}, Sampler.LMS, SigmaSchedule.KARRAS, "Karras"),
        ({"sampler_index": "Heun"}, Sampler.HEUN, SigmaSchedule.DEFAULT, "Automatic"),
        ({}, Sampler.EULER, SigmaSchedule.DEFAULT, "Automatic"),  # the model's sampler_index default
        ({"sampler_name": "DDPM"}, Sampler.DDPM, SigmaSchedule.DEFAULT, "Automatic"),
    ],
)
def test_samplers_and_schedules_resolve_as_a1111_reads_them(
    body: dict[str, Any], sampler: Sampler, schedule: SigmaSchedule, label: str
) -> None:
    plan = txt2img(**body)
    assert (plan.request.sampler, plan.request.sigma_schedule, plan.resolved.scheduler) == (
        sampler,
        schedule,
        label,
    )


@pytest.mark.parametrize("sampler", ["Euler a", "DDPM"])
def test_karras_is_refused_where_the_sampler_has_none(sampler: str) -> None:
    assert refused(txt2img, sampler_name=sampler, scheduler="Karras").problem.field_path() == ("scheduler",)


@pytest.mark.parametrize("scheduler", ["normal", "Normal", "Karras", "sgm_uniform", "Automatic", None])
def test_ddim_takes_any_of_a1111s_schedules_with_no_effect(scheduler: str | None) -> None:
    """A1111 runs DDIM as a timestep sampler (modules/sd_samplers_timesteps.py), which reads no schedule;
    SillyTavern sends `normal` by default."""
    plan = txt2img(sampler_name="DDIM", scheduler=scheduler)
    assert plan.request.sampler is Sampler.DDIM and plan.request.sigma_schedule is SigmaSchedule.DEFAULT
    assert refused(txt2img, sampler_name="DDIM", scheduler="nonsense").problem.field_path() == ("scheduler",)


def test_eta_is_taken_where_it_means_something() -> None:
    assert txt2img(sampler_name="DDIM", eta=0.6).request.eta == 0.6
    assert txt2img(sampler_name="DPM++ 2S a", eta=0.0).request.eta == 0.0
    assert txt2img(sampler_name="Euler", eta=0.3).request.eta is None  # no effect in A1111 either
    assert txt2img(sampler_name="Euler a", eta=1.0).request.eta is None
    assert refused(txt2img, sampler_name="Euler a", eta=0.5).problem.field_path() == ("eta",)


# -- prompts, styles, seeds, settings ------------------------------------------------------------------------


def test_styles_apply_as_a1111_applies_them() -> None:
    plan = txt2img(prompt="a (fox:1.2)", negative_prompt="blurry", styles=["pixel-art"])
    prompt, negative = plan.all_prompts
    assert prompt == "pixel-art a (fox:1.2) . low-res, blocky, pixel art style, 8-bit graphics"
    assert negative.startswith("blurry, sloppy, messy")
    (positive,) = plan.request.prompts
    assert positive.text == "pixel-art a fox . low-res, blocky, pixel art style, 8-bit graphics"
    assert positive.spans is not None and any(span.emphasis == 1.2 for span in positive.spans)
    assert plan.request.style is None, "applied here, as text, before the emphasis is parsed"


def test_an_empty_negative_prompt_is_none_and_seeds_follow_a1111() -> None:
    plan = txt2img(prompt="a", negative_prompt="", seed=-1, batch_size=2, n_iter=2)
    assert plan.request.negative_prompts == () and plan.request.seed == 77 and plan.request.samples == 4
    assert txt2img(seed=0).request.seed == 0
    assert txt2img(seed=4294967295).request.seed == 4294967295


def test_settings_are_taken_when_they_ask_for_what_the_server_does() -> None:
    for checkpoint in ("sd_xl_base_1.0.safetensors", "sd_xl_base_1.0", "/models/sd_xl_base_1.0.safetensors"):
        txt2img(override_settings={"sd_model_checkpoint": checkpoint, "samples_format": "png"})
    assert refused(txt2img, override_settings={"sd_model_checkpoint": "other.ckpt"}).problem.field_path() == (
        "override_settings",
        "sd_model_checkpoint",
    )
    assert refused(txt2img, override_settings={"enable_pnginfo": 0}).problem.field_path() == (
        "override_settings",
        "enable_pnginfo",
    )
    assert options(Settings(model="tiny"))["sd_model_checkpoint"] == "tiny"


def test_sizes_are_any_multiple_of_8_from_64_to_2048() -> None:
    assert (txt2img(width=72, height=2048).request.width, txt2img(width=72, height=2048).request.height) == (
        72,
        2048,
    )
    assert refused(txt2img, width=56).problem.field_path() == ("width",)


# -- img2img pixel work --------------------------------------------------------------------------------------


def test_resize_modes_and_latent_upscale() -> None:
    wide = png_base64(Image.new("RGB", (128, 64), (0, 200, 0)))
    for mode in (0, 1, 2):
        plan = img2img(init_images=[wide], resize_mode=mode, width=64, height=64)
        assert plan.request.init_image is not None and plan.request.init_image.size == (64, 64)
    latent = img2img(init_images=[wide], resize_mode=3, width=64, height=64)
    assert latent.request.init_image is not None and latent.request.init_image.size == (128, 64)


def test_inpaint_only_masked_crops_the_region_and_whole_picture_does_not() -> None:
    image = Image.new("RGB", (128, 128), (200, 200, 200))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (8, 8, 24, 24))
    common = {"init_images": [png_base64(image)], "mask": png_base64(mask), "width": 64, "height": 64}
    masked = img2img(**common, inpaint_full_res=True, inpaint_full_res_padding=4, mask_blur=0)
    assert masked.overlay is not None and masked.overlay.paste_to == (4, 4, 24, 24)
    assert masked.request.mask is not None and masked.request.mask.getbbox() is not None
    whole = img2img(**common, inpaint_full_res=0, mask_blur=0)
    assert whole.overlay is not None and whole.overlay.paste_to is None
    assert whole.request.mask is not None
    assert whole.request.mask.point(lambda level: 255 if level >= 128 else 0).getbbox() == (4, 4, 12, 12)
    inverted = img2img(**common, inpaint_full_res=False, mask_blur=0, inpainting_mask_invert=1)
    assert inverted.request.mask is not None and inverted.request.mask.getpixel((0, 0)) == 255
    blank = img2img(**{**common, "mask": png_base64(Image.new("L", (128, 128), 0))})
    assert blank.request.mask is None, "A1111: an empty mask with 'only masked' is plain img2img"


def test_the_wire_does_not_import_torch() -> None:
    script = "import sys, sdxl_bedrock.api.a1111; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", script], check=True)


# -- what other front-ends send ------------------------------------------------------------------------------


def test_sillytaverns_default_txt2img_is_taken_its_own_keys_ignored() -> None:
    plan = txt2img(**SILLYTAVERN_TXT2IMG)
    request = plan.request
    assert (request.width, request.height, request.steps, request.sampler) == (512, 512, 20, Sampler.DDIM)
    assert request.first_encoder_layer is None and plan.hires is None and plan.body.save_images
    assert plan.resolved.scheduler == "normal", "A1111's infotext names the schedule as sent"
    assert "url" not in plan.body.model_dump() and "clip_skip" not in plan.body.model_dump()


def test_unknown_keys_are_ignored_as_a1111s_models_ignore_them() -> None:
    assert txt2img(prompt="a", unknown_key=1, clip_skip=3).request.first_encoder_layer is None
    assert img2img(prompt="a", url="http://x", hr_distilled_cfg=3.5).request.is_image_to_image


def test_clip_skip_acts_on_sdxl_only_with_sdxl_clip_l_skip() -> None:
    """modules/sd_hijack_clip.py at AUTOMATIC1111/stable-diffusion-webui
    00e09382cd85c77ac35545c7264855823dfc2eb1: FrozenCLIPEmbedderForSDXLWithCustomWords reads
    CLIP_stop_at_last_layers only under opts.sdxl_clip_l_skip."""
    assert txt2img(override_settings={"CLIP_stop_at_last_layers": 2}).request.first_encoder_layer is None
    skipped = txt2img(override_settings={"CLIP_stop_at_last_layers": 3, "sdxl_clip_l_skip": True})
    assert skipped.request.first_encoder_layer == 3 and skipped.kept_settings == {}
    infotext = responses.infotext(skipped, 1, SERVED)
    assert "Clip skip: 3" in infotext
    kept = txt2img(
        override_settings={"sdxl_clip_l_skip": True}, override_settings_restore_afterwards=False
    ).kept_settings
    assert kept == {"sdxl_clip_l_skip": True}
    on = {**ADJUSTABLE_DEFAULTS, "CLIP_stop_at_last_layers": 2, "sdxl_clip_l_skip": True}
    plan = parse_txt2img(b"{}", settings=SETTINGS, max_images=8, adjustable=on)
    assert plan.request.first_encoder_layer == 2
    for value in (0, 13, 2.0, True):
        overrides = {"CLIP_stop_at_last_layers": value}
        assert refused(txt2img, override_settings=overrides).problem.field_path() == (
            "override_settings",
            "CLIP_stop_at_last_layers",
        )


def test_sd_vae_takes_the_checkpoints_own_by_any_of_its_names() -> None:
    for name in ("Automatic", "None", "sd_xl_base_1.0"):
        assert txt2img(override_settings={"sd_vae": name}).settings["sd_vae"] == name
    assert refused(txt2img, override_settings={"sd_vae": "sdxl_vae.safetensors"}).problem.field_path() == (
        "override_settings",
        "sd_vae",
    )


def test_the_options_a_client_read_can_be_posted_back() -> None:
    """Open WebUI's set_image_model posts GET /options back with the checkpoint changed
    (backend/open_webui/routers/images.py at open-webui/open-webui
    02530d501461ce58ab06231d7c2ef2024a141ddf)."""
    posted_back = {
        **ADJUSTABLE_DEFAULTS,
        "sd_model_checkpoint": only_model(SETTINGS.model).default,
    }  # its title, by name
    listed = options(SETTINGS)
    assert listed["sd_checkpoint_hash"] is None, "read-only, and posted back as it was"
    assert check_settings(listed, (), SETTINGS, ADJUSTABLE_DEFAULTS) == posted_back
    saving = Settings(model="tiny", outputs_dir="/srv/outputs")
    listed = options(saving)
    assert (
        listed["samples_save"] is True and listed["outdir_txt2img_samples"] == "/srv/outputs/txt2img-images"
    )
    assert check_settings(listed, (), saving, ADJUSTABLE_DEFAULTS) == {
        **posted_back,
        "sd_model_checkpoint": "tiny",
    }
