"""The A1111 wire against a real server, through the real `webuiapi` client (and boto3 for the Bedrock side
of the same request)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import schemathesis
import webuiapi
from PIL import Image

from tests.conftest import AUTH_API_KEY, AUTH_KEY_ID, AUTH_SECRET, RunningServer, bedrock, gradient_png
from tests.e2e.test_openapi import CHECKS

SMALL = {"width": 64, "height": 64, "steps": 4, "sampler_name": "Euler"}


def client(server: RunningServer, **credentials: str) -> webuiapi.WebUIApi:
    address = urlparse(server.url)
    return webuiapi.WebUIApi(host=address.hostname, port=address.port, **credentials)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> webuiapi.WebUIApi:
    return client(server)


@pytest.fixture(scope="module")
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def source_image(width: int = 64, height: int = 64) -> Image.Image:
    return Image.open(io.BytesIO(gradient_png(width, height))).convert("RGB")


def refusal(error: pytest.ExceptionInfo[RuntimeError]) -> tuple[int, Any]:
    status, text = error.value.args
    return status, json.loads(text)


# -- generation ----------------------------------------------------------------------------------------------


def test_txt2img(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(
        prompt="a (lighthouse:1.2) at [dusk]", negative_prompt="fog", seed=42, **{**SMALL, "height": 72}
    )
    (image,) = result.images
    assert image.format == "PNG" and image.size == (64, 72)
    assert result.info["all_seeds"] == [42] and result.info["sampler_name"] == "Euler"
    assert result.info["prompt"] == "a (lighthouse:1.2) at [dusk]"
    assert (
        "Steps: 4, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 42, Size: 64x72"
        in (result.info["infotexts"][0])
    )
    assert result.parameters["steps"] == 4 and result.parameters["enable_hr"] is False
    again = api.txt2img(
        prompt="a (lighthouse:1.2) at [dusk]", negative_prompt="fog", seed=42, **{**SMALL, "height": 72}
    )
    assert np.array_equal(pixels(again.image), pixels(image)), "a seed gives its image again"


def test_batch_size_2_gives_the_images_of_consecutive_seeds(api: webuiapi.WebUIApi) -> None:
    batch = api.txt2img(prompt="a cat", seed=7, batch_size=2, **SMALL)
    assert len(batch.images) == 2 and batch.info["all_seeds"] == [7, 8]
    assert len(batch.info["infotexts"]) == 2
    second = api.txt2img(prompt="a cat", seed=8, **SMALL)
    assert np.abs(pixels(batch.images[1]) - pixels(second.image)).max() <= 1
    iterations = api.txt2img(prompt="a cat", seed=7, n_iter=2, **SMALL)
    assert iterations.info["all_seeds"] == [7, 8] and len(iterations.images) == 2


def test_send_images_false_sends_none(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(prompt="a cat", seed=3, send_images=False, **SMALL)
    assert result.images == [] and result.info["all_seeds"] == [3]


def test_img2img_without_a_mask(api: webuiapi.WebUIApi) -> None:
    result = api.img2img(
        images=[source_image(96, 64)], prompt="a boat", seed=5, denoising_strength=0.5, **SMALL
    )
    assert result.image.size == (64, 64)
    assert result.info["denoising_strength"] == 0.5
    assert result.info["extra_generation_params"]["Denoising strength"] == 0.5


def test_img2img_with_a_mask_changes_only_the_masked_area(api: webuiapi.WebUIApi) -> None:
    source = source_image()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    outside = np.asarray(mask) == 0
    whole = api.img2img(
        images=[source],
        mask_image=mask,
        inpaint_full_res=False,
        mask_blur=0,
        denoising_strength=1.0,
        seed=1,
        **SMALL,
    )
    assert np.array_equal(pixels(whole.image)[outside], pixels(source)[outside])
    assert np.abs(pixels(whole.image)[~outside] - pixels(source)[~outside]).max() > 8
    # webuiapi's default: "only masked", the region around the mask generated at 64x64 and pasted back.
    wide, wide_mask = source_image(128, 64), Image.new("L", (128, 64), 0)
    wide_mask.paste(255, (8, 8, 24, 24))
    only = api.img2img(images=[wide], mask_image=wide_mask, denoising_strength=1.0, seed=1, **SMALL)
    assert only.image.size == (128, 64)
    far = np.ones((64, 128), dtype=bool)
    far[:40, :40] = False
    assert np.array_equal(pixels(only.image)[far], pixels(wide)[far])
    assert only.info["extra_generation_params"]["Inpaint area"] == "Only masked"


# -- progress, interrupt, skip -------------------------------------------------------------------------------


def first_progress(api: webuiapi.WebUIApi, work: Future[Any]) -> dict[str, Any]:
    """Polls /progress until a step of `work` shows (a condition, not a time); fails if `work` ends first."""
    while not work.done():
        progress: dict[str, Any] = api.get_progress()
        if progress["state"]["sampling_step"] > 0:
            return progress
        time.sleep(0.05)  # only to leave the CPU to the server
    pytest.fail(f"the request ended before a step was seen: {work.result()}")


def test_progress_during_a_run_and_interrupt(api: webuiapi.WebUIApi, background: ThreadPoolExecutor) -> None:
    # More images than the server runs at once (8) and many steps: it cannot end before the interrupt.
    work = background.submit(
        api.txt2img, prompt="a lighthouse", seed=100, n_iter=12, **{**SMALL, "steps": 150}
    )
    progress = first_progress(api, work)
    assert 0 < progress["progress"] < 1 and progress["eta_relative"] > 0
    assert progress["state"]["job_count"] == 12 and progress["state"]["sampling_steps"] == 150
    assert progress["state"]["job"] == "txt2img" and progress["textinfo"]
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.size == (8, 8), "the cheap latent preview, 1/8 of the image"
    unseen = api.session.get(f"{api.baseurl}/progress", params={"skip_current_image": "true"}).json()
    assert unseen["current_image"] is None
    assert api.interrupt() == {}
    result = work.result()
    # The images being made end at their step with what they have; the ones not started are dropped.
    assert 1 <= len(result.images) <= 8
    assert len(result.info["all_seeds"]) == 12 and len(result.info["infotexts"]) == len(result.images)
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["state"]["interrupted"] is True


def test_skip_ends_the_images_being_made(api: webuiapi.WebUIApi, background: ThreadPoolExecutor) -> None:
    work = background.submit(
        api.txt2img, prompt="a lighthouse", seed=200, batch_size=2, **{**SMALL, "steps": 150}
    )
    first_progress(api, work)
    assert api.skip() is None
    result = work.result()
    assert len(result.images) == 2 and api.get_progress()["state"]["skipped"] is True


# The hires fix stopped in its first pass, as A1111's modules/processing.py stops it: sample_hr_pass answers
# the first pass on an interrupt; a skip leaves state.skipped set, so the second pass's sampler stops at its
# first model call and returns the upscale it started from (sd_samplers_cfg_denoiser.py, CFGDenoiser.forward;
# sd_samplers_kdiffusion.py, sample_img2img's last_latent).
HIRES = {**SMALL, "steps": 150, "enable_hr": True, "hr_scale": 2}


def test_a_skip_in_the_hires_first_pass_answers_its_upscale_with_no_second_pass_step(
    api: webuiapi.WebUIApi, background: ThreadPoolExecutor
) -> None:
    work = background.submit(api.txt2img, prompt="a lighthouse", seed=300, hr_upscaler="Nearest", **HIRES)
    # The first pass's 150 steps cannot all be done by its first step: the skip lands in the first pass.
    first_progress(api, work)
    assert api.skip() is None
    result = work.result()
    image = pixels(result.image)
    assert result.image.size == (128, 128)
    # Nearest by 2 makes 2x2 blocks of one colour; a single second-pass step would not keep them.
    assert np.array_equal(image, np.repeat(np.repeat(image[::2, ::2], 2, axis=0), 2, axis=1))
    assert len(result.info["infotexts"]) == 1 and api.get_progress()["state"]["skipped"] is True


def test_a_skip_in_the_hires_first_pass_with_a_latent_upscale_answers_the_hires_size(
    api: webuiapi.WebUIApi, background: ThreadPoolExecutor
) -> None:
    work = background.submit(
        api.txt2img, prompt="a lighthouse", seed=301, batch_size=2, hr_upscaler="Latent (nearest)", **HIRES
    )
    first_progress(api, work)
    assert api.skip() is None
    result = work.result()
    assert [image.size for image in result.images] == [(128, 128)] * 2
    assert result.info["all_seeds"] == [301, 302]


def test_an_interrupt_in_the_hires_first_pass_answers_the_first_pass(
    api: webuiapi.WebUIApi, background: ThreadPoolExecutor
) -> None:
    work = background.submit(api.txt2img, prompt="a lighthouse", seed=302, **HIRES)
    first_progress(api, work)
    assert api.interrupt() == {}
    result = work.result()
    assert result.image.size == (64, 64), "sample_hr_pass returns the first pass's samples"
    assert api.get_progress()["state"]["interrupted"] is True


# -- listings, settings, errors ------------------------------------------------------------------------------


def test_samplers_schedulers_and_models(api: webuiapi.WebUIApi) -> None:
    names = api.util_get_sampler_names()
    assert {
        "Euler a",
        "Euler",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "DPM++ 2S a",
        "DPM++ 2M",
        "DDIM",
        "DDPM",
    } == set(names)
    assert api.util_get_scheduler_names() == ["automatic", "karras"]
    (model,) = api.get_sd_models()
    assert model["title"] == "tiny" and api.util_get_current_model() == "tiny"
    assert {style["name"] for style in api.get_prompt_styles()} >= {"anime", "pixel-art"}
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_cmd_flags()["ckpt"] == "tiny"
    memory = api.get_memory()
    assert memory["ram"]["total"] > memory["ram"]["used"] > 0 and memory["cuda"] == {"error": "unavailable"}


def test_options(api: webuiapi.WebUIApi) -> None:
    options = api.get_options()
    assert options["sd_model_checkpoint"] == "tiny" and options["samples_format"] == "png"
    assert api.set_options({"sd_model_checkpoint": "tiny"}) is None
    api.util_set_model("tiny")
    # A1111's set_config raises RuntimeError, which its middleware answers as a 500.
    refused = api.set_options({"sd_model_checkpoint": "sd_xl_refiner_1.0"})
    assert refused == {
        "error": "RuntimeError",
        "detail": "",
        "body": "",
        "errors": "model 'sd_xl_refiner_1.0' not found",
    }
    refused = api.set_options({"enable_pnginfo": False})
    assert refused["detail"][0]["loc"] == ["body", "enable_pnginfo"]


def test_a_field_that_cannot_be_honoured_is_an_error_naming_it(api: webuiapi.WebUIApi) -> None:
    with pytest.raises(RuntimeError) as error:
        api.txt2img(prompt="a cat", restore_faces=True, **SMALL)
    status, body = refusal(error)
    assert status == 422 and body["detail"][0]["loc"] == ["body", "restore_faces"]
    with pytest.raises(RuntimeError) as error:
        api.txt2img(prompt="a cat", **{**SMALL, "sampler_name": "UniPC"})
    status, body = refusal(error)
    assert status == 422 and "does not run" in body["detail"][0]["msg"]
    with pytest.raises(RuntimeError) as error:
        api.txt2img(prompt="a cat", scheduler="Karras", **{**SMALL, "sampler_name": "Euler a"})
    assert refusal(error)[1]["detail"][0]["loc"] == ["body", "scheduler"]


def test_a_karras_schedule_changes_the_image(api: webuiapi.WebUIApi) -> None:
    automatic = api.txt2img(prompt="a cat", seed=11, **SMALL)
    karras = api.txt2img(prompt="a cat", seed=11, scheduler="Karras", **SMALL)
    assert karras.info["infotexts"][0].count("Schedule type: Karras") == 1
    assert np.abs(pixels(automatic.image) - pixels(karras.image)).max() > 1


def test_an_unknown_sdapi_route_is_fastapis_404(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/sdapi/v1/no-such-thing", timeout=30)
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


# -- one request on two wires --------------------------------------------------------------------------------


def test_the_same_request_on_the_bedrock_wire_gives_the_same_image(
    server: RunningServer, api: webuiapi.WebUIApi
) -> None:
    body = {
        "text_prompts": [{"text": "a lighthouse on a cliff"}, {"text": "fog", "weight": -1}],
        "seed": 42,
        "steps": 10,
        "cfg_scale": 6.5,
        "sampler": "K_EULER",
        "width": 64,
        "height": 64,
    }
    answer = json.loads(
        bedrock(server.url)  # type: ignore[attr-defined]
        .invoke_model(modelId="stability.stable-diffusion-xl-v1", body=json.dumps(body))["body"]
        .read()
    )
    from_bedrock = Image.open(io.BytesIO(base64.b64decode(answer["artifacts"][0]["base64"])))
    from_a1111 = api.txt2img(
        prompt="a lighthouse on a cliff",
        negative_prompt="fog",
        seed=42,
        steps=10,
        cfg_scale=6.5,
        sampler_name="Euler",
        width=64,
        height=64,
    )
    assert np.array_equal(pixels(from_a1111.image), pixels(from_bedrock))


# -- auth ----------------------------------------------------------------------------------------------------


def test_auth_is_basic_as_a1111s_or_bearer(auth_server: RunningServer) -> None:
    url = f"{auth_server.url}/sdapi/v1/sd-models"
    refused = httpx.get(url, timeout=30)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Basic"
    assert refused.json()["detail"] == "Not authenticated"
    wrong = httpx.get(url, auth=("user", "wrong"), timeout=30)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Incorrect username or password"
    assert httpx.get(url, auth=(AUTH_KEY_ID, AUTH_SECRET), timeout=30).status_code == 200
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {AUTH_API_KEY}"}, timeout=30)
    assert bearer.status_code == 200
    api = client(auth_server, username="anyone", password=AUTH_API_KEY)
    assert api.get_sd_models()[0]["title"] == "tiny"
    assert len(api.txt2img(prompt="a cat", seed=1, **SMALL).images) == 1


# -- the document --------------------------------------------------------------------------------------------

ANSWERED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("/sdapi/v1/txt2img", "POST", {"prompt": "a cat", "seed": 1, **SMALL}),
    (
        "/sdapi/v1/img2img",
        "POST",
        {
            "init_images": [base64.b64encode(gradient_png(64, 64)).decode()],
            "mask": base64.b64encode(gradient_png(64, 64, "L")).decode(),
            "prompt": "a cat",
            **SMALL,
        },
    ),
    ("/sdapi/v1/progress", "GET", None),
    ("/sdapi/v1/options", "POST", {"sd_model_checkpoint": "tiny"}),
    ("/sdapi/v1/options", "POST", {"sd_vae": "other"}),
    ("/sdapi/v1/skip", "POST", None),
    ("/sdapi/v1/memory", "GET", None),
]


@pytest.mark.parametrize(("path", "method", "body"), ANSWERED)
def test_answers_conform_to_the_document(
    server: RunningServer, path: str, method: str, body: dict[str, Any] | None
) -> None:
    """The generated cases of tests/e2e/test_openapi.py rarely make a valid body; these do."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=30)
    operation = schema[path][method]
    case = operation.Case(body=body, media_type="application/json") if body is not None else operation.Case()
    response = case.call_and_validate(checks=CHECKS, timeout=120)
    assert response.status_code in (200, 422)


def test_the_document_lists_the_a1111_errors(server: RunningServer) -> None:
    paths = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    assert set(paths["/sdapi/v1/txt2img"]["post"]["responses"]) == {
        "200",
        "401",
        "403",
        "408",
        "422",
        "429",
        "500",
        "503",
    }
    assert set(paths["/sdapi/v1/samplers"]["get"]["responses"]) == {"200", "401", "403", "500"}
    # A1111's models ignore the keys they do not know, and so do these.
    schema = paths["/sdapi/v1/txt2img"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema.get("additionalProperties", True) is not False
