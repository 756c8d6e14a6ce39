"""SillyTavern's AUTOMATIC1111 source against a real server, its calls replayed as its source makes them.

At SillyTavern/SillyTavern ba6f7b7a98cf7a5eaf4f0e81da9779a9a668ced4: the browser side
(public/scripts/extensions/stable-diffusion/index.js) posts to SillyTavern's server, whose
src/endpoints/stable-diffusion.js calls A1111: every call with `Authorization: Basic base64(auth)` (auth
'' by default: `Basic ` with nothing after it), `/generate` posting the browser's body itself (its `url` and
`auth` beside A1111's fields), `/interrupt` posted with no body when the page goes away.

The hires fix is checked against a two-pass run of the engine made by hand in this process: the first
pass's latents resized as A1111 resizes them (or its image upscaled on the host), then image-to-image.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import GenerationRequest, InitLatents, Sampler, WeightedPrompt
from sdxl_bedrock.strength import window_steps
from tests.conftest import RunningServer, start_server
from tests.frontends import SILLYTAVERN_TXT2IMG

# getBasicAuthHeader('') in src/util.js is `Basic `; HTTP strips a value's trailing whitespace (RFC 9110's
# OWS), and httpx refuses to send it, so the calls here send `Basic` (the interrupt sends the bytes).
NO_AUTH = {"Authorization": "Basic"}
PROMPT, NEGATIVE = SILLYTAVERN_TXT2IMG["prompt"], SILLYTAVERN_TXT2IMG["negative_prompt"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def tavern_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, outputs: Path
) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("logs"), "--model", "tiny", "--outputs-dir", str(outputs))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def engine(cache_dir: Path) -> Engine:
    return Engine.load("tiny", device="cpu", dtype="float32")


def sd_get(server: RunningServer, path: str) -> Any:
    response = httpx.get(f"{server.url}/sdapi/v1/{path}", headers=NO_AUTH, timeout=60)
    assert response.status_code == 200, response.text  # SillyTavern throws on !result.ok
    return response.json()


def generate_body(**settings: Any) -> dict[str, Any]:
    """generateAutoImage's body with extension_settings.sd's defaults (`seed: undefined` and
    `sd_vae: undefined` drop out of the JSON), `settings` replacing some."""
    return {**SILLYTAVERN_TXT2IMG, **settings}


def generate(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/sdapi/v1/txt2img",
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **NO_AUTH},
        timeout=600,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def first_image(answer: dict[str, Any]) -> Image.Image:
    """What SillyTavern keeps: `data.images[0]`, shown as a PNG."""
    image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
    assert image.format == "PNG"
    return image


def node_fetch_post(server: RunningServer, path: str) -> tuple[int, bytes]:
    """A POST as node-fetch 2 sends one with only an Authorization header: no body, `Content-Length: 0`,
    its own default headers, `Connection: close`; (status, body)."""
    address = urlparse(server.url)
    request = (
        f"POST {path} HTTP/1.1\r\nAuthorization: Basic \r\nAccept: */*\r\nContent-Length: 0\r\n"
        "User-Agent: node-fetch/1.0 (+https://github.com/bitinn/node-fetch)\r\n"
        f"Accept-Encoding: gzip,deflate\r\nConnection: close\r\nHost: {address.netloc}\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=60) as connection:
        connection.sendall(request.encode())
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_connect_sequence(tavern_server: RunningServer) -> None:
    # /ping: the options answer ok; /get-model: their checkpoint.
    assert sd_get(tavern_server, "options")["sd_model_checkpoint"] == "tiny"
    # /upscalers: "None" first, then the latent modes, then the other upscalers.
    upscalers = [x["name"] for x in sd_get(tavern_server, "upscalers")]
    latent = [x["name"] for x in sd_get(tavern_server, "latent-upscale-modes")]
    upscalers[1:1] = latent
    assert upscalers == [
        "None",
        "Latent",
        "Latent (antialiased)",
        "Latent (bicubic)",
        "Latent (bicubic antialiased)",
        "Latent (nearest)",
        "Latent (nearest-exact)",
        "Lanczos",
        "Nearest",
    ]
    # /vaes: model_name of each; the page puts "Automatic" before them.
    assert ["Automatic", *(x["model_name"] for x in sd_get(tavern_server, "sd-vae"))] == ["Automatic", "tiny"]
    assert "DDIM" in [x["name"] for x in sd_get(tavern_server, "samplers")]
    assert [x["name"] for x in sd_get(tavern_server, "schedulers")] == ["automatic", "karras"]
    assert [{"value": x["title"], "text": x["title"]} for x in sd_get(tavern_server, "sd-models")] == [
        {"value": "tiny", "text": "tiny"}
    ]
    # /set-model: the checkpoint posted, then /progress polled until idle.
    response = httpx.post(
        f"{tavern_server.url}/sdapi/v1/options",
        content=json.dumps({"sd_model_checkpoint": "tiny"}),
        headers={"Content-Type": "application/json", **NO_AUTH},
        timeout=60,
    )
    assert response.status_code == 200 and response.json() is None
    progress = sd_get(tavern_server, "progress")
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0


def test_the_default_txt2img_is_saved_as_a1111_saves_it(tavern_server: RunningServer, outputs: Path) -> None:
    answer = generate(tavern_server, generate_body(width=64, height=64, steps=4, seed=77))
    image = first_image(answer)
    assert image.size == (64, 64)
    info = json.loads(answer["info"])
    assert info["all_seeds"] == [77] and info["clip_skip"] == 1
    (saved,) = info["saved_images"]
    assert saved.startswith("txt2img-images/") and saved.endswith("/00000-77.png")
    with Image.open(outputs / saved) as written:
        assert written.info["parameters"] == info["infotexts"][0] == image.info["parameters"]
        assert "Steps: 4, Sampler: DDIM, Schedule type: normal, CFG scale: 7" in written.info["parameters"]
        assert np.array_equal(pixels(written), pixels(image))
    again = json.loads(generate(tavern_server, generate_body(width=64, height=64, steps=4, seed=78))["info"])
    assert again["saved_images"][0].endswith("/00001-78.png")


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos"])
def test_the_hires_fix_is_the_engines_two_passes(
    tavern_server: RunningServer, engine: Engine, upscaler: str
) -> None:
    settings = {"width": 64, "height": 64, "steps": 6, "seed": 5, "enable_hr": True, "hr_upscaler": upscaler}
    answer = generate(tavern_server, generate_body(**settings))
    image = first_image(answer)
    assert image.size == (128, 128)
    info = json.loads(answer["info"])
    assert (info["width"], info["height"]) == (64, 64)
    assert f"Hires upscale: 2.0, Hires upscaler: {upscaler}" in info["infotexts"][0]
    # By hand: the first pass, then the last 6 steps of an int(6 / 0.7) = 8-step schedule from its result.
    prompts = (WeightedPrompt(PROMPT, 1.0),), (WeightedPrompt(NEGATIVE, 1.0),)
    base = GenerationRequest(
        *prompts, width=64, height=64, seed=5, steps=6, cfg_scale=7, sampler=Sampler.DDIM
    )
    assert window_steps(8, 6 / 8, 0.0) == (2, 8)
    second = GenerationRequest(
        *prompts,
        width=128,
        height=128,
        seed=5,
        steps=8,
        cfg_scale=7,
        sampler=Sampler.DDIM,
        denoise_from=6 / 8,
    )
    if upscaler == "Lanczos":
        (first,) = engine.generate([base])
        upscaled = first.image.resize((128, 128), Image.Resampling.LANCZOS)
        (expected,) = engine.generate([GenerationRequest(**{**vars(second), "init_image": upscaled})])
    else:
        (first,) = engine.generate([GenerationRequest(**{**vars(base), "return_latents": True})])
        mode, antialias = ("bicubic", True) if "bicubic" in upscaler else ("bilinear", False)
        latents = torch.nn.functional.interpolate(
            torch.as_tensor(first.latents), size=(16, 16), mode=mode, antialias=antialias
        )
        (expected,) = engine.generate(
            [GenerationRequest(**{**vars(second), "init_latents": InitLatents(latents)})]
        )
    assert np.abs(pixels(image) - pixels(expected.image)).max() <= 1


def test_the_hires_fix_with_a_resize_and_its_own_steps(tavern_server: RunningServer) -> None:
    body = generate_body(
        width=64,
        height=64,
        steps=4,
        seed=6,
        enable_hr=True,
        hr_resize_x=128,
        hr_resize_y=96,
        hr_second_pass_steps=3,
        save_images=False,
    )
    answer = generate(tavern_server, body)
    assert first_image(answer).size == (128, 96)
    info = json.loads(answer["info"])
    assert "Hires resize: 128x96, Hires steps: 3, Hires upscaler: Latent" in info["infotexts"][0]
    assert "saved_images" not in info


def test_the_interrupt_when_the_page_goes_away(tavern_server: RunningServer) -> None:
    body = generate_body(width=64, height=64, steps=150, seed=9, enable_hr=True)
    with ThreadPoolExecutor(1) as pool:
        work = pool.submit(generate, tavern_server, body)
        while not work.done():
            progress = sd_get(tavern_server, "progress")
            if progress["state"]["sampling_step"] > 0:
                break
            time.sleep(0.05)  # only to leave the CPU to the server
        assert progress["state"]["job_count"] == 2, "the hires fix's two passes are two jobs, as in A1111"
        status, answer_body = node_fetch_post(tavern_server, "/sdapi/v1/interrupt")
        assert (status, json.loads(answer_body)) == (200, {})
        answer = work.result()
    # Interrupted in its first pass: the first pass's image, as A1111's sample_hr_pass returns it.
    assert first_image(answer).size == (64, 64)
    info = json.loads(answer["info"])
    assert info["saved_images"] == [] and "interrupted" in info["comments"]
