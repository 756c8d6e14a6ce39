"""The sample project's tests: the fixtures through boto3 and through code that builds its own client, with
and without moto's mock_aws for the other services."""

from __future__ import annotations

import base64
import io
import json

import bedrock_app
import boto3
from moto import mock_aws
from PIL import Image


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_client_fixture_invokes_sdxl(sdxl_bedrock_client) -> None:
    body = {
        "text_prompts": [{"text": "a lighthouse"}],
        "init_image": base64.b64encode(png()).decode(),
        "seed": 5,
    }
    answer = sdxl_bedrock_client.invoke_model(
        modelId="stability.stable-diffusion-xl-v1", body=json.dumps(body)
    )
    artifact = json.loads(answer["body"].read())["artifacts"][0]
    assert (artifact["seed"], artifact["finishReason"]) == (5, "SUCCESS")


def test_code_that_builds_its_own_client(sdxl_bedrock_env) -> None:
    image, seed = bedrock_app.restyle(png(), "a watercolour")
    assert seed == 7
    assert Image.open(io.BytesIO(image)).size == (64, 64)


def test_beside_moto(sdxl_bedrock_env) -> None:
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="images")
        assert bedrock_app.restyle_to_s3(png(), "a watercolour", "images", "out.png") == 7
        stored = boto3.client("s3").get_object(Bucket="images", Key="out.png")["Body"].read()
    assert Image.open(io.BytesIO(stored)).format == "PNG"


def test_beside_moto_with_bedrock_runtime_passed_through(sdxl_bedrock_env) -> None:
    with mock_aws(config={"core": {"passthrough": {"services": ["bedrockruntime"]}}}):
        boto3.client("s3").create_bucket(Bucket="images")
        assert bedrock_app.restyle_to_s3(png(), "a watercolour", "images", "out.png") == 7
