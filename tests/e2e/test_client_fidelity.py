"""What third-party clients send, against a real server (issue 15), one table per kind:

1. Stability v1 forms with the images as plain fields (Stability's Go and TypeScript examples), rebuilt with
   httpx and requests, at 0.5 MB and 3 MB, and with a file name;
2. `height`/`width` next to Bedrock's `init_image` (an agent framework's SDXL driver), through boto3;
3. masked requests without `image_strength`, on both faces;
4. retired SDXL ids and the Bedrock Runtime operations SDXL does not take, through boto3;
5. base64 with line breaks, and data URLs, through boto3;
6. every `x-amzn-bedrock-*` header boto3 can send, from botocore's own service model.

The JavaScript SDK v3 side of 4 is in test_js_sdk.py.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import botocore.session
import httpx
import numpy as np
import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

from sdxl_bedrock.api.bedrock.routes import (
    CONVERSE_UNSUPPORTED,
    END_OF_LIFE,
    INVALID_MODEL_ID,
    UNSUPPORTED_OPERATIONS,
)
from sdxl_bedrock.engine.masking import EDGE_RADIUS
from tests.conftest import RunningServer, bedrock, gradient_png

MODEL = "stability.stable-diffusion-xl-v1"
ENGINE = "stable-diffusion-xl-1024-v1-0"
IMAGE_TO_IMAGE = f"/v1/generation/{ENGINE}/image-to-image"
MASKING = f"/v1/generation/{ENGINE}/image-to-image/masking"
TIMEOUT = 300
SIDE = 64
# Columns well clear of a mask's edge at x = SIDE / 2, where the pasted-back original is blended in.
KEPT = slice(0, SIDE // 2 - EDGE_RADIUS - 1)
REGENERATED = slice(SIDE // 2 + EDGE_RADIUS + 1, SIDE)


def malformed(description: str) -> str:
    return f"Malformed input request: {description}, please reformat your input and try again."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def padded(png: bytes, total_bytes: int, seed: int) -> bytes:
    """`png` padded to `total_bytes` with a private ancillary chunk of random bytes, which a decoder skips
    after checking its CRC: the file decodes only if every byte arrived unchanged."""
    padding = total_bytes - len(png) - 12
    assert padding >= 0
    payload = np.random.default_rng(seed).integers(0, 256, padding, dtype=np.uint8).tobytes()
    chunk = struct.pack(">I", padding) + b"prVt" + payload + struct.pack(">I", zlib.crc32(b"prVt" + payload))
    after_header = 8 + 25  # the signature, then IHDR (length, type, 13 bytes, CRC)
    return png[:after_header] + chunk + png[after_header:]


def noise_png(total_bytes: int, seed: int) -> bytes:
    """A 64x64 RGB noise PNG of `total_bytes` (see `padded`)."""
    noise = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buffer, "PNG")
    return padded(buffer.getvalue(), total_bytes, seed)


def half_mask(total_bytes: int | None = None) -> bytes:
    """White (regenerate) on the right half; padded to `total_bytes` when given (see `padded`)."""
    mask = Image.new("L", (SIDE, SIDE), 0)
    mask.paste(255, (SIDE // 2, 0, SIDE, SIDE))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue() if total_bytes is None else padded(buffer.getvalue(), total_bytes, 7)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def artifact_pixels(artifact: dict[str, Any]) -> np.ndarray:
    return pixels(base64.b64decode(artifact["base64"]))


# ---- 1. Stability forms: images as plain fields -----------------------------------------------------------

Part = tuple[Any, ...]


def go_form_field(data: bytes) -> Part:
    """Go's mime/multipart `CreateFormField("init_image")`: a name, no file name, no content type."""
    return (None, data)


def typescript_form_data(data: bytes) -> Part:
    """The `form-data` package's `append('init_image', buffer)`: no file name, application/octet-stream."""
    return (None, data, "application/octet-stream")


def curl_file(data: bytes) -> Part:
    """curl's `-F init_image=@init.png` and requests' usual files: a file name and the image's type."""
    return ("init.png", data, "image/png")


