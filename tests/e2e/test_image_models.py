"""Bedrock's current Stability image models (SD3.5 Large, Stable Image Core and Ultra, inpaint, outpaint,
erase object) through boto3 and the JavaScript SDK v3, on one server of this module's own with
--stability-image-models; every documented limit and error; the services refused and why."""

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

from sdxl_bedrock.api.bedrock.image_models import CHECKPOINT_HEADER, IMAGE_MODELS
from sdxl_bedrock.api.bedrock.routes import UNSUPPORTED_OPERATIONS
from tests.conftest import RunningServer, bedrock, gradient_png, start_server
from tests.e2e.test_js_sdk import js_sdk

PREFIX, SUFFIX = "Malformed input request: ", ", please reformat your input and try again."
SD35 = "stability.sd3-5-large-v1:0"
INPAINT = "stability.stable-image-inpaint-v1:0"
OUTPAINT = "stability.stable-outpaint-v1:0"
ERASE = "stability.stable-image-erase-object-v1:0"
CORE = "stability.stable-image-core-v1:1"
ULTRA = "stability.stable-image-ultra-v1:1"
BLOCKED = "forbidden"


@pytest.fixture(scope="module")
def images_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("image-models")
    terms = folder / "blocked.txt"
    terms.write_text(f"{BLOCKED}\n")
    running = start_server(
        folder,
        "--model",
        "tiny",
        "--relaxed-sizes",
        "--stability-image-models",
        "--blocked-terms",
        str(terms),
    )
    yield running
    running.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mask_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


SOURCE = gradient_png(64, 64)
BODIES: dict[str, dict[str, Any]] = {
    SD35: {"prompt": "a ship", "mode": "image-to-image", "image": b64(SOURCE), "strength": 0.6, "seed": 9},
    "stability.sd3-large-v1:0": {
        "prompt": "a ship",
        "mode": "image-to-image",
        "image": b64(SOURCE),
        "strength": 0.6,
    },
    INPAINT: {"prompt": "a door", "image": b64(SOURCE), "mask": b64(mask_png((64, 64), (0, 0, 16, 16)))},
    OUTPAINT: {"image": b64(SOURCE), "right": 64, "prompt": "more sea"},
    ERASE: {"image": b64(SOURCE), "mask": b64(mask_png((64, 64), (0, 0, 16, 16)))},
}
# Core (and Ultra without an image) come out at an SDXL size (the slowest calls here: the current
# versions only; the earlier ones share their entries, tests/api/test_image_models.py).
TEXT_ONLY = [CORE, ULTRA]


