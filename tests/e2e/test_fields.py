"""Every generation field through a real server and boto3: samplers, prompts, cfg_scale, step schedules,
text-to-image sizes, masks, the content filter and CLIP guidance."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from tests.conftest import RunningServer, bedrock, gradient_png, start_server

MODEL = "stability.stable-diffusion-xl-v1"
SAMPLERS = [
    "DDIM",
    "DDPM",
    "K_DPMPP_2M",
    "K_DPMPP_2S_ANCESTRAL",
    "K_DPM_2",
    "K_DPM_2_ANCESTRAL",
    "K_EULER",
    "K_EULER_ANCESTRAL",
    "K_HEUN",
    "K_LMS",
]
SDXL_SIZES = [(1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640)]
SDXL_SIZES += [(640, 1536), (768, 1344), (832, 1216), (896, 1152)]
CLIP_PRESETS = ["FAST_BLUE", "FAST_GREEN", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"]
SOURCE = gradient_png(64, 64)


@pytest.fixture(scope="module")
def featured_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """A server with the content filter and the tiny CLIP model configured."""
    folder = tmp_path_factory.mktemp("featured")
    terms = folder / "blocked.txt"
    terms.write_text("# blocked\nspider\nbarn owl\n", encoding="utf-8")
    running = start_server(
        folder, "--model", "tiny", "--relaxed-sizes", "--clip-model", "tiny", "--blocked-terms", str(terms)
    )
    yield running
    running.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(**fields: Any) -> dict[str, Any]:
    return {
        "text_prompts": [{"text": "a harbour at dusk"}],
        "init_image": b64(SOURCE),
        "steps": 10,
        "seed": 9,
        **fields,
    }


def invoke(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = bedrock(url).invoke_model(  # type: ignore[attr-defined]
        modelId=MODEL, body=json.dumps(payload), accept="application/json", contentType="application/json"
    )
    answer: dict[str, Any] = json.loads(response["body"].read())
    assert answer["result"] == "success"
    return answer["artifacts"][0]


def pixels(artifact: dict[str, Any]) -> np.ndarray:
    return np.asarray(
        Image.open(io.BytesIO(base64.b64decode(artifact["base64"]))).convert("RGB"), dtype=np.int16
    )


def differ(a: dict[str, Any], b: dict[str, Any]) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


# -- 1. samplers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_is_served(server: RunningServer, sampler: str) -> None:
    artifact = invoke(server.url, body(sampler=sampler))
    assert artifact["finishReason"] == "SUCCESS"
    assert pixels(artifact).shape == (64, 64, 3)


def test_samplers_differ_and_each_repeats_itself(server: RunningServer) -> None:
    euler = invoke(server.url, body(sampler="K_EULER_ANCESTRAL"))
    again = invoke(server.url, body(sampler="K_EULER_ANCESTRAL"))
    dpm = invoke(server.url, body(sampler="K_DPMPP_2S_ANCESTRAL"))
    assert euler["base64"] == again["base64"]
    assert differ(euler, dpm) > 1


# -- 2. prompts ----------------------------------------------------------------------------------------------


def test_a_2000_character_prompt_is_served(server: RunningServer) -> None:
    long_text = ("a harbour at dusk with fishing boats and gulls, " * 50)[:2000]
    artifact = invoke(
        server.url, body(text_prompts=[{"text": long_text}, {"text": long_text, "weight": -0.5}])
    )
    assert pixels(artifact).shape == (64, 64, 3)


def test_prompt_weights_through_the_server(server: RunningServer) -> None:
    one = invoke(server.url, body(text_prompts=[{"text": "a cat", "weight": 1}]))
    with_zero = invoke(
        server.url, body(text_prompts=[{"text": "a cat", "weight": 1}, {"text": "a dog", "weight": 0}])
    )
    twice = invoke(
        server.url, body(text_prompts=[{"text": "a cat", "weight": 0.5}, {"text": "a cat", "weight": 0.5}])
    )
    negative = invoke(server.url, body(text_prompts=[{"text": "a cat"}, {"text": "blurry", "weight": -1}]))
    assert differ(one, with_zero) <= 1
    assert differ(one, twice) <= 1
    assert differ(one, negative) > 1


# -- 3. cfg_scale --------------------------------------------------------------------------------------------


def test_cfg_scale_up_to_1_is_served_and_differs_from_guided(server: RunningServer) -> None:
    unguided = invoke(server.url, body(cfg_scale=1))
    zero = invoke(server.url, body(cfg_scale=0))
    guided = invoke(server.url, body(cfg_scale=12))
    assert differ(unguided, zero) <= 1  # both mean "no guidance", as in diffusers
    assert differ(unguided, guided) > 1


# -- 4. step schedule ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.35, 0.5, 0.8])
def test_image_strength_equals_the_step_schedule_it_stands_for(
    server: RunningServer, strength: float
) -> None:
    by_strength = invoke(server.url, body(image_strength=strength))
    by_schedule = invoke(
        server.url,
        body(init_image_mode="STEP_SCHEDULE", step_schedule_start=1 - strength, step_schedule_end=0),
    )
    assert by_strength["base64"] == by_schedule["base64"]


def test_a_schedule_that_ends_early_is_served(server: RunningServer) -> None:
    early = invoke(
        server.url, body(init_image_mode="STEP_SCHEDULE", step_schedule_start=0.9, step_schedule_end=0.4)
    )
    full = invoke(server.url, body(init_image_mode="STEP_SCHEDULE", step_schedule_start=0.9))
    assert early["finishReason"] == "SUCCESS"
    assert differ(early, full) > 1


def test_image_strength_1_returns_the_init_image(server: RunningServer) -> None:
    artifact = invoke(server.url, body(image_strength=1))
    assert np.array_equal(pixels(artifact), np.asarray(Image.open(io.BytesIO(SOURCE)).convert("RGB")))


# -- 5. text-to-image at SDXL's sizes ------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SDXL_SIZES)
def test_text_to_image_at_every_sdxl_size(strict_server: RunningServer, width: int, height: int) -> None:
    payload = {
        "text_prompts": [{"text": "a harbour"}],
        "width": width,
        "height": height,
        "steps": 10,
        "seed": 1,
    }
    artifact = invoke(strict_server.url, payload)
    assert artifact["finishReason"] == "SUCCESS"
    assert pixels(artifact).shape == (height, width, 3)


# -- 6. masks ------------------------------------------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def regenerated_region() -> np.ndarray:
    region = np.zeros((64, 64), dtype=bool)
    region[16:48, 8:40] = True
    return region


def mask_fields(source: str) -> dict[str, Any]:
    region = regenerated_region()
    if source == "MASK_IMAGE_WHITE":
        mask = Image.fromarray(np.where(region, 255, 0).astype(np.uint8), "L")
        return {"mask_source": source, "mask_image": b64(png(mask))}
    if source == "MASK_IMAGE_BLACK":
        mask = Image.fromarray(np.where(region, 0, 255).astype(np.uint8), "L")
        return {"mask_source": source, "mask_image": b64(png(mask))}
    rgba = Image.open(io.BytesIO(SOURCE)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(region, 0, 255).astype(np.uint8), "L"))
    return {"mask_source": source, "init_image": b64(png(rgba))}


@pytest.mark.parametrize("source", ["MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA"])
def test_a_mask_regenerates_only_its_region(server: RunningServer, source: str) -> None:
    artifact = invoke(server.url, body(image_strength=0, **mask_fields(source)))
    image, original = (
        pixels(artifact),
        np.asarray(Image.open(io.BytesIO(SOURCE)).convert("RGB"), dtype=np.int16),
    )
    region = regenerated_region()
    beyond_edge = np.ones_like(region)
    beyond_edge[16 - 4 : 48 + 4, 8 - 4 : 40 + 4] = False  # the soft edge is at most 4 pixels wide
    assert np.array_equal(image[beyond_edge], original[beyond_edge])
    assert np.abs(image[region] - original[region]).mean() > 5


# -- 7. content filter ---------------------------------------------------------------------------------------


def test_a_blocked_term_comes_back_blurred_as_content_filtered(featured_server: RunningServer) -> None:
    owl = invoke(featured_server.url, body(text_prompts=[{"text": "a Barn  Owl, a cat"}]))
    flagged = invoke(featured_server.url, body(text_prompts=[{"text": "a SPIDER and a cat"}]))
    unflagged_twin = invoke(featured_server.url, body(text_prompts=[{"text": "a SPIDERS and a cat"}]))
    assert owl["finishReason"] == "CONTENT_FILTERED"  # "barn owl", whatever the spacing and case
    assert flagged["finishReason"] == "CONTENT_FILTERED"
    assert unflagged_twin["finishReason"] == "SUCCESS"
    assert pixels(flagged).std(axis=(0, 1)).mean() < pixels(unflagged_twin).std(axis=(0, 1)).mean()


def test_a_negative_prompt_may_name_a_blocked_term(featured_server: RunningServer) -> None:
    artifact = invoke(
        featured_server.url, body(text_prompts=[{"text": "a cat"}, {"text": "spider", "weight": -1}])
    )
    assert artifact["finishReason"] == "SUCCESS"


# -- 8. CLIP guidance ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", CLIP_PRESETS)
def test_every_clip_guidance_preset_steers_the_image(featured_server: RunningServer, preset: str) -> None:
    plain = invoke(featured_server.url, body(image_strength=0.2))
    guided = invoke(featured_server.url, body(image_strength=0.2, clip_guidance_preset=preset))
    assert guided["finishReason"] == "SUCCESS"
    assert differ(plain, guided) > 1


def test_clip_guidance_without_a_clip_model_is_refused(server: RunningServer) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(server.url, body(clip_guidance_preset="SIMPLE"))
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "clip_guidance_preset SIMPLE needs a CLIP model" in error["Error"]["Message"]