def post_with_httpx(url: str, fields: dict[str, str], parts: dict[str, Part]) -> httpx.Response:
    return httpx.post(url, data=fields, files=parts, timeout=TIMEOUT)


def post_with_requests(url: str, fields: dict[str, str], parts: dict[str, Part]) -> httpx.Response:
    answer = requests.post(url, data=fields, files=parts, timeout=TIMEOUT)
    return httpx.Response(answer.status_code, headers=dict(answer.headers), content=answer.content)


FORM_CLIENTS = [
    pytest.param(go_form_field, post_with_httpx, id="go-CreateFormField-httpx"),
    pytest.param(typescript_form_data, post_with_requests, id="typescript-form-data-requests"),
    pytest.param(curl_file, post_with_requests, id="with-a-file-name-requests"),
    pytest.param(curl_file, post_with_httpx, id="with-a-file-name-httpx"),
]
FORM_SIZES = [pytest.param(500_000, id="0.5MB"), pytest.param(3_000_000, id="3MB")]


@pytest.mark.parametrize("size", FORM_SIZES)
@pytest.mark.parametrize(("part", "post"), FORM_CLIENTS)
def test_stability_image_to_image_takes_the_image_with_or_without_a_file_name(
    server: RunningServer, part: Callable[[bytes], Part], post: Any, size: int
) -> None:
    source = noise_png(size, seed=size)
    fields = {"text_prompts[0][text]": "a lighthouse", "image_strength": "1", "steps": "10"}
    response = post(server.url + IMAGE_TO_IMAGE, fields, {"init_image": part(source)})
    assert response.status_code == 200, response.text
    [artifact] = response.json()["artifacts"]
    # Strength 1 keeps the source: the answer is the init image itself, pixel for pixel.
    assert np.array_equal(artifact_pixels(artifact), pixels(source))


@pytest.mark.parametrize(("part", "post"), FORM_CLIENTS[:3])
def test_stability_masking_takes_both_images_with_or_without_a_file_name(
    server: RunningServer, part: Callable[[bytes], Part], post: Any
) -> None:
    size = 3_000_000
    source = noise_png(size, seed=size + 1)
    fields = {"text_prompts[0][text]": "a lighthouse", "mask_source": "MASK_IMAGE_WHITE", "steps": "10"}
    images = {"init_image": part(source), "mask_image": part(half_mask(size))}
    response = post(server.url + MASKING, fields, images)
    assert response.status_code == 200, response.text
    [artifact] = response.json()["artifacts"]
    image, original = artifact_pixels(artifact), pixels(source)
    assert np.array_equal(image[:, KEPT], original[:, KEPT])
    assert np.abs(image[:, REGENERATED] - original[:, REGENERATED]).mean() > 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            b64(gradient_png(SIDE, SIDE)).encode(),
            "init_image: expected the bytes of an image file, found text that looks like base64; "
            "send the file's own bytes",
        ),
        (
            b"data:image/png;base64," + b64(gradient_png(SIDE, SIDE)).encode(),
            "init_image: expected the bytes of an image file, found a data URL; send the file's own bytes",
        ),
        (
            b"/home/me/init.png",
            "init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
        ),
        (b"", "init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)"),
    ],
    ids=["base64", "data-url", "a-path", "empty"],
)
@pytest.mark.parametrize(("part", "post"), FORM_CLIENTS[:2])
def test_a_plain_field_that_is_not_an_image_names_the_field(
    server: RunningServer, part: Callable[[bytes], Part], post: Any, value: bytes, message: str
) -> None:
    fields = {"text_prompts[0][text]": "a lighthouse", "steps": "10"}
    response = post(server.url + IMAGE_TO_IMAGE, fields, {"init_image": part(value)})
    assert response.status_code == 400, response.text
    assert response.json()["name"] == "invalid_image"
    assert response.json()["message"] == message


# ---- boto3 helpers -----------------------------------------------------------------------------------------


