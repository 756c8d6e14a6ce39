"""The OpenAI Images API face on a real server, through OpenAI's own Python SDK (the version pyproject pins):
generations, edits, variations, url images, models, keys, errors and batching."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import schemathesis
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from sdxl_bedrock.api.openai.mapping import MODEL_ID
from sdxl_bedrock.api.validation import SDXL_V1_SIZES
from sdxl_bedrock.engine.masking import EDGE_RADIUS
from tests.conftest import RunningServer, gradient_png, start_server

TIMEOUT = 300
API_KEY = "sk-openai-test"
STRICT_SIZES = (
    "'1024x1024', '1152x896', '1216x832', '1344x768', '1536x640', '640x1536', '768x1344', '832x1216', "
    "'896x1152', and 'auto'"
)
IMAGE_NAME = re.compile(r"/v1/images/files/[A-Za-z0-9_-]{43}\.(png|jpeg|webp)")
# The SDK marks the variations endpoint deprecated (OpenAI retired it); this server still serves it.
VARIATION_DEPRECATED = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


def client_for(server: RunningServer, api_key: str = "unused") -> openai.OpenAI:
    # No retries: a refusal must reach the test as it was sent.
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with client_for(server) as made:
        yield made


@pytest.fixture(scope="module")
def strict_client(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[openai.OpenAI]:
    """SDXL's nine sizes only, and one place in the queue: a request for 2 images is refused at admission,
    after every check of its body, so a size is seen accepted without making megapixel images on a CPU."""
    running = start_server(tmp_path_factory.mktemp("logs"), "--max-queue", "1")
    with client_for(running) as made:
        yield made
    running.stop()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def decoded(image: Any) -> np.ndarray:
    return pixels(base64.b64decode(image.b64_json))


def seed_of(image: Any) -> int:
    return int(image.model_extra["seed"])


def file_tuple(data: bytes, name: str = "image.png") -> tuple[str, bytes, str]:
    return (name, data, "image/png")


def half_transparent_mask(width: int = 64, height: int = 64) -> bytes:
    """Opaque on the left half, fully transparent (to be regenerated) on the right half."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def assert_openai_error(
    error: openai.APIStatusError, status: int, code: str | None, param: str | None
) -> None:
    assert error.status_code == status
    assert isinstance(error.body, dict) and set(error.body) == {"message", "type", "param", "code"}
    assert (error.code, error.param) == (code, param)


# ---- generations ------------------------------------------------------------------------------------------


def test_generate_answers_b64_json_images_with_consecutive_seeds(client: openai.OpenAI) -> None:
    response = client.images.generate(
        prompt="a lighthouse", n=2, size="64x64", quality="low", extra_body={"seed": 100}
    )
    assert response.size == "64x64" and response.quality == "low" and response.output_format == "png"
    assert response.background == "opaque" and response.created > 1_700_000_000
    assert response.data is not None and len(response.data) == 2
    assert [seed_of(image) for image in response.data] == [100, 101]
    first, second = (decoded(image) for image in response.data)
    assert first.shape == second.shape == (64, 64, 3)
    assert np.abs(first - second).mean() > 5, "two samples must be two images"
    assert all(image.url is None and image.revised_prompt is None for image in response.data)


def test_generate_answers_urls_served_without_a_key_for_an_hour(
    client: openai.OpenAI, server: RunningServer
) -> None:
    response = client.images.generate(
        prompt="a lighthouse", n=2, size="128x64", quality="low", response_format="url"
    )
    assert response.data is not None and len(response.data) == 2
    for image in response.data:
        assert image.b64_json is None and image.url is not None
        assert image.url.startswith(server.url) and IMAGE_NAME.fullmatch(image.url.removeprefix(server.url))
        served = httpx.get(image.url, timeout=30)
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        max_age = int(served.headers["cache-control"].removeprefix("private, max-age="))
        assert 3000 < max_age <= 3600
        assert pixels(served.content).shape == (64, 128, 3)
    assert response.data[0].url != response.data[1].url
    missing = httpx.get(server.url + "/v1/images/files/" + "A" * 43 + ".png", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "The image has expired or does not exist."


@pytest.mark.parametrize(("output_format", "pillow_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_generate_encodes_jpeg_and_webp(
    client: openai.OpenAI, output_format: Any, pillow_format: str
) -> None:
    response = client.images.generate(
        prompt="a lighthouse", size="64x64", quality="low", output_format=output_format, output_compression=60
    )
    assert response.output_format == output_format and response.data is not None
    with Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json or ""))) as image:
        assert (image.format, image.size) == (pillow_format, (64, 64))


