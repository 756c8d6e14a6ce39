"""The AWS SDK for JavaScript v3, from Node, against a running server: tests/js/bedrock.mjs makes each call.

This client's own default transport is HTTP/2 (NodeHttp2Handler); the script names its handler either way.
Over HTTP/2 the SDK drops `host` and signs the `:authority` pseudo-header in its place
(`SignedHeaders=:authority;accept;...`): the signed tests run over both transports.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdxl_bedrock.api.auth import SIGNATURE_MISMATCH
from sdxl_bedrock.api.bedrock.routes import END_OF_LIFE, INVALID_MODEL_ID, UNSUPPORTED_OPERATIONS
from tests.conftest import AUTH_KEY_ID, AUTH_SECRET, REPO, RunningServer, TlsFiles, gradient_png

JS_DIR = REPO / "tests" / "js"
MODEL = "stability.stable-diffusion-xl-v1"
SEED = 4242
SOURCE_SIZE = (64, 64)
VALIDATION_MESSAGE = (
    "Malformed input request: #/steps: 5 is not greater or equal to 10, "
    "please reformat your input and try again."
)
TRANSPORTS = [pytest.param(False, id="http1.1"), pytest.param(True, id="http2")]


def image_to_image(**fields: object) -> dict[str, object]:
    return {
        "text_prompts": [{"text": "a lighthouse"}],
        "init_image": base64.b64encode(gradient_png(*SOURCE_SIZE)).decode(),
        "steps": 10,
        "seed": SEED,
        **fields,
    }


def js_sdk(
    server: RunningServer,
    command: str,
    body: dict[str, object],
    *,
    http2: bool,
    secret: str = AUTH_SECRET,
    trusted_cert: Path | None = None,
    model_id: str = MODEL,
) -> dict[str, Any]:
    """What the JS SDK returned or threw, as bedrock.mjs describes it."""
    if shutil.which("node") is None or not (JS_DIR / "node_modules").is_dir():
        pytest.fail("node or tests/js/node_modules is missing: run `make install`")
    job = {
        "endpoint": server.url,
        "region": "us-east-1",
        "credentials": {"accessKeyId": AUTH_KEY_ID, "secretAccessKey": secret},
        "command": command,
        "modelId": model_id,
        "body": body,
        "http2": http2,
    }
    # Only the job's own settings: no profile, config file, bearer token or instance metadata.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env |= {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    if trusted_cert is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(trusted_cert)
    done = subprocess.run(
        ["node", str(JS_DIR / "bedrock.mjs")],
        input=json.dumps(job),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["protocol"] == ("h2" if http2 else "http/1.1")
    return result


def assert_succeeded(result: dict[str, Any]) -> None:
    assert "error" not in result, result["error"]
    assert result["status"] == 200
    assert result["contentType"] == "application/json"
    assert result["requestId"]


def assert_one_png_of_the_source(answer: dict[str, Any]) -> None:
    assert answer["result"] == "success"
    [artifact] = answer["artifacts"]
    assert artifact["finishReason"] == "SUCCESS"
    assert artifact["seed"] == SEED
    image = Image.open(io.BytesIO(base64.b64decode(artifact["base64"])))
    assert image.format == "PNG"
    assert image.size == SOURCE_SIZE


@pytest.mark.parametrize("http2", TRANSPORTS)
def test_invoke_model_image_to_image(server: RunningServer, http2: bool) -> None:
    result = js_sdk(server, "InvokeModel", image_to_image(), http2=http2)
    assert_succeeded(result)
    assert_one_png_of_the_source(result["body"])


@pytest.mark.parametrize("http2", TRANSPORTS)
def test_the_stream_carries_the_image_in_one_chunk(server: RunningServer, http2: bool) -> None:
    result = js_sdk(server, "InvokeModelWithResponseStream", image_to_image(), http2=http2)
    assert_succeeded(result)
    assert result["others"] == []
    [chunk] = result["chunks"]
    assert_one_png_of_the_source(chunk)


@pytest.mark.parametrize("command", ["InvokeModel", "InvokeModelWithResponseStream"])
@pytest.mark.parametrize("http2", TRANSPORTS)
def test_a_bad_field_is_a_validation_exception(server: RunningServer, command: str, http2: bool) -> None:
    result = js_sdk(server, command, image_to_image(steps=5), http2=http2)
    error = result["error"]
    assert error["name"] == "ValidationException"
    assert error["status"] == 400
    assert error["fault"] == "client"
    assert error["message"] == VALIDATION_MESSAGE
    assert error["requestId"]


@pytest.mark.parametrize("http2", TRANSPORTS)
def test_the_js_sdk_signature_is_verified(auth_server: RunningServer, http2: bool) -> None:
    result = js_sdk(auth_server, "InvokeModel", image_to_image(), http2=http2)
    assert_succeeded(result)
    assert_one_png_of_the_source(result["body"])


@pytest.mark.parametrize("http2", TRANSPORTS)
def test_a_wrong_secret_is_access_denied(auth_server: RunningServer, http2: bool) -> None:
    result = js_sdk(auth_server, "InvokeModel", image_to_image(), http2=http2, secret="not-the-secret")
    error = result["error"]
    assert error["name"] == "AccessDeniedException"
    assert error["status"] == 403
    assert error["message"] == SIGNATURE_MISMATCH


def test_the_sdk_defaults_https_http2_by_alpn_and_sigv4(
    tls_auth_server: RunningServer, tls_files: TlsFiles
) -> None:
    """How the SDK talks to Bedrock itself: TLS, HTTP/2 negotiated by ALPN, every request signed."""
    for command in ("InvokeModel", "InvokeModelWithResponseStream"):
        result = js_sdk(tls_auth_server, command, image_to_image(), http2=True, trusted_cert=tls_files.cert)
        assert_succeeded(result)
        assert_one_png_of_the_source(result["body"] if command == "InvokeModel" else result["chunks"][-1])


UNSUPPORTED = ["Converse", "ConverseStream", "CountTokens", "StartAsyncInvoke"]
RETIRED = ["stability.stable-diffusion-xl-v0", "stability.stable-diffusion-xl"]


def assert_error(result: dict[str, Any], name: str, status: int, message: str) -> None:
    error = result["error"]
    assert (error["name"], error["status"], error["fault"], error["message"]) == (
        name,
        status,
        "client",
        message,
    )
    assert error["requestId"]


@pytest.mark.parametrize("command", UNSUPPORTED)
@pytest.mark.parametrize("model_id", [MODEL, f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"])
def test_an_operation_sdxl_does_not_take_says_so(server: RunningServer, command: str, model_id: str) -> None:
    result = js_sdk(server, command, image_to_image(), http2=False, model_id=model_id)
    assert_error(result, "ValidationException", 400, UNSUPPORTED_OPERATIONS[command])


@pytest.mark.parametrize("command", ["InvokeModel", "InvokeModelWithResponseStream", *UNSUPPORTED])
@pytest.mark.parametrize("model_id", RETIRED)
def test_a_retired_sdxl_id_has_reached_the_end_of_its_life(
    server: RunningServer, command: str, model_id: str
) -> None:
    result = js_sdk(server, command, image_to_image(), http2=False, model_id=model_id)
    assert_error(result, "ResourceNotFoundException", 404, END_OF_LIFE)


@pytest.mark.parametrize("command", UNSUPPORTED)
def test_an_unknown_id_is_invalid_on_the_other_operations_too(server: RunningServer, command: str) -> None:
    result = js_sdk(
        server, command, image_to_image(), http2=True, model_id="stability.stable-diffusion-xl-v2"
    )
    assert_error(result, "ValidationException", 400, INVALID_MODEL_ID)
