"""sdxl_bedrock.client: boto3 and plain-HTTP ways in, streams with progress, the Stability face."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from sdxl_bedrock.client import ClientError, HttpClient, bedrock_client, build_body, invoke, invoke_streaming
from tests.conftest import RunningServer, gradient_png


def body(**fields: object) -> dict[str, object]:
    return build_body(
        "a windmill", negative_prompt="fog", image=None, **{"steps": 10, "seed": 31, **fields}
    ) | {"init_image": base64.b64encode(gradient_png(64, 64)).decode()}


def test_boto3_invoke_and_streaming_agree(server: RunningServer) -> None:
    client = bedrock_client(server.url)
    seen: list[tuple[int, int, bool]] = []
    streamed = invoke_streaming(
        client,
        body(),
        lambda step, steps, preview: seen.append((step, steps, bool(preview))),
        preview_every=3,
    )
    plain = invoke(client, body())
    assert streamed == plain
    assert [step for step, _, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[2][2] is True and seen[0][2] is False


def test_http_client_without_boto3(server: RunningServer) -> None:
    with HttpClient(server.url) as client:
        invoked = client.invoke(body())
        steps: list[int] = []
        streamed = client.stream(body(), lambda step, total, preview: steps.append(step))
        assert invoked == streamed and invoked.seed == 31
        assert steps and steps[-1] == len(steps)
        with pytest.raises(ClientError) as caught:
            client.invoke(body(cfg_scale=99))
        assert caught.value.code == "ValidationException" and caught.value.status == 400
        with pytest.raises(ClientError) as caught:
            client.stream(body(steps=5))
        assert caught.value.code == "ValidationException"


def test_http_client_stability_face(server: RunningServer) -> None:
    with HttpClient(server.url) as client:
        [made] = client.stability_text_to_image(
            {"text_prompts": [{"text": "a kite"}], "width": 64, "height": 128, "steps": 10, "seed": 5}
        )
        assert Image.open(io.BytesIO(made.png)).size == (64, 128) and made.seed == 5
        results = client.stability_image_to_image(
            gradient_png(64, 64),
            {"text_prompts": [{"text": "a kite", "weight": 1}], "steps": 10, "samples": 2},
        )
        assert len(results) == 2 and results[0].png != results[1].png
