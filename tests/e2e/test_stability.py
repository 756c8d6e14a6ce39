"""The Stability v1 face on a real server, through plain httpx: JSON and multipart in, JSON or PNG out."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock.engine.masking import EDGE_RADIUS
from tests.conftest import RunningServer, gradient_png, start_server

ENGINE = "stable-diffusion-xl-1024-v1-0"
TEXT_TO_IMAGE = f"/v1/generation/{ENGINE}/text-to-image"
IMAGE_TO_IMAGE = f"/v1/generation/{ENGINE}/image-to-image"
MASKING = f"/v1/generation/{ENGINE}/image-to-image/masking"
SIZES = "1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216, 896x1152"
API_KEY = "sk-stability-test"
TIMEOUT = 120


def small_text_to_image(**fields: Any) -> dict[str, Any]:
    return {"text_prompts": [{"text": "a lighthouse"}], "width": 64, "height": 64, "steps": 10, **fields}


def small_form(**fields: str) -> dict[str, str]:
    return {"text_prompts[0][text]": "a lighthouse", "steps": "10", **fields}


def init_image_file(width: int = 64, height: int = 64) -> dict[str, tuple[str, bytes, str]]:
    return {"init_image": ("init.png", gradient_png(width, height), "image/png")}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def decoded(artifact: dict[str, Any]) -> np.ndarray:
    return pixels(base64.b64decode(artifact["base64"]))


def assert_stability_error(
    response: httpx.Response, status: int, name: str, message: str | None = None
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"id", "name", "message"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["name"] == name
    if message is not None:
        assert body["message"] == message


# ---- engines ---------------------------------------------------------------------------------------------


def test_the_engine_list_names_sdxl_1(server: RunningServer) -> None:
    response = httpx.get(server.url + "/v1/engines/list")
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": ENGINE,
            "name": "Stable Diffusion XL v1.0",
            "description": "Stability-AI Stable Diffusion XL v1.0",
            "type": "PICTURE",
        }
    ]


@pytest.mark.parametrize("path", [TEXT_TO_IMAGE, IMAGE_TO_IMAGE, MASKING])
def test_another_engine_is_not_found(server: RunningServer, path: str) -> None:
    response = httpx.post(server.url + path.replace(ENGINE, "stable-diffusion-v1-6"), json={})
    assert_stability_error(
        response, 404, "not_found", "The specified engine (ID stable-diffusion-v1-6) was not found."
    )


def test_an_unknown_v1_route_is_not_found_in_stabilitys_shape(server: RunningServer) -> None:
    response = httpx.get(server.url + "/v1/user/balance")
    assert_stability_error(response, 404, "not_found")


# ---- text-to-image ---------------------------------------------------------------------------------------


def test_text_to_image_answers_json_artifacts(server: RunningServer) -> None:
    response = httpx.post(server.url + TEXT_TO_IMAGE, json=small_text_to_image(seed=11), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["artifacts"]
    (artifact,) = body["artifacts"]
    assert set(artifact) == {"base64", "seed", "finishReason"}
    assert (artifact["seed"], artifact["finishReason"]) == (11, "SUCCESS")
    assert decoded(artifact).shape == (64, 64, 3)


def test_text_to_image_answers_png_with_seed_and_finish_reason_headers(server: RunningServer) -> None:
    response = httpx.post(
        server.url + TEXT_TO_IMAGE,
        json=small_text_to_image(width=128),
        headers={"accept": "image/png"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["finish-reason"] == "SUCCESS"
    assert 1 <= int(response.headers["seed"]) <= 4294967295  # seed 0: picked at random, and reported
    assert pixels(response.content).shape == (64, 128, 3)


def test_three_samples_are_three_images_with_consecutive_seeds(server: RunningServer) -> None:
    response = httpx.post(
        server.url + TEXT_TO_IMAGE, json=small_text_to_image(seed=500, samples=3), timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    artifacts = response.json()["artifacts"]
    assert [a["seed"] for a in artifacts] == [500, 501, 502]
    images = [decoded(a) for a in artifacts]
    for first in range(3):
        for second in range(first + 1, 3):
            assert np.abs(images[first] - images[second]).mean() > 5


def test_each_samples_seed_reproduces_its_image_alone(server: RunningServer) -> None:
    many = httpx.post(
        server.url + TEXT_TO_IMAGE, json=small_text_to_image(seed=900, samples=2), timeout=TIMEOUT
    )
    alone = httpx.post(server.url + TEXT_TO_IMAGE, json=small_text_to_image(seed=901), timeout=TIMEOUT)
    second, (again,) = many.json()["artifacts"][1], alone.json()["artifacts"]
    assert second["seed"] == again["seed"] == 901
    # A batch of two and a batch of one round a few values differently; the picture is the same.
    assert np.abs(decoded(second) - decoded(again)).max() <= 2


def test_several_samples_cannot_be_one_png(server: RunningServer) -> None:
    response = httpx.post(
        server.url + TEXT_TO_IMAGE,
        json=small_text_to_image(samples=2),
        headers={"accept": "image/png"},
        timeout=TIMEOUT,
    )
    assert_stability_error(
        response,
        400,
        "invalid_samples",
        "Sample count may only be greater than 1 when the accept header is set to application/json",
    )


# ---- image-to-image --------------------------------------------------------------------------------------


def test_image_to_image_form_answers_json(server: RunningServer) -> None:
    response = httpx.post(
        server.url + IMAGE_TO_IMAGE,
        files=init_image_file(128, 64),
        data=small_form(
            **{"text_prompts[1][text]": "blurry", "text_prompts[1][weight]": "-1"},
            image_strength="0.4",
            seed="3",
            samples="2",
        ),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    artifacts = response.json()["artifacts"]
    assert [a["seed"] for a in artifacts] == [3, 4]
    assert all(decoded(a).shape == (64, 128, 3) for a in artifacts)


def test_image_to_image_form_answers_png(server: RunningServer) -> None:
    response = httpx.post(
        server.url + IMAGE_TO_IMAGE,
        files=init_image_file(),
        data=small_form(init_image_mode="STEP_SCHEDULE", step_schedule_start="0.7", seed="77"),
        headers={"accept": "image/png"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert (response.headers["seed"], response.headers["finish-reason"]) == ("77", "SUCCESS")
    assert pixels(response.content).shape == (64, 64, 3)


def half_mask_png() -> bytes:
    """A 64x64 "L" mask, black on the left half and white on the right half."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


