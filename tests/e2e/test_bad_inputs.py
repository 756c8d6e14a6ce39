"""Every rejected input reaches a boto3 user as ClientError ValidationException 400 naming the field."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from tests.conftest import RunningServer, bedrock, gradient_png

MODEL = "stability.stable-diffusion-xl-v1"
PREFIX = "Malformed input request: "
SUFFIX = ", please reformat your input and try again."
SIZES = "1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216, 896x1152"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, fmt)
    return buffer.getvalue()


SMALL = b64(gradient_png(64, 64))
PROMPT = [{"text": "a harbour at dusk"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"text_prompts": PROMPT, "init_image": SMALL, "steps": 10, **fields}


# (case id, request body (dict, or raw bytes), the middle of the message: exact, or ending in "...")
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not json", b"this is not json", "#: the body is not valid JSON..."),
    ("json array", b"[1, 2]", "#: expected type: JSONObject, found: JSONArray"),
    ("non utf-8", b'{"text_prompts": "\xff\xfe"}', "#: the body is not valid UTF-8"),
    (
        "NaN literal",
        b'{"text_prompts": [{"text": "a"}], "cfg_scale": NaN}',
        "#: NaN is not a valid JSON number",
    ),
    (
        "duplicate key",
        b'{"text_prompts": [{"text": "a"}], "seed": 1, "seed": 2}',
        "#: duplicate key [seed] is not permitted",
    ),
    ("no prompts", {"init_image": SMALL}, "#: required key [text_prompts] not found"),
    ("empty prompts", body(text_prompts=[]), "#/text_prompts: expected minimum item count: 1, found: 0"),
    (
        "eleven prompts",
        body(text_prompts=[{"text": "a"}] * 11),
        "#/text_prompts: expected maximum item count: 10, found: 11",
    ),
    (
        "prompt too long",
        body(text_prompts=[{"text": "a" * 2001}]),
        "#/text_prompts/0/text: expected maxLength: 2000, actual: 2001",
    ),
    (
        "prompt extra key",
        body(text_prompts=[{"text": "a", "colour": "red"}]),
        "#/text_prompts/0: extraneous key [colour] is not permitted",
    ),
    (
        "prompt weight string",
        body(text_prompts=[{"text": "a", "weight": "heavy"}]),
        "#/text_prompts/0/weight: expected type: Number, found: String",
    ),
    (
        "only negative prompts",
        body(text_prompts=[{"text": "a", "weight": -1}]),
        "#/text_prompts: at least one prompt must have a weight above 0",
    ),
    ("unknown key", body(colour="red"), "#: extraneous key [colour] is not permitted"),
    ("cfg too high", body(cfg_scale=40), "#/cfg_scale: 40 is not less or equal to 35"),
    ("cfg negative", body(cfg_scale=-1), "#/cfg_scale: -1 is not greater or equal to 0"),
    ("steps too few", body(steps=5), "#/steps: 5 is not greater or equal to 10"),
    ("steps too many", body(steps=51), "#/steps: 51 is not less or equal to 50"),
    ("steps as string", body(steps="30"), "#/steps: expected type: Integer, found: String"),
    ("steps as float", body(steps=30.5), "#/steps: expected type: Integer, found: Number"),
    ("seed too big", body(seed=4294967296), "#/seed: 4294967296 is not less or equal to 4294967295"),
    ("seed negative", body(seed=-1), "#/seed: -1 is not greater or equal to 0"),
    ("samples 2", body(samples=2), "#/samples: 2 is not less or equal to 1"),
    ("unknown sampler", body(sampler="K_FANCY"), "#/sampler: K_FANCY is not a valid enum value"),
    (
        "unknown style",
        body(style_preset="watercolour"),
        "#/style_preset: watercolour is not a valid enum value",
    ),
    (
        "unknown clip preset",
        body(clip_guidance_preset="FAST_RED"),
        "#/clip_guidance_preset: FAST_RED is not a valid enum value",
    ),
    (
        "unknown init mode",
        body(init_image_mode="NOISE"),
        "#/init_image_mode: NOISE is not a valid enum value",
    ),
    ("strength above 1", body(image_strength=1.5), "#/image_strength: 1.5 is not less or equal to 1"),
    ("extras not object", body(extras=[1]), "#/extras: expected type: JSONObject, found: JSONArray"),
    ("bad base64", body(init_image="not base64!!"), "#/init_image: ..."),
    ("not an image", body(init_image=b64(b"hello world, not a picture")), "#/init_image: ..."),
    ("a gif", body(init_image=b64(image_bytes(64, 64, "GIF"))), "#/init_image: ..."),
    (
        "image of a wrong size",
        {"text_prompts": PROMPT, "init_image": b64(image_bytes(1000, 1000))},
        f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {SIZES}, but we received 1000x1000",
    ),
    (
        "text-to-image wrong size",
        {"text_prompts": PROMPT, "width": 512, "height": 512},
        f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {SIZES}, but we received 512x512",
    ),
    (
        "height other than the init image's",
        body(init_image=b64(image_bytes(1024, 1024)), height=768),
        "#/height: 768 does not match init_image's height 1024",
    ),
    (
        "data URL",
        body(init_image="data:image/png;base64," + SMALL),
        "#/init_image: expected bare base64, found a data URL; send only the base64 text after 'base64,'",
    ),
    (
        "mask source without mask",
        body(mask_source="MASK_IMAGE_WHITE"),
        "#: required key [mask_image] not found",
    ),
    (
        "step schedule end above start",
        body(init_image_mode="STEP_SCHEDULE", step_schedule_start=0.3, step_schedule_end=0.5),
        "#/step_schedule_end: 0.5 is not less than 0.3",
    ),
]


@pytest.mark.parametrize(("case", "request_body", "expected"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_body_is_a_validation_exception(
    strict_server: RunningServer, case: str, request_body: Any, expected: str
) -> None:
    raw = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()
    with pytest.raises(ClientError) as caught:
        bedrock(strict_server.url).invoke_model(
            modelId=MODEL, body=raw, accept="application/json", contentType="application/json"
        )
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    message = error["Error"]["Message"]
    assert message.startswith(PREFIX) and message.endswith(SUFFIX), message
    middle = message.removeprefix(PREFIX).removesuffix(SUFFIX)
    if expected.endswith("..."):
        assert middle.startswith(expected.removesuffix("...")), middle
    else:
        assert middle == expected


def test_unknown_model_id_through_boto3(strict_server: RunningServer) -> None:
    with pytest.raises(ClientError) as caught:
        bedrock(strict_server.url).invoke_model(
            modelId="amazon.titan-image-generator-v2:0", body=json.dumps(body())
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["Error"]["Message"] == "The provided model identifier is invalid."


def test_guidance_without_a_clip_model_says_so(strict_server: RunningServer) -> None:
    request = {
        "text_prompts": PROMPT,
        "init_image": b64(gradient_png(1024, 1024)),
        "steps": 10,
        "clip_guidance_preset": "FAST_BLUE",
    }
    with pytest.raises(ClientError) as caught:
        bedrock(strict_server.url).invoke_model(modelId=MODEL, body=json.dumps(request))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "CLIP model" in caught.value.response["Error"]["Message"]
