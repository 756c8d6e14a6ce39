"""InvokeModelWithResponseStream through boto3: Bedrock's one chunk, and our progress opt-in."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from tests.conftest import RunningServer, bedrock, gradient_png, metric

MODEL = "stability.stable-diffusion-xl-v1"


def body(**fields: object) -> str:
    request = {
        "text_prompts": [{"text": "a red door"}],
        "init_image": base64.b64encode(gradient_png(64, 64)).decode(),
        "steps": 12,
        "seed": 99,
        **fields,
    }
    return json.dumps(request)


def stream_chunks(server: RunningServer, request: str) -> list[dict[str, object]]:
    response = bedrock(server.url).invoke_model_with_response_stream(modelId=MODEL, body=request)
    assert response["contentType"] == "application/json"
    return [json.loads(event["chunk"]["bytes"]) for event in response["body"]]


def test_the_stream_holds_one_chunk_equal_to_invoke_model(server: RunningServer) -> None:
    chunks = stream_chunks(server, body())
    assert len(chunks) == 1
    invoked = json.loads(bedrock(server.url).invoke_model(modelId=MODEL, body=body())["body"].read())
    assert chunks[0] == invoked


def test_progress_opt_in_sends_a_chunk_per_step_with_previews(server: RunningServer) -> None:
    chunks = stream_chunks(server, body(extras={"progress": True, "progress_preview_every": 2}))
    *progress, final = chunks
    steps = [chunk["progress"] for chunk in progress]  # type: ignore[index]
    assert [step["step"] for step in steps] == list(range(1, len(steps) + 1))
    assert all(step["steps"] == len(steps) for step in steps)
    previews = [step for step in steps if "preview" in step]
    assert [step["step"] for step in previews] == [s for s in range(2, len(steps) + 1, 2)] + (
        [len(steps)] if len(steps) % 2 else []
    )
    preview = Image.open(io.BytesIO(base64.b64decode(previews[0]["preview"])))
    assert preview.format == "JPEG" and preview.size == (8, 8)
    assert final["result"] == "success"


def test_errors_before_the_stream_starts_are_ordinary_errors(server: RunningServer) -> None:
    with pytest.raises(ClientError) as caught:
        bedrock(server.url).invoke_model_with_response_stream(modelId=MODEL, body=body(cfg_scale=99))
    assert caught.value.response["Error"]["Code"] == "ValidationException"


def test_a_client_that_disconnects_stops_its_work_at_the_next_step(server: RunningServer) -> None:
    def abandoned() -> float:
        return metric(server, "sdxl_abandoned_requests_total", stage="running")

    before = abandoned()
    # 512x512 at 50 full steps runs for seconds on the tiny model: long enough to leave in the middle.
    long_request = body(
        steps=50,
        image_strength=0.0,
        init_image=base64.b64encode(gradient_png(512, 512)).decode(),
        extras={"progress": True, "progress_preview_every": 0},
    )
    path = f"/model/{MODEL}/invoke-with-response-stream"
    with httpx.stream("POST", server.url + path, content=long_request, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the first progress frame: the work is running
    deadline = time.monotonic() + 60
    while abandoned() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert abandoned() == before + 1
    # The engine is free again: a new request is answered.
    assert stream_chunks(server, body())[0]["result"] == "success"
