"""The Bedrock wire around the model: routes, model ids, headers, HTTP/2, health, and error shapes."""

from __future__ import annotations

import base64
import io
import json
import uuid
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from tests.conftest import RunningServer, gradient_png

MODEL = "stability.stable-diffusion-xl-v1"
ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"
ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"


def small_body(**fields: object) -> bytes:
    body = {
        "text_prompts": [{"text": "a lighthouse"}],
        "init_image": base64.b64encode(gradient_png(64, 64)).decode(),
        "steps": 10,
        "seed": 7,
        **fields,
    }
    return json.dumps(body).encode()


def invoke_path(model_id: str) -> str:
    return f"/model/{quote(model_id, safe='')}/invoke"


@pytest.mark.parametrize("model_id", [MODEL, f"{MODEL}:0", ARN, f"{ARN}:0"])
def test_every_documented_model_id_is_accepted(server: RunningServer, model_id: str) -> None:
    response = httpx.post(
        server.url + invoke_path(model_id),
        content=small_body(),
        timeout=120,
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert uuid.UUID(response.headers["x-amzn-requestid"])
    assert int(response.headers["x-amzn-bedrock-invocation-latency"]) >= 0
    assert response.json()["result"] == "success"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/model/stability.stable-diffusion-xl-v2/invoke",
        "/model/amazon.titan-image-generator-v1/invoke",
        "/model/..%2F..%2Fetc%2Fpasswd/invoke",
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2F..%2Fstability.stable-diffusion-xl-v1/invoke",
        "/model/arn:aws:bedrock:us-east-1::foundation-model/stability.stable-diffusion-xl-v1/invoke",
    ],
)
def test_other_model_ids_are_a_validation_error(server: RunningServer, raw_path: str) -> None:
    response = httpx.post(server.url + raw_path, content=small_body(), timeout=30)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationException" + ERROR_NAMESPACE
    assert response.json() == {"message": "The provided model identifier is invalid."}


def test_http2_with_prior_knowledge_serves_the_same_api(server: RunningServer) -> None:
    with httpx.Client(http1=False, http2=True, timeout=120) as client:
        over_http2 = client.post(server.url + invoke_path(MODEL), content=small_body())
    over_http1 = httpx.post(server.url + invoke_path(MODEL), content=small_body(), timeout=120)
    assert (over_http2.http_version, over_http1.http_version) == ("HTTP/2", "HTTP/1.1")
    assert over_http2.status_code == 200, over_http2.text
    assert over_http2.headers["content-type"] == "application/json"
    assert uuid.UUID(over_http2.headers["x-amzn-requestid"])
    # The same body and seed: the same answer, whichever protocol carried it.
    assert over_http2.json() == over_http1.json()
    png = base64.b64decode(over_http2.json()["artifacts"][0]["base64"])
    assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_unknown_route_is_resource_not_found(server: RunningServer) -> None:
    response = httpx.get(server.url + "/nowhere")
    assert response.status_code == 404
    assert response.headers["x-amzn-errortype"] == "ResourceNotFoundException" + ERROR_NAMESPACE
    assert "message" in response.json()


def test_ping_is_healthy_once_loaded(server: RunningServer) -> None:
    response = httpx.get(server.url + "/ping")
    assert response.status_code == 200


def test_optional_bedrock_headers_are_accepted(server: RunningServer) -> None:
    headers = {
        "X-Amzn-Bedrock-Trace": "ENABLED",
        "X-Amzn-Bedrock-GuardrailIdentifier": "gr-1",
        "X-Amzn-Bedrock-GuardrailVersion": "1",
        "X-Amzn-Bedrock-PerformanceConfig-Latency": "standard",
    }
    response = httpx.post(server.url + invoke_path(MODEL), content=small_body(), headers=headers, timeout=120)
    assert response.status_code == 200


def test_a_body_over_25_mb_is_refused_from_its_declared_length(server: RunningServer) -> None:
    response = httpx.post(
        server.url + invoke_path(MODEL), content=b"{" + b" " * 25_000_000 + b"}", timeout=60
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert "25000000" in response.json()["message"]
