"""A small client for this server (or Bedrock itself): builds SDXL bodies, calls InvokeModel via boto3."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_ID = "stability.stable-diffusion-xl-v1"


def image_field(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def build_body(
    prompt: str,
    *,
    negative_prompt: str | None = None,
    image: Path | None = None,
    mask: Path | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An SDXL request body; `fields` are passed through as body keys (None values are left out)."""
    text_prompts: list[dict[str, Any]] = [{"text": prompt, "weight": 1.0}]
    if negative_prompt:
        text_prompts.append({"text": negative_prompt, "weight": -1.0})
    body: dict[str, Any] = {"text_prompts": text_prompts}
    if image is not None:
        body["init_image"] = image_field(image)
    if mask is not None:
        body["mask_image"] = image_field(mask)
    body.update({key: value for key, value in fields.items() if value is not None})
    return body


@dataclass(frozen=True)
class Result:
    png: bytes
    seed: int
    finish_reason: str


def bedrock_client(endpoint_url: str | None = None, region: str = "us-east-1") -> Any:
    """A boto3 bedrock-runtime client; against a local server any credentials do."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    credentials = session.get_credentials()
    keys = {} if credentials else {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    return session.client(
        "bedrock-runtime",
        endpoint_url=endpoint_url,
        region_name=session.region_name or region,
        config=Config(read_timeout=600, retries={"max_attempts": 1}),
        **keys,
    )


def invoke(client: Any, body: dict[str, Any], model_id: str = MODEL_ID) -> Result:
    response = client.invoke_model(
        modelId=model_id, body=json.dumps(body), accept="application/json", contentType="application/json"
    )
    payload = json.loads(response["body"].read())
    artifact = payload["artifacts"][0]
    return Result(base64.b64decode(artifact["base64"]), int(artifact["seed"]), artifact["finishReason"])
