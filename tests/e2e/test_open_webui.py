"""Open WebUI's image engines against a real server, its calls replayed as its source makes them.

backend/open_webui/routers/images.py at open-webui/open-webui 02530d501461ce58ab06231d7c2ef2024a141ddf,
with backend/open_webui/config.py's defaults (IMAGE_SIZE 512x512, IMAGE_STEPS 50, the model '' that
get_image_model turns into dall-e-2, IMAGE_URL_RESPONSE_MODELS_REGEX_PATTERN '^gpt-image'):

- the OpenAI engine: POST {base}/images/generations with `model`, `prompt`, `n`, `size`, and
  `response_format: b64_json` unless the configured model matches '^gpt-image', plus IMAGES_OPENAI_API_PARAMS;
  it reads `data[i].url` or `data[i].b64_json`. Its models are built in (dall-e-2, dall-e-3, gpt-image-1,
  gpt-image-1.5); it never calls /v1/models. Edits: a multipart form of the same fields and the images as
  `image[]` parts when there are several.
- the AUTOMATIC1111 engine: GET /sdapi/v1/options (verify, get_image_model), GET /sdapi/v1/sd-models, the
  options posted back with the checkpoint changed (set_image_model), POST /sdapi/v1/txt2img with `prompt`,
  `batch_size`, `width`, `height`, `steps`; it reads `images` and `info`. Without credentials it sends an
  empty `authorization` header.

The server has SDXL's own size rule (no --relaxed-sizes), so OpenAI's sizes other than SDXL's are made at
the nearest SDXL size and resized.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import RunningServer, gradient_png, start_server

# IMAGES_OPENAI_API_KEY is '' until an admin sets one: `Bearer `, whose trailing space HTTP strips (RFC 9110's
# OWS) and httpx refuses to send.
OPENAI_KEY = {"Authorization": "Bearer"}


@pytest.fixture(scope="module")
def webui_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("logs"), "--model", "tiny")
    yield running
    running.stop()


def image_of(entry: dict[str, Any], server: RunningServer) -> Image.Image:
    """get_image_data: a `url` is fetched, else `b64_json` decoded."""
    if url := entry.get("url"):
        response = httpx.get(url, timeout=60)
        assert response.status_code == 200 and response.headers["content-type"].split("/")[0] == "image"
        return Image.open(io.BytesIO(response.content))
    return Image.open(io.BytesIO(base64.b64decode(entry["b64_json"])))


def openai_generation(server: RunningServer, model: str, size: str, **params: Any) -> httpx.Response:
    data: dict[str, Any] = {"model": model, "prompt": "a lighthouse at dusk", "n": 1, "size": size}
    if not model.startswith("gpt-image"):
        data["response_format"] = "b64_json"
    data.update(params)  # IMAGES_OPENAI_API_PARAMS
    return httpx.post(
        f"{server.url}/v1/images/generations",
        json=data,
        headers={**OPENAI_KEY, "Content-Type": "application/json"},
        timeout=600,
    )


@pytest.mark.parametrize(
    ("model", "size", "params", "expected"),
    [
        ("dall-e-2", "512x512", {}, (512, 512)),  # Open WebUI's defaults
        ("dall-e-3", "1024x1024", {}, (1024, 1024)),
        ("gpt-image-1", "auto", {"quality": "low"}, (1024, 1024)),
        ("gpt-image-1.5", "1536x1024", {"quality": "low"}, (1536, 1024)),
    ],
)
def test_the_openai_engine_with_each_built_in_model(
    webui_server: RunningServer, model: str, size: str, params: dict[str, Any], expected: tuple[int, int]
) -> None:
    response = openai_generation(webui_server, model, size, **params)
    assert response.status_code == 200, response.text
    assert response.headers["x-checkpoint"] == "tiny"
    (entry,) = response.json()["data"]
    image = image_of(entry, webui_server)
    assert image.size == expected and image.format == "PNG"


def test_a_size_a_model_does_not_make_is_openais_400(webui_server: RunningServer) -> None:
    response = openai_generation(webui_server, "gpt-image-1", "512x512")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("size", "invalid_value")


def test_the_openai_engine_edits_several_images(webui_server: RunningServer) -> None:
    """image_edits with IMAGE_EDIT_MODEL gpt-image-1 and two images of the chat: one `image[]` part each,
    named by a fresh uuid, no response_format."""
    images = [gradient_png(64, 64), gradient_png(64, 96)]
    form = {"model": "gpt-image-1", "prompt": "make it snow", "n": "1", "quality": "low"}
    files = [("image[]", (f"{uuid.uuid4()}.png", io.BytesIO(data), "image/png")) for data in images]
    response = httpx.post(
        f"{webui_server.url}/v1/images/edits", data=form, files=files, headers=OPENAI_KEY, timeout=600
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["data"]) == 2 and answer["size"] == "1024x1024"
    assert [image_of(entry, webui_server).size for entry in answer["data"]] == [(1024, 1024)] * 2


def test_the_automatic1111_engine(webui_server: RunningServer) -> None:
    no_auth = {"authorization": ""}  # get_automatic1111_api_auth with AUTOMATIC1111_API_AUTH unset
    base = f"{webui_server.url}/sdapi/v1"
    options = httpx.get(f"{base}/options", headers=no_auth, timeout=60)
    assert options.status_code == 200
    models = httpx.get(f"{base}/sd-models", headers=no_auth, timeout=60).json()
    assert [{"id": m["title"], "name": m["model_name"]} for m in models] == [{"id": "tiny", "name": "tiny"}]
    # set_image_model: the options it read, posted back with the checkpoint it was given.
    posted = {**options.json(), "sd_model_checkpoint": "tiny"}
    assert httpx.post(f"{base}/options", json=posted, headers=no_auth, timeout=60).status_code == 200
    data = {"prompt": "a lighthouse at dusk", "batch_size": 1, "width": 512, "height": 512, "steps": 50}
    response = httpx.post(f"{base}/txt2img", json=data, headers=no_auth, timeout=600)
    assert response.status_code == 200, response.text
    answer = response.json()
    (encoded,) = answer["images"]
    assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (512, 512)
    assert json.loads(answer["info"])["steps"] == 50
