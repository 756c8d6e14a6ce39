"""Callers who leave (issue 14): no work is done for a caller that hung up or timed out, and every client
gets its answer to a body over the limit, however it sends it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from sdxl_bedrock.config import BODY_LIMIT_BYTES
from tests.conftest import RunningServer, TlsFiles, bedrock, gradient_png, metric
from tests.e2e.test_js_sdk import TRANSPORTS, js_sdk

MODEL = "stability.stable-diffusion-xl-v1"
INVOKE = f"/model/{MODEL}/invoke"
ABANDONED = "sdxl_abandoned_requests_total"
IMAGES = "sdxl_images_total"
# Fifty full steps at 512x512: twelve of them share every tick, so each runs for many seconds (about 12 s on a
# quiet 2-core machine), far past the one second after which their clients hang up.
SHARED_LONG = {
    "text_prompts": [{"text": "a lighthouse in a storm"}],
    "init_image": base64.b64encode(gradient_png(512, 512)).decode(),
    "image_strength": 0.0,
    "steps": 50,
}
# The request measured alone and after the hang-ups: the same size as theirs, so it would share their ticks
# if they were not dropped (and take many times as long); long enough that the tick in flight when they hang
# up (one step of twelve rows) is a small part of it.
ORDINARY = {"text_prompts": [{"text": "a kite"}], "width": 512, "height": 512, "steps": 30}
# One request alone that runs for seconds (2.6 s on a quiet 2-core machine, five times boto3's read timeout
# below; a busy machine only makes it longer): 50 full steps at 1024x1024.
LONG = {
    "text_prompts": [{"text": "a lighthouse in a storm"}],
    "init_image": base64.b64encode(gradient_png(1024, 1024)).decode(),
    "image_strength": 0.0,
    "steps": 50,
}
TOO_LARGE_MESSAGE = f"the request body is larger than {BODY_LIMIT_BYTES} bytes"


def wait_until(condition: Any, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def timed_invoke(server: RunningServer, body: dict[str, Any]) -> float:
    started = time.monotonic()
    response = httpx.post(server.url + INVOKE, json=body, timeout=600)
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def test_twelve_callers_who_hang_up_leave_no_work_behind(server: RunningServer) -> None:
    """Twelve 50-step requests whose clients hang up after a second: the next ordinary request takes no
    more than three times what it takes alone (both measured here), and every one of the twelve is dropped."""
    timed_invoke(server, ORDINARY)  # a first request warms this size up
    alone = min(timed_invoke(server, ORDINARY) for _ in range(2))
    abandoned_before = metric(server, ABANDONED)
    images_before = metric(server, IMAGES)

    async def hang_up(client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(server.url + INVOKE, json=SHARED_LONG, timeout=httpx.Timeout(60, read=1.0))

    async def twelve() -> None:
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(hang_up(client) for _ in range(12)))

    asyncio.run(twelve())
    after_hang_ups = timed_invoke(server, ORDINARY)
    assert wait_until(lambda: metric(server, ABANDONED) >= abandoned_before + 12)
    # Measured again once all twelve are known to be gone: on a machine whose load changed meanwhile (another
    # suite, a build), "its normal time" is the slower of the two; work left running for the twelve would
    # slow the request right after them, not this one.
    alone = max(alone, timed_invoke(server, ORDINARY))
    print(f"ordinary request alone: {alone:.2f} s; right after 12 hang-ups: {after_hang_ups:.2f} s")
    assert after_hang_ups < 3 * alone
    assert metric(server, ABANDONED) == abandoned_before + 12
    assert metric(server, IMAGES) == images_before + 2  # the ordinary requests'; none for the twelve


def test_boto3_retrying_read_timeouts_runs_one_generation_per_connected_attempt(
    server: RunningServer,
) -> None:
    """botocore gives up on each attempt after its read timeout and retries: each attempt's work is dropped
    when it hangs up, so the retries never stack generations."""
    abandoned_before = metric(server, ABANDONED)
    images_before = metric(server, IMAGES)
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        # max_attempts counts the retries: four attempts in all.
        config=Config(read_timeout=0.5, retries={"max_attempts": 3, "mode": "standard"}),
    )
    with pytest.raises(ReadTimeoutError):
        client.invoke_model(modelId=MODEL, body=json.dumps(LONG))
    attempts = 4
    assert wait_until(lambda: metric(server, ABANDONED) >= abandoned_before + attempts)
    assert metric(server, ABANDONED) == abandoned_before + attempts
    assert metric(server, IMAGES) == images_before
    assert 'status="499"' in httpx.get(server.url + "/metrics").text


# ---- a body over the limit: read to its end, then answered ----------------------------------------------


def oversized_body() -> dict[str, object]:
    """A body of about 26 MB, over the 25,000,000-byte limit."""
    return {"text_prompts": [{"text": "a lighthouse"}], "init_image": "A" * 26_000_000}


def assert_too_large(error: dict[str, Any]) -> None:
    assert error["name"] == "ValidationException", error
    assert error["status"] == 400
    assert TOO_LARGE_MESSAGE in error["message"]


@pytest.mark.parametrize("http2", TRANSPORTS)
def test_the_js_sdk_gets_validation_exception_for_a_26_mb_body(server: RunningServer, http2: bool) -> None:
    assert_too_large(js_sdk(server, "InvokeModel", oversized_body(), http2=http2)["error"])


def test_the_js_sdk_gets_validation_exception_for_a_26_mb_body_over_tls_http2(
    tls_auth_server: RunningServer, tls_files: TlsFiles
) -> None:
    result = js_sdk(tls_auth_server, "InvokeModel", oversized_body(), http2=True, trusted_cert=tls_files.cert)
    assert_too_large(result["error"])


def test_boto3_gets_validation_exception_for_a_26_mb_body(server: RunningServer) -> None:
    with pytest.raises(ClientError) as raised:
        bedrock(server.url).invoke_model(modelId=MODEL, body=json.dumps(oversized_body()))  # type: ignore[attr-defined]
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert TOO_LARGE_MESSAGE in raised.value.response["Error"]["Message"]