def invoke(
    server: RunningServer, model_id: str, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    answer = bedrock(server.url).invoke_model(modelId=model_id, body=json.dumps(body))  # type: ignore[attr-defined]
    return json.loads(answer["body"].read()), answer["ResponseMetadata"]["HTTPHeaders"]


def picture(answer: dict[str, Any]) -> Image.Image:
    [image] = answer["images"]
    return Image.open(io.BytesIO(base64.b64decode(image)))


def refusal(server: RunningServer, model_id: str, body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        invoke(server, model_id, body)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.mark.parametrize("model_id", sorted(BODIES))
def test_each_model_with_an_image_answers_at_the_image_size(
    images_server: RunningServer, model_id: str
) -> None:
    answer, headers = invoke(images_server, model_id, BODIES[model_id])
    assert set(answer) == {"seeds", "finish_reasons", "images"}
    assert answer["finish_reasons"] == [None]
    size = (128, 64) if model_id == OUTPAINT else (64, 64)
    assert (picture(answer).format, picture(answer).size) == ("PNG", size)
    assert headers[CHECKPOINT_HEADER.lower()] == "tiny"


@pytest.mark.parametrize("model_id", TEXT_ONLY)
def test_core_and_ultra_make_the_sdxl_size_of_the_aspect_ratio(
    images_server: RunningServer, model_id: str
) -> None:
    answer, _ = invoke(images_server, model_id, {"prompt": "a ship", "aspect_ratio": "9:21", "seed": 11})
    assert answer["seeds"] == [11]
    assert picture(answer).size == (640, 1536)


def test_sd35_text_to_image_defaults_to_1_1(images_server: RunningServer) -> None:
    answer, _ = invoke(images_server, "us.stability.sd3-5-large-v1:0", {"prompt": "a ship"})
    assert 1 <= answer["seeds"][0] <= 4294967294
    assert picture(answer).size == (1024, 1024)


def test_strength_0_keeps_the_image(images_server: RunningServer) -> None:
    answer, _ = invoke(images_server, SD35, {**BODIES[SD35], "strength": 0})
    assert np.array_equal(
        np.asarray(picture(answer).convert("RGB")), np.asarray(Image.open(io.BytesIO(SOURCE)))
    )


@pytest.mark.parametrize(("output_format", "pillow"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_format_is_honoured(images_server: RunningServer, output_format: str, pillow: str) -> None:
    answer, _ = invoke(images_server, SD35, {**BODIES[SD35], "output_format": output_format})
    assert picture(answer).format == pillow


def test_the_same_seed_makes_the_same_image(images_server: RunningServer) -> None:
    first, _ = invoke(images_server, SD35, BODIES[SD35])
    second, _ = invoke(images_server, SD35, BODIES[SD35])
    assert first["seeds"] == second["seeds"] == [9]
    assert first["images"] == second["images"]


def test_inpaint_and_erase_keep_what_the_mask_leaves(images_server: RunningServer) -> None:
    source = np.asarray(Image.open(io.BytesIO(SOURCE)).convert("RGB")).astype(int)
    for model_id in (INPAINT, ERASE):
        answer, _ = invoke(images_server, model_id, {**BODIES[model_id], "grow_mask": 2})
        out = np.asarray(picture(answer).convert("RGB")).astype(int)
        # Beyond the grown mask (16 + 2 px) and the blend's 4 px edge, the source comes back exactly.
        assert np.array_equal(out[24:, 24:], source[24:, 24:]), model_id


def test_outpaint_keeps_the_image_and_extends_it(images_server: RunningServer) -> None:
    answer, _ = invoke(images_server, OUTPAINT, {"image": b64(SOURCE), "left": 64, "up": 64, "creativity": 1})
    out = np.asarray(picture(answer).convert("RGB")).astype(int)
    assert out.shape == (128, 128, 3)
    source = np.asarray(Image.open(io.BytesIO(SOURCE)).convert("RGB")).astype(int)
    assert np.array_equal(out[68:, 68:], source[4:, 4:])


@pytest.mark.parametrize("model_id", [INPAINT, ERASE])
def test_a_mask_of_another_size_is_resized_to_the_image(images_server: RunningServer, model_id: str) -> None:
    """The services' page: a mask of another size than the image is resized to it, not refused."""
    body = {**BODIES[model_id], "mask": b64(mask_png((32, 32), (0, 0, 8, 8))), "grow_mask": 2}
    answer, _ = invoke(images_server, model_id, body)
    out = np.asarray(picture(answer).convert("RGB")).astype(int)
    source = np.asarray(Image.open(io.BytesIO(SOURCE)).convert("RGB")).astype(int)
    # The mask's 8x8 corner is 16x16 at the image's size; beyond it, its growth and the blend's edge, the
    # source comes back exactly.
    assert out.shape == (64, 64, 3)
    assert np.array_equal(out[24:, 24:], source[24:, 24:])


def test_sd35_takes_bedrocks_image_to_image_example_without_mode(images_server: RunningServer) -> None:
    """The SD3.5 page's image-to-image example sends `prompt`, `image` and `strength`, no `mode`."""
    answer, _ = invoke(images_server, SD35, {"prompt": "a ship", "image": b64(SOURCE), "strength": 0})
    assert np.array_equal(
        np.asarray(picture(answer).convert("RGB")), np.asarray(Image.open(io.BytesIO(SOURCE)))
    )


def test_sd35_takes_an_image_beyond_the_services_proportions(images_server: RunningServer) -> None:
    """SD3.5's page asks only 64 pixels a side of its image; 2.5:1 is the services' rule."""
    answer, _ = invoke(images_server, SD35, {**BODIES[SD35], "image": b64(gradient_png(192, 64))})
    assert picture(answer).size == (192, 64)


def test_ultra_image_to_image_defaults_to_strength_0_35(images_server: RunningServer) -> None:
    """Ultra's page: `image` with an optional `strength`, default 0.35; seeds up to 4294967295."""
    body = {"prompt": "a ship", "image": b64(SOURCE), "seed": 4294967295}
    default, _ = invoke(images_server, ULTRA, body)
    given, _ = invoke(images_server, ULTRA, {**body, "strength": 0.35})
    assert default["seeds"] == [4294967295]
    assert picture(default).size == (64, 64)
    assert default["images"] == given["images"]
    kept, _ = invoke(images_server, f"us.{ULTRA}", {**body, "strength": 0, "output_format": "jpeg"})
    assert picture(kept).format == "JPEG"


def test_erase_takes_the_mask_from_transparency(images_server: RunningServer) -> None:
    rgba = gradient_png(64, 64, "RGBA")
    answer, _ = invoke(images_server, ERASE, {"image": b64(rgba)})
    assert answer["finish_reasons"] == [None]


def test_a_blocked_prompt_answers_with_the_filter_reason(images_server: RunningServer) -> None:
    answer, _ = invoke(images_server, SD35, {**BODIES[SD35], "prompt": f"a {BLOCKED} ship"})
    assert answer == {"finish_reasons": ["Filter reason: prompt"]}


def test_the_stream_carries_the_answer_in_one_chunk(images_server: RunningServer) -> None:
    stream = bedrock(images_server.url).invoke_model_with_response_stream(  # type: ignore[attr-defined]
        modelId=SD35, body=json.dumps(BODIES[SD35])
    )
    [chunk] = [json.loads(event["chunk"]["bytes"]) for event in stream["body"]]
    assert chunk["seeds"] == [9] and chunk["finish_reasons"] == [None]


TOO_LONG = "x" * 10_001
ERRORS = [
    (SD35, {}, "#: required key [prompt] not found"),
    (
        SD35,
        {"text_prompts": [{"text": "a ship"}], "prompt": "a"},
        "#: extraneous key [text_prompts] is not permitted",
    ),
    (SD35, {"prompt": TOO_LONG}, "#/prompt: expected maxLength: 10000, actual: 10001"),
    (
        SD35,
        {"prompt": "a", "negative_prompt": TOO_LONG},
        "#/negative_prompt: expected maxLength: 10000, actual: 10001",
    ),
    (SD35, {"prompt": "a", "aspect_ratio": "7:3"}, "#/aspect_ratio: 7:3 is not a valid enum value"),
    (SD35, {"prompt": "a", "mode": "inpaint"}, "#/mode: inpaint is not a valid enum value"),
    (SD35, {"prompt": "a", "seed": 4294967295}, "#/seed: 4294967295 is not less or equal to 4294967294"),
    (SD35, {"prompt": "a", "output_format": "gif"}, "#/output_format: gif is not a valid enum value"),
    (
        SD35,
        {"prompt": "a", "mode": "image-to-image", "image": b64(SOURCE)},
        "#: required key [strength] not found",
    ),
    (SD35, {"prompt": "a", "mode": "image-to-image", "strength": 0.5}, "#: required key [image] not found"),
    (
        SD35,
        {"prompt": "a", "mode": "text-to-image", "image": b64(SOURCE)},
        "#: extraneous key [image] is not permitted",
    ),
    # Without `mode`, an image makes it image-to-image (Bedrock's example), which needs `strength`.
    (SD35, {"prompt": "a", "image": b64(SOURCE)}, "#: required key [strength] not found"),
    ({**BODIES[SD35], "strength": 1.5}, None, "#/strength: 1.5 is not less or equal to 1"),
    (
        {**BODIES[SD35], "image": b64(gradient_png(32, 64))},
        None,
        "#/image: the image is 32x64; each side must be at least 64 pixels",
    ),
    (CORE, {"prompt": "a", "mode": "image-to-image"}, "#/mode: image-to-image is not a valid enum value"),
    # Core's and Ultra's pages: seeds up to 4294967295, output as JPEG or PNG only.
    (CORE, {"prompt": "a", "seed": 4294967296}, "#/seed: 4294967296 is not less or equal to 4294967295"),
    (ULTRA, {"prompt": "a", "seed": 4294967296}, "#/seed: 4294967296 is not less or equal to 4294967295"),
    (CORE, {"prompt": "a", "output_format": "webp"}, "#/output_format: webp is not a valid enum value"),
    (ULTRA, {"prompt": "a", "output_format": "webp"}, "#/output_format: webp is not a valid enum value"),
    (CORE, {"prompt": "a", "image": b64(SOURCE)}, "#: extraneous key [image] is not permitted"),
    (ULTRA, {"prompt": "a", "strength": 0.5}, "#: extraneous key [strength] is not permitted"),
    (
        ULTRA,
        {"prompt": "a", "image": b64(SOURCE), "strength": 1.5},
        "#/strength: 1.5 is not less or equal to 1",
    ),
    (
        ULTRA,
        {"prompt": "a", "image": b64(gradient_png(16_385, 64))},
        "#/image: the image is 16385x64; each side must be at most 16384 pixels",
    ),
    (INPAINT, {"image": b64(SOURCE)}, "#: required key [prompt] not found"),
    (
        INPAINT,
        {**BODIES[INPAINT], "image": b64(gradient_png(192, 64))},
        "#/image: the image is 192x64; its aspect ratio must be between 1:2.5 and 2.5:1",
    ),
    (INPAINT, {**BODIES[INPAINT], "grow_mask": 21}, "#/grow_mask: 21 is not less or equal to 20"),
    (
        INPAINT,
        {**BODIES[INPAINT], "style_preset": "vaporwave"},
        "#/style_preset: vaporwave is not a valid enum value",
    ),
    (
        ERASE,
        {"image": b64(SOURCE)},
        "#: required key [mask] not found "
        "(or an image with an alpha channel: its transparent pixels are the mask)",
    ),
    (ERASE, {**BODIES[ERASE], "prompt": "a"}, "#: extraneous key [prompt] is not permitted"),
    (OUTPAINT, {"image": b64(SOURCE)}, "#/left: at least one of left, right, up and down must be above 0"),
    (OUTPAINT, {"image": b64(SOURCE), "down": 2001}, "#/down: 2001 is not less or equal to 2000"),
    (
        OUTPAINT,
        {"image": b64(SOURCE), "up": 8, "creativity": 0.05},
        "#/creativity: 0.05 is not greater or equal to 0.1",
    ),
    (
        OUTPAINT,
        {"image": b64(gradient_png(1536, 1536)), "right": 2000, "down": 2000},
        "the extended image would be 3536x3536, more than 9437184 pixels",
    ),
]


def normalized(case: tuple[Any, ...]) -> tuple[str, dict[str, Any], str]:
    model_id, body, message = case
    if isinstance(model_id, dict):  # an SD3.5 body given whole
        return SD35, model_id, message
    return model_id, body, message


@pytest.mark.parametrize("case", ERRORS, ids=lambda case: normalized(case)[2][:60])
def test_each_limit_is_a_validation_exception_in_bedrocks_words(
    images_server: RunningServer, case: tuple[Any, ...]
) -> None:
    model_id, body, message = normalized(case)
    assert refusal(images_server, model_id, body) == ("ValidationException", f"{PREFIX}{message}{SUFFIX}")


REFUSED = sorted(model_id for model_id, model in IMAGE_MODELS.items() if model.needs is not None)


@pytest.mark.parametrize("model_id", REFUSED)
def test_a_service_an_sdxl_checkpoint_cannot_do_is_refused_saying_why(
    images_server: RunningServer, model_id: str
) -> None:
    code, message = refusal(images_server, f"us.{model_id}", {"image": b64(SOURCE)})
    assert code == "AccessDeniedException"
    assert message.startswith("You don't have access to the model with the specified model ID. ")
    assert f"cannot serve {model_id}" in message and IMAGE_MODELS[model_id].needs in message  # type: ignore[operator]


def test_a_server_without_the_switch_refuses_them(strict_server: RunningServer) -> None:
    code, message = refusal(strict_server, SD35, BODIES[SD35])
    assert code == "AccessDeniedException"
    assert "only when started with --stability-image-models" in message


def test_converse_with_an_image_model_is_refused_as_for_sdxl(images_server: RunningServer) -> None:
    with pytest.raises(ClientError) as caught:
        bedrock(images_server.url).converse(  # type: ignore[attr-defined]
            modelId=SD35, messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    assert caught.value.response["Error"]["Message"] == UNSUPPORTED_OPERATIONS["Converse"]


JS_CASES = [
    (SD35, BODIES[SD35]),
    ("stability.stable-image-core-v1:1", {"prompt": "a ship", "aspect_ratio": "21:9"}),
    (INPAINT, BODIES[INPAINT]),
    (OUTPAINT, BODIES[OUTPAINT]),
    (ERASE, BODIES[ERASE]),
]


@pytest.mark.parametrize(("model_id", "body"), JS_CASES, ids=[case[0] for case in JS_CASES])
def test_the_js_sdk_reaches_each_model(
    images_server: RunningServer, model_id: str, body: dict[str, Any]
) -> None:
    result = js_sdk(images_server, "InvokeModel", body, http2=False, model_id=f"eu.{model_id}")
    assert "error" not in result, result["error"]
    answer = result["body"]
    assert answer["finish_reasons"] == [None] and len(answer["seeds"]) == len(answer["images"]) == 1


def test_the_js_sdk_sees_the_validation_exception(images_server: RunningServer) -> None:
    result = js_sdk(images_server, "InvokeModel", {"prompt": "a", "seed": -1}, http2=True, model_id=SD35)
    error = result["error"]
    assert (error["name"], error["status"]) == ("ValidationException", 400)
    assert error["message"] == f"{PREFIX}#/seed: -1 is not greater or equal to 0{SUFFIX}"