# Columns well clear of the mask's edge at x = 32, where the pasted-back original is blended in.
LEFT, RIGHT = slice(0, 32 - EDGE_RADIUS), slice(32 + EDGE_RADIUS, 64)


@pytest.mark.parametrize(
    ("mask_source", "kept", "regenerated"),
    [("MASK_IMAGE_WHITE", LEFT, RIGHT), ("MASK_IMAGE_BLACK", RIGHT, LEFT)],
)
def test_masking_regenerates_only_the_masked_half(
    server: RunningServer, mask_source: str, kept: slice, regenerated: slice
) -> None:
    response = httpx.post(
        server.url + MASKING,
        files={**init_image_file(), "mask_image": ("mask.png", half_mask_png(), "image/png")},
        data=small_form(mask_source=mask_source, seed="3"),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    image, original = decoded(response.json()["artifacts"][0]), pixels(gradient_png(64, 64))
    assert image.shape == original.shape
    assert np.array_equal(image[:, kept], original[:, kept]), "pixels outside the mask must be kept exactly"
    assert np.abs(image[:, regenerated] - original[:, regenerated]).mean() > 5, "the masked half is unchanged"


# ---- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (small_text_to_image(cfg_scale=99), "cfg_scale: 99 is not less or equal to 35"),
        (small_text_to_image(steps=151), "steps: 151 is not less or equal to 150"),
        (small_text_to_image(samples=11), "samples: 11 is not less or equal to 10"),
        (
            small_text_to_image(text_prompts=[{"text": "a" * 2001}]),
            "text_prompts[0][text]: expected maxLength: 2000, actual: 2001",
        ),
        (small_text_to_image(colour="red"), "extraneous key [colour] is not permitted"),
        ({"steps": 10}, "required key [text_prompts] not found"),
    ],
)
def test_bad_json_fields_are_bad_requests_naming_the_field(
    server: RunningServer, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(server.url + TEXT_TO_IMAGE, json=body, timeout=TIMEOUT)
    assert_stability_error(response, 400, "bad_request", message)


def test_a_body_that_is_not_json_is_a_bad_request(server: RunningServer) -> None:
    response = httpx.post(server.url + TEXT_TO_IMAGE, content=b"{not json", timeout=TIMEOUT)
    assert_stability_error(response, 400, "bad_request")
    assert response.json()["message"].startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        (small_form(steps="many"), init_image_file(), "steps: many is not an Integer"),
        (small_form(height="64"), init_image_file(), "extraneous key [height] is not permitted"),
        # Fields sent as multipart parts without a file name: a multipart body holding no file.
        (
            {},
            {name: (None, value) for name, value in small_form().items()},
            "required key [init_image] not found",
        ),
        (
            small_form(init_image="aGVsbG8="),
            {"other": ("x.png", b"x", "image/png")},
            "extraneous file [other] is not permitted",
        ),
    ],
)
def test_bad_form_fields_are_bad_requests_naming_the_field(
    server: RunningServer, data: dict[str, str], files: dict[str, Any], message: str
) -> None:
    response = httpx.post(server.url + IMAGE_TO_IMAGE, data=data, files=files, timeout=TIMEOUT)
    assert_stability_error(response, 400, "bad_request", message)