def invoke(url: str, payload: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    response = bedrock(url).invoke_model(  # type: ignore[attr-defined]
        modelId=parameters.pop("modelId", MODEL), body=json.dumps(payload), **parameters
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    answer: dict[str, Any] = json.loads(response["body"].read())
    [artifact] = answer["artifacts"]
    assert artifact["finishReason"] == "SUCCESS"
    return artifact


def stream(url: str, payload: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    response = bedrock(url).invoke_model_with_response_stream(  # type: ignore[attr-defined]
        modelId=parameters.pop("modelId", MODEL), body=json.dumps(payload), **parameters
    )
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"] if "chunk" in event]
    [artifact] = chunks[-1]["artifacts"]
    assert artifact["finishReason"] == "SUCCESS"
    return artifact


def refusal(call: Callable[[], object]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"], error["Error"]["Message"]


SOURCE = gradient_png(128, 64)  # width 128, height 64


def image_to_image(**fields: Any) -> dict[str, Any]:
    return {
        "text_prompts": [{"text": "a lighthouse"}],
        "init_image": b64(SOURCE),
        "steps": 10,
        "seed": 5,
        **fields,
    }


# ---- 2. height and width next to init_image ----------------------------------------------------------------


@pytest.mark.parametrize("operation", [invoke, stream], ids=["InvokeModel", "InvokeModelWithResponseStream"])
@pytest.mark.parametrize(
    "fields",
    [
        {"height": 64, "width": 128},
        {"height": 64},
        {"width": 128},
        # The driver's inpainting and outpainting requests carry the size with the mask.
        {
            "height": 64,
            "width": 128,
            "mask_source": "MASK_IMAGE_BLACK",
            "mask_image": b64(gradient_png(128, 64, "L")),
        },
    ],
    ids=["both", "height", "width", "with-a-mask"],
)
def test_the_init_images_own_size_is_accepted(
    server: RunningServer, operation: Callable[..., dict[str, Any]], fields: dict[str, Any]
) -> None:
    artifact = operation(server.url, image_to_image(**fields))
    assert artifact_pixels(artifact).shape == (64, 128, 3)
    assert artifact["seed"] == 5


@pytest.mark.parametrize(
    ("fields", "description"),
    [
        ({"height": 128, "width": 128}, "#/height: 128 does not match init_image's height 64"),
        ({"height": 64, "width": 64}, "#/width: 64 does not match init_image's width 128"),
        ({"height": 128, "width": 64}, "#/height: 128 does not match init_image's height 64"),
        ({"width": 1024}, "#/width: 1024 does not match init_image's width 128"),
    ],
    ids=["height", "width", "swapped", "width-alone"],
)
def test_another_size_is_a_validation_exception_naming_both_numbers(
    server: RunningServer, fields: dict[str, Any], description: str
) -> None:
    status, code, message = refusal(lambda: invoke(server.url, image_to_image(**fields)))
    assert (status, code, message) == (400, "ValidationException", malformed(description))


# ---- 3. masked requests without image_strength -------------------------------------------------------------

MASK_SOURCE = gradient_png(SIDE, SIDE)
MASKED = {
    "text_prompts": [{"text": "a lighthouse"}],
    "init_image": b64(MASK_SOURCE),
    "mask_source": "MASK_IMAGE_WHITE",
    "mask_image": b64(half_mask()),
    "steps": 10,
    "seed": 21,
    "sampler": "K_EULER",
}


def stability_masking(url: str) -> np.ndarray:
    fields = {
        "text_prompts[0][text]": "a lighthouse",
        "mask_source": "MASK_IMAGE_WHITE",
        "steps": "10",
        "seed": "21",
        "sampler": "K_EULER",
    }
    files = {
        "init_image": ("init.png", MASK_SOURCE, "image/png"),
        "mask_image": ("m.png", half_mask(), "image/png"),
    }
    response = httpx.post(url + MASKING, data=fields, files=files, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return artifact_pixels(response.json()["artifacts"][0])


@pytest.fixture(scope="module")
def silent(server: RunningServer) -> np.ndarray:
    """The masked request without any strength, through boto3."""
    return artifact_pixels(invoke(server.url, MASKED))


def test_a_masked_request_without_a_strength_regenerates_the_mask_fully_on_both_faces(
    server: RunningServer, silent: np.ndarray
) -> None:
    faces = {
        "Bedrock, IMAGE_STRENGTH named, no strength": invoke(
            server.url, {**MASKED, "init_image_mode": "IMAGE_STRENGTH"}
        ),
        "Bedrock, image_strength 0": invoke(server.url, {**MASKED, "image_strength": 0}),
    }
    for face, artifact in faces.items():
        assert np.abs(artifact_pixels(artifact) - silent).max() <= 1, face
    assert np.abs(stability_masking(server.url) - silent).max() <= 1, "Stability's masking endpoint"
    original = pixels(MASK_SOURCE)
    assert np.array_equal(silent[:, KEPT], original[:, KEPT])


@pytest.mark.parametrize(
    "fields",
    [
        {"image_strength": 0.35},
        {"image_strength": 0.8},
        {"init_image_mode": "STEP_SCHEDULE"},
        {"init_image_mode": "STEP_SCHEDULE", "step_schedule_start": 0.5},
    ],
    ids=["strength-0.35", "strength-0.8", "step-schedule-default", "step-schedule-0.5"],
)
def test_an_explicit_strength_or_schedule_is_honoured_inside_the_mask(
    server: RunningServer, silent: np.ndarray, fields: dict[str, Any]
) -> None:
    honoured = artifact_pixels(invoke(server.url, {**MASKED, **fields}))
    original = pixels(MASK_SOURCE)
    assert np.array_equal(honoured[:, KEPT], original[:, KEPT])
    # A shorter window starts from the source: the masked half stays nearer to it than a full regeneration.
    assert np.abs(honoured[:, REGENERATED] - silent[:, REGENERATED]).max() > 1
    kept_nearer = np.abs(honoured[:, REGENERATED] - original[:, REGENERATED]).mean()
    assert kept_nearer < np.abs(silent[:, REGENERATED] - original[:, REGENERATED]).mean()


# ---- 4. retired ids and the operations SDXL does not take -------------------------------------------------

RETIRED = [
    "stability.stable-diffusion-xl-v0",
    "stability.stable-diffusion-xl",
    "arn:aws:bedrock:us-east-1::foundation-model/stability.stable-diffusion-xl-v0",
    "arn:aws:bedrock:us-west-2::foundation-model/stability.stable-diffusion-xl",
]
OURS = [MODEL, f"{MODEL}:0", f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"]
UNKNOWN = ["stability.stable-diffusion-xl-v2", "amazon.titan-image-generator-v1", "nonsense"]
TEXT_BODY = {"text_prompts": [{"text": "a lighthouse"}], "width": 64, "height": 64, "steps": 10}


def bedrock_operation(operation: str) -> Callable[[str, str], object]:
    """(url, model id) -> the boto3 call of `operation` with a valid request for it."""
    converse_input = {"messages": [{"role": "user", "content": [{"text": "hello"}]}]}
    calls: dict[str, Callable[[Any, str], object]] = {
        "InvokeModel": lambda client, model: client.invoke_model(modelId=model, body=json.dumps(TEXT_BODY)),
        "InvokeModelWithResponseStream": lambda client, model: client.invoke_model_with_response_stream(
            modelId=model, body=json.dumps(TEXT_BODY)
        ),
        "Converse": lambda client, model: client.converse(modelId=model, **converse_input),
        "ConverseStream": lambda client, model: client.converse_stream(modelId=model, **converse_input),
        "CountTokens": lambda client, model: client.count_tokens(
            modelId=model, input={"invokeModel": {"body": json.dumps(TEXT_BODY).encode()}}
        ),
        "CountTokens-converse": lambda client, model: client.count_tokens(
            modelId=model, input={"converse": converse_input}
        ),
        "StartAsyncInvoke": lambda client, model: client.start_async_invoke(
            modelId=model,
            modelInput=TEXT_BODY,
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://a-bucket/sdxl/"}},
        ),
    }
    return lambda url, model: calls[operation](bedrock(url), model)


EVERY_OPERATION = [
    "InvokeModel",
    "InvokeModelWithResponseStream",
    "Converse",
    "ConverseStream",
    "CountTokens",
    "CountTokens-converse",
    "StartAsyncInvoke",
]
UNSUPPORTED = {
    "Converse": CONVERSE_UNSUPPORTED,
    "ConverseStream": CONVERSE_UNSUPPORTED,
    "CountTokens": UNSUPPORTED_OPERATIONS["CountTokens"],
    "CountTokens-converse": UNSUPPORTED_OPERATIONS["CountTokens"],
    "StartAsyncInvoke": UNSUPPORTED_OPERATIONS["StartAsyncInvoke"],
}


@pytest.mark.parametrize("model", RETIRED)
@pytest.mark.parametrize("operation", EVERY_OPERATION)
def test_a_retired_sdxl_id_has_reached_the_end_of_its_life(
    server: RunningServer, operation: str, model: str
) -> None:
    status, code, message = refusal(lambda: bedrock_operation(operation)(server.url, model))
    assert (status, code, message) == (404, "ResourceNotFoundException", END_OF_LIFE)


@pytest.mark.parametrize("model", UNKNOWN)
@pytest.mark.parametrize("operation", EVERY_OPERATION)
def test_an_unknown_id_is_invalid_on_every_operation(
    server: RunningServer, operation: str, model: str
) -> None:
    status, code, message = refusal(lambda: bedrock_operation(operation)(server.url, model))
    assert (status, code, message) == (400, "ValidationException", INVALID_MODEL_ID)


@pytest.mark.parametrize("model", OURS)
@pytest.mark.parametrize("operation", list(UNSUPPORTED))
def test_an_operation_sdxl_does_not_take_says_so(server: RunningServer, operation: str, model: str) -> None:
    status, code, message = refusal(lambda: bedrock_operation(operation)(server.url, model))
    assert (status, code, message) == (400, "ValidationException", UNSUPPORTED[operation])


@pytest.mark.parametrize("operation", list(UNSUPPORTED))
def test_the_unsupported_operations_check_credentials_first(
    auth_server: RunningServer, operation: str
) -> None:
    status, code, _ = refusal(lambda: bedrock_operation(operation)(auth_server.url, MODEL))
    assert (status, code) == (403, "AccessDeniedException")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            b'{"modelInput": {}}',
            400,
            "1 validation error detected: Value null at 'modelId' failed to satisfy "
            "constraint: Member must not be null",
        ),
        (b'{"modelId": 7}', 400, INVALID_MODEL_ID),
        (b"[1]", 400, malformed("#: expected type: JSONObject, found: JSONArray")),
        (json.dumps({"modelId": RETIRED[0]}).encode(), 404, END_OF_LIFE),
    ],
    ids=["no-model-id", "model-id-not-a-string", "not-an-object", "retired"],
)
def test_start_async_invoke_bodies_from_other_clients(
    server: RunningServer, body: bytes, status: int, message: str
) -> None:
    response = httpx.post(server.url + "/async-invoke", content=body, timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (status, {"message": message})


def test_other_async_invoke_methods_are_unknown_routes_in_bedrocks_shape(server: RunningServer) -> None:
    for path in (
        "/async-invoke",
        "/async-invoke/" + quote("arn:aws:bedrock:us-east-1:1:async-invoke/x", safe=""),
    ):
        response = httpx.get(server.url + path, timeout=TIMEOUT)
        assert response.status_code == 404
        assert response.headers["x-amzn-errortype"].startswith("ResourceNotFoundException:")


# ---- 5. base64 as people produce it ------------------------------------------------------------------------


def wrapped(text: str, newline: str, width: int = 76) -> str:
    return newline.join(text[start : start + width] for start in range(0, len(text), width))


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: wrapped(text, "\n") + "\n", id="gnu-base64"),
        pytest.param(lambda text: wrapped(text, "\r\n"), id="java-mime"),
        pytest.param(lambda text: wrapped(text, "\n", 64), id="pem-64"),
    ],
)
def test_line_wrapped_base64_is_the_same_image(server: RunningServer, encode: Callable[[str], str]) -> None:
    source = noise_png(20_000, seed=3)
    artifact = invoke(server.url, image_to_image(init_image=encode(b64(source)), image_strength=1))
    # Strength 1 keeps the source: the answer is the init image itself, pixel for pixel.
    assert np.array_equal(artifact_pixels(artifact), pixels(source))


def test_a_line_wrapped_mask_is_the_same_mask(server: RunningServer, silent: np.ndarray) -> None:
    lines = {key: wrapped(MASKED[key], "\r\n") for key in ("init_image", "mask_image")}
    artifact = invoke(server.url, {**MASKED, **lines})
    assert np.abs(artifact_pixels(artifact) - silent).max() <= 1


@pytest.mark.parametrize(
    ("fields", "description"),
    [
        (
            {"init_image": "data:image/png;base64," + b64(SOURCE)},
            "#/init_image: expected bare base64, found a data URL; send only the base64 text after 'base64,'",
        ),
        (
            {"mask_source": "MASK_IMAGE_WHITE", "mask_image": "data:image/png;base64," + b64(SOURCE)},
            "#/mask_image: expected bare base64, found a data URL; send only the base64 text after 'base64,'",
        ),
        ({"init_image": wrapped(b64(SOURCE), "\t")}, "#/init_image: invalid base64 string"),
        ({"init_image": wrapped(b64(SOURCE), " ")}, "#/init_image: invalid base64 string"),
        ({"init_image": b64(SOURCE)[:-2] + "\n"}, "#/init_image: invalid base64 string"),
    ],
    ids=["data-url", "data-url-mask", "tabs", "spaces", "cut-short"],
)
def test_other_text_is_still_not_base64(
    server: RunningServer, fields: dict[str, Any], description: str
) -> None:
    status, code, message = refusal(lambda: invoke(server.url, image_to_image(**fields)))
    assert (status, code, message) == (400, "ValidationException", malformed(description))


# ---- 6. every request member boto3 can send ----------------------------------------------------------------

# A valid value for each member that has no enumeration; the enumerations are taken whole from the model.
MEMBER_VALUES: dict[str, list[str]] = {
    "contentType": ["application/json"],
    "accept": ["application/json", "*/*"],
    "guardrailIdentifier": ["gr0abc123", "arn:aws:bedrock:us-east-1:123456789012:guardrail/gr0abc123"],
    "guardrailVersion": ["1", "DRAFT"],
    "requestMetadata": [json.dumps({"team": "imaging", "ticket": "ISSUE-15"})],
    "projectIdentifier": ["default", "arn:aws:bedrock:us-east-1:123456789012:project/imaging"],
}
NOT_SENT_AS_AN_OPTION = {"modelId", "body"}
OPERATIONS = {"InvokeModel": invoke, "InvokeModelWithResponseStream": stream}


def member_cases() -> list[Any]:
    """(operation, member, value) for every input member of both operations in botocore's service model,
    each enumeration value once."""
    service = botocore.session.get_session().get_service_model("bedrock-runtime")
    cases = []
    for operation in OPERATIONS:
        members = service.operation_model(operation).input_shape.members
        for name, shape in members.items():
            if name in NOT_SENT_AS_AN_OPTION:
                continue
            values = list(shape.enum) or MEMBER_VALUES.get(name)
            assert values, f"{operation}.{name}: a member new in botocore; give it values in MEMBER_VALUES"
            header = shape.serialization.get("name", name)
            cases += [
                pytest.param(operation, name, value, id=f"{operation}-{header}-{value}") for value in values
            ]
    return cases


@pytest.mark.parametrize(("operation", "member", "value"), member_cases())
def test_every_request_member_is_accepted(
    server: RunningServer, operation: str, member: str, value: str
) -> None:
    artifact = OPERATIONS[operation](server.url, image_to_image(image_strength=1), **{member: value})
    assert np.array_equal(artifact_pixels(artifact), pixels(SOURCE))


def test_every_member_at_once(server: RunningServer) -> None:
    options = {"guardrailIdentifier": "gr0abc123", "guardrailVersion": "DRAFT", "trace": "ENABLED_FULL"}
    options |= {"performanceConfigLatency": "optimized", "serviceTier": "flex", "requestMetadata": "{}"}
    options |= {"projectIdentifier": "default", "contentType": "application/json"}
    for operation in OPERATIONS.values():
        artifact = operation(server.url, image_to_image(image_strength=1), **options)
        assert np.array_equal(artifact_pixels(artifact), pixels(SOURCE))
