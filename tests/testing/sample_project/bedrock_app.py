"""The code under test: it builds its own clients, as production code does, and knows nothing of tests."""

from __future__ import annotations

import base64
import json

import boto3

MODEL_ID = "stability.sd3-5-large-v1:0"


def restyle(png: bytes, prompt: str, *, seed: int = 7) -> tuple[bytes, int]:
    """An image made from `png` by SD3.5 Large on Bedrock: its bytes and its seed."""
    client = boto3.client("bedrock-runtime")
    body = {
        "prompt": prompt,
        "mode": "image-to-image",
        "image": base64.b64encode(png).decode(),
        "strength": 0.6,
        "seed": seed,
    }
    answer = json.loads(client.invoke_model(modelId=MODEL_ID, body=json.dumps(body))["body"].read())
    if answer["finish_reasons"][0] is not None:
        raise RuntimeError(answer["finish_reasons"][0])
    return base64.b64decode(answer["images"][0]), answer["seeds"][0]


def restyle_to_s3(png: bytes, prompt: str, bucket: str, key: str) -> int:
    """`restyle`, stored in S3; the seed."""
    image, seed = restyle(png, prompt)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=image, ContentType="image/png")
    return seed