def test_style_vivid_revises_the_prompt(client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="a lighthouse", size="64x64", quality="low", style="vivid")
    assert response.data is not None
    assert response.data[0].revised_prompt == (
        "breathtaking a lighthouse . award-winning, professional, highly detailed"
    )


def test_the_same_seed_makes_the_same_image(client: openai.OpenAI) -> None:
    def images(seed: int, n: int) -> list[np.ndarray]:
        response = client.images.generate(
            prompt="a kite", size="64x64", quality="low", n=n, extra_body={"seed": seed}
        )
        assert response.data is not None and [seed_of(i) for i in response.data] == list(
            range(seed, seed + n)
        )
        return [decoded(i) for i in response.data]

    (alone,), (first, second) = images(77, 1), images(77, 2)
    # A batch of one and a batch of two round a few values differently; the picture is the same.
    assert np.abs(alone - first).max() <= 2
    assert np.abs(first - second).mean() > 5, "the next seed makes another image"


@pytest.mark.parametrize("size", [*(f"{w}x{h}" for w, h in SDXL_V1_SIZES), "auto"])
def test_every_sdxl_size_and_auto_pass_validation(strict_client: openai.OpenAI, size: Any) -> None:
    with pytest.raises(openai.RateLimitError) as refused:
        strict_client.images.generate(prompt="a lighthouse", size=size, n=2)
    assert_openai_error(refused.value, 429, "rate_limit_exceeded", None)


@pytest.mark.slow
def test_auto_makes_a_1024_square(strict_client: openai.OpenAI) -> None:
    response = strict_client.images.generate(prompt="a lighthouse", size="auto", quality="low")
    assert response.size == "1024x1024" and response.data is not None
    assert decoded(response.data[0]).shape == (1024, 1024, 3)


