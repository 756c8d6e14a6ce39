"""sdxl_bedrock.client: InvokeModel and streams with progress through boto3, against the real server."""

from __future__ import annotations

import base64

from sdxl_bedrock.client import bedrock_client, build_body, invoke, invoke_streaming
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