def test_image_to_image_needs_a_multipart_body(server: RunningServer) -> None:
    response = httpx.post(
        server.url + IMAGE_TO_IMAGE, json={"text_prompts": [{"text": "a"}]}, timeout=TIMEOUT
    )
    assert_stability_error(
        response, 400, "bad_request", "expected a multipart/form-data body, found application/json"
    )


def test_an_accept_type_we_cannot_answer_is_a_bad_request(server: RunningServer) -> None:
    response = httpx.post(
        server.url + TEXT_TO_IMAGE,
        json=small_text_to_image(),
        headers={"accept": "image/jpeg"},
        timeout=TIMEOUT,
    )
    assert_stability_error(response, 400, "bad_request")


def test_sizes_off_the_relaxed_grid_are_invalid_image_dimensions(server: RunningServer) -> None:
    response = httpx.post(server.url + TEXT_TO_IMAGE, json=small_text_to_image(width=100), timeout=TIMEOUT)
    assert_stability_error(
        response,
        400,
        "invalid_image_dimensions",
        "the allowed dimensions are multiples of 64 between 64 and 2048, but we received 100x64",
    )


@pytest.mark.parametrize("path", [TEXT_TO_IMAGE, IMAGE_TO_IMAGE])
def test_sizes_outside_sdxls_nine_are_invalid_sdxl_v1_dimensions(
    strict_server: RunningServer, path: str
) -> None:
    if path == TEXT_TO_IMAGE:
        response = httpx.post(strict_server.url + path, json=small_text_to_image(), timeout=TIMEOUT)
    else:
        response = httpx.post(
            strict_server.url + path, data=small_form(), files=init_image_file(), timeout=TIMEOUT
        )
    assert_stability_error(
        response,
        400,
        "invalid_sdxl_v1_dimensions",
        f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {SIZES}, but we received 64x64",
    )


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        (
            small_form(mask_source="MASK_IMAGE_BLACK"),
            init_image_file(),
            "required key [mask_image] not found",
        ),
        (
            small_form(mask_source="MASK_IMAGE_WHITE"),
            {**init_image_file(), "mask_image": ("m.png", gradient_png(128, 64, "L"), "image/png")},
            "mask_image: the mask is 128x64 but init_image is 64x64; they must be the same size",
        ),
        (
            small_form(mask_source="INIT_IMAGE_ALPHA"),
            init_image_file(),
            "init_image: mask_source INIT_IMAGE_ALPHA needs an image with an alpha channel",
        ),
    ],
)
def test_mask_problems_are_invalid_mask_image(
    server: RunningServer, data: dict[str, str], files: dict[str, Any], message: str
) -> None:
    response = httpx.post(server.url + MASKING, data=data, files=files, timeout=TIMEOUT)
    assert_stability_error(response, 400, "invalid_mask_image", message)


def test_an_undecodable_init_image_is_named(server: RunningServer) -> None:
    response = httpx.post(
        server.url + IMAGE_TO_IMAGE,
        data=small_form(),
        files={"init_image": ("init.png", b"not a picture", "image/png")},
        timeout=TIMEOUT,
    )
    assert_stability_error(
        response,
        400,
        "invalid_image",
        "init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
    )


# ---- API keys and a full queue ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """API keys on, and a queue of 2 so that 3 samples can never be admitted."""
    running = start_server(
        tmp_path_factory.mktemp("logs"), "--relaxed-sizes", "--api-key", API_KEY, "--max-queue", "2"
    )
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("headers", "status", "name"),
    [
        ({}, 401, "unauthorized"),
        ({"authorization": "Bearer sk-wrong"}, 403, "permission_denied"),
        ({"authorization": f"Basic {API_KEY}"}, 403, "permission_denied"),
    ],
)
def test_api_keys_are_checked_before_the_body(
    keyed_server: RunningServer, headers: dict[str, str], status: int, name: str
) -> None:
    for path in ("/v1/engines/list", TEXT_TO_IMAGE, IMAGE_TO_IMAGE, MASKING):
        # A body that would be a 400 proves that the key was checked first.
        response = httpx.request(
            "GET" if path.endswith("list") else "POST",
            keyed_server.url + path,
            content=b"{not json",
            headers=headers,
            timeout=TIMEOUT,
        )
        assert_stability_error(response, status, name)


def test_the_right_key_is_served(keyed_server: RunningServer) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    assert httpx.get(keyed_server.url + "/v1/engines/list", headers=headers).status_code == 200
    response = httpx.post(
        keyed_server.url + TEXT_TO_IMAGE, json=small_text_to_image(), headers=headers, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text


def test_samples_beyond_the_queues_room_are_rate_limited(keyed_server: RunningServer) -> None:
    response = httpx.post(
        keyed_server.url + TEXT_TO_IMAGE,
        json=small_text_to_image(samples=3),
        headers={"authorization": f"Bearer {API_KEY}"},
        timeout=TIMEOUT,
    )
    assert_stability_error(response, 429, "rate_limit_exceeded")