def test_a_size_outside_sdxls_nine_is_a_bad_request_listing_them(strict_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        strict_client.images.generate(prompt="a lighthouse", size="512x512")
    assert_openai_error(refused.value, 400, "invalid_value", "size")
    assert refused.value.body == {
        "message": f"Invalid value: '512x512'. Supported values are: {STRICT_SIZES}.",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_value",
    }


def test_bad_fields_are_bad_requests_naming_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a lighthouse", n=11)
    assert_openai_error(refused.value, 400, "integer_above_max_value", "n")
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a lighthouse", partial_images=2)
    assert_openai_error(refused.value, 400, "unsupported_parameter", "partial_images")
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a lighthouse", quality="xhigh")
    assert_openai_error(refused.value, 400, "invalid_value", "quality")


def test_another_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        client.images.generate(prompt="a lighthouse", model="dall-e-4")
    assert_openai_error(refused.value, 404, "model_not_found", None)
    # The SDK puts our message in its own.
    assert refused.value.message == (
        "Error code: 404 - The model `dall-e-4` does not exist or you do not have access to it."
    )


# ---- edits and variations ---------------------------------------------------------------------------------

# Columns well clear of the mask's edge at x = 32, where the pasted-back original is blended in.
KEPT, REGENERATED = slice(0, 32 - EDGE_RADIUS), slice(32 + EDGE_RADIUS, 64)


def test_a_masked_edit_regenerates_only_the_transparent_half(client: openai.OpenAI) -> None:
    original = gradient_png(64, 64)
    response = client.images.edit(
        image=file_tuple(original),
        mask=file_tuple(half_transparent_mask(), "mask.png"),
        prompt="a red door",
        quality="low",
        extra_body={"seed": 3},
    )
    assert response.size == "64x64" and response.data is not None
    image, before = decoded(response.data[0]), pixels(original)
    assert np.array_equal(image[:, KEPT], before[:, KEPT]), "pixels outside the mask must be kept exactly"
    assert np.abs(image[:, REGENERATED] - before[:, REGENERATED]).mean() > 5, "the masked half is unchanged"


def test_an_edit_without_mask_changes_the_whole_image(client: openai.OpenAI) -> None:
    original = gradient_png(128, 64)
    response = client.images.edit(
        image=[file_tuple(original)], prompt="a red door", quality="low", n=2, response_format="b64_json"
    )
    assert response.size == "128x64" and response.data is not None and len(response.data) == 2
    for image in response.data:
        changed = decoded(image)
        assert changed.shape == (64, 128, 3)
        assert np.abs(changed - pixels(original)).mean() > 5


def test_an_edit_takes_one_image(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(image=[file_tuple(gradient_png(64, 64))] * 2, prompt="a red door")
    assert_openai_error(refused.value, 400, "invalid_value", "image")
    assert isinstance(refused.value.body, dict)
    assert (
        refused.value.body["message"]
        == "Invalid 'image': this model edits one image per request, but 2 were sent."
    )


def test_an_edits_mask_must_match_the_image(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(
            image=file_tuple(gradient_png(64, 64)),
            mask=file_tuple(half_transparent_mask(128, 64), "mask.png"),
            prompt="a red door",
        )
    assert_openai_error(refused.value, 400, "invalid_value", "mask")


@VARIATION_DEPRECATED
def test_variations_are_the_images_size_with_their_own_seeds(client: openai.OpenAI) -> None:
    original = gradient_png(64, 128)
    response = client.images.create_variation(image=file_tuple(original), n=2, extra_body={"seed": 5})
    assert response.size == "64x128" and response.quality is None and response.data is not None
    assert [seed_of(image) for image in response.data] == [5, 6]
    first, second = (decoded(image) for image in response.data)
    assert first.shape == (128, 64, 3)
    assert np.abs(first - second).mean() > 1
    assert np.abs(first - pixels(original)).mean() > 5


def test_forms_must_be_multipart(server: RunningServer) -> None:
    response = httpx.post(server.url + "/v1/images/edits", json={"prompt": "a"}, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Expected a multipart/form-data body, found application/json."
    )


# ---- models and paths -------------------------------------------------------------------------------------


def test_models_lists_and_retrieves_ours(client: openai.OpenAI) -> None:
    model, *openais = client.models.list().data
    assert (model.id, model.object, model.owned_by, model.created) == (
        MODEL_ID,
        "model",
        "stabilityai",
        1690329600,
    )
    assert [m.id for m in openais] == [
        "dall-e-2",
        "dall-e-3",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "tiny",  # the checkpoint's own name: the model library's (docs/MODELS.md)
    ]
    assert client.models.retrieve(MODEL_ID) == model
    assert client.models.retrieve("gpt-image-1").id == "gpt-image-1"
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("gpt-image-9")
    assert_openai_error(refused.value, 404, "model_not_found", None)


def test_unknown_paths_under_ours_are_openais_404(server: RunningServer) -> None:
    for path in ("/v1/images/nothing", "/v1/models/a/b"):
        response = httpx.get(server.url + path, timeout=30)
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    # Beside it, Stability's /v1/ keeps its own shape.
    assert set(httpx.get(server.url + "/v1/user/balance", timeout=30).json()) == {"id", "name", "message"}


# ---- keys, the queue, batching: one server with keys, 4 places in the queue, batches of 4 ------------------


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """API keys on; a batch fills at 4 rows and an idle engine waits up to a minute for them, so that the 4
    samples of one request surely join together; 4 places in the queue; -v logs the user ids."""
    running = start_server(
        tmp_path_factory.mktemp("logs"),
        *("--relaxed-sizes", "-v", "--api-key", API_KEY),
        *("--max-batch-size", "4", "--max-wait-ms", "60000", "--max-queue", "4"),
    )
    yield running
    running.stop()


def rows_per_tick(server: RunningServer) -> dict[float, float]:
    """sdxl_rows_per_tick's cumulative buckets: upper bound -> ticks with at most that many rows."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    (family,) = (
        family for family in text_string_to_metric_families(text) if family.name == "sdxl_rows_per_tick"
    )
    return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}


def test_a_wrong_key_is_an_authentication_error(batch_server: RunningServer) -> None:
    image = file_tuple(gradient_png(64, 64))
    with client_for(batch_server, "sk-wrong") as client:
        calls = (
            lambda: client.images.generate(prompt="a lighthouse", size="64x64"),
            lambda: client.images.edit(image=image, prompt="a red door"),
            lambda: client.models.list(),
        )
        for call in calls:
            with pytest.raises(openai.AuthenticationError) as refused:
                call()
            assert_openai_error(refused.value, 401, "invalid_api_key", None)
            assert refused.value.body == {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }


def test_a_missing_key_is_401_before_the_body_is_read(batch_server: RunningServer) -> None:
    # The SDK never sends a request without a key; other clients do.
    for method, path in (
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/images/variations"),
        ("GET", "/v1/models"),
        ("GET", f"/v1/models/{MODEL_ID}"),
    ):
        response = httpx.request(method, batch_server.url + path, content=b"{not json", timeout=30)
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)
        assert error["message"].startswith("You didn't provide an API key.")


def test_four_images_are_made_in_one_batch(batch_server: RunningServer) -> None:
    before = rows_per_tick(batch_server)
    with client_for(batch_server, API_KEY) as client:
        response = client.images.generate(
            prompt="a lighthouse",
            size="64x64",
            quality="low",
            n=4,
            response_format="url",
            user="someone@example.com",
        )
    assert response.data is not None and len(response.data) == 4
    after = rows_per_tick(batch_server)
    ticks_of_4 = (after[4.0] - after[3.0]) - (before.get(4.0, 0) - before.get(3.0, 0))
    assert ticks_of_4 >= 1, "the four samples never shared a UNet call"
    # The url images need no key: the name is the credential.
    assert httpx.get(response.data[0].url or "", timeout=30).status_code == 200
    # The user is logged as an opaque id, never as given.
    log = batch_server.log()
    assert re.search(r"images for user [0-9a-f]{16}", log) and "someone@example.com" not in log


def test_more_images_than_the_queue_holds_are_rate_limited(batch_server: RunningServer) -> None:
    with client_for(batch_server, API_KEY) as client, pytest.raises(openai.RateLimitError) as refused:
        client.images.generate(prompt="a lighthouse", size="64x64", n=5)
    assert_openai_error(refused.value, 429, "rate_limit_exceeded", None)


# ---- the answers fit the OpenAPI document ------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_schema(server: RunningServer) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=30)


CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.mark.parametrize(
    ("path", "body", "media_type"),
    [
        (
            "/v1/images/generations",
            {"prompt": "a", "size": "64x64", "quality": "low", "style": "anime", "n": None, "seed": 1},
            "application/json",
        ),
        (
            "/v1/images/edits",
            {"prompt": "a", "image": gradient_png(64, 64), "mask": half_transparent_mask(), "quality": "low"},
            "multipart/form-data",
        ),
        (
            "/v1/images/variations",
            {"image": gradient_png(64, 64), "response_format": "url"},
            "multipart/form-data",
        ),
    ],
)
def test_answers_conform_to_the_document(
    live_schema: Any, path: str, body: dict[str, Any], media_type: str
) -> None:
    case = live_schema[path]["POST"].Case(body=body, media_type=media_type)
    response = case.call_and_validate(checks=CONFORMANCE, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def test_model_and_file_answers_conform_to_the_document(live_schema: Any, client: openai.OpenAI) -> None:
    for path, parameters in (("/v1/models", {}), ("/v1/models/{model}", {"model": MODEL_ID})):
        case = live_schema[path]["GET"].Case(path_parameters=parameters)
        assert case.call_and_validate(checks=CONFORMANCE, timeout=30).status_code == 200
    response = client.images.generate(prompt="a", size="64x64", quality="low", response_format="url")
    assert response.data is not None and response.data[0].url is not None
    name = response.data[0].url.rsplit("/", 1)[1]
    case = live_schema["/v1/images/files/{name}"]["GET"].Case(path_parameters={"name": name})
    assert case.call_and_validate(checks=CONFORMANCE, timeout=30).status_code == 200
