"""A small client for this server (or Bedrock itself), through boto3 exactly as a Bedrock user would:
request bodies (`build_body`), InvokeModel (`invoke`), streams with per-step progress (`invoke_streaming`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_ID = "stability.stable-diffusion-xl-v1"

ProgressCallback = Callable[[int, int, bytes | None], None]
"""Called with (step, steps, preview JPEG or None) for each progress chunk of a stream."""


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


class ClientError(Exception):
    """An error answer, in the API's own words: `code` (e.g. ValidationException) and `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def result_of(model_json: dict[str, Any]) -> Result:
    artifact = model_json["artifacts"][0]
    return Result(base64.b64decode(artifact["base64"]), int(artifact["seed"]), artifact["finishReason"])


def with_progress(body: dict[str, Any], preview_every: int) -> dict[str, Any]:
    return {
        **body,
        "extras": {**body.get("extras", {}), "progress": True, "progress_preview_every": preview_every},
    }


def read_chunks(chunks: Iterator[dict[str, Any]], on_progress: ProgressCallback | None) -> Result:
    """The model JSON chunks of a stream: progress chunks go to `on_progress`, the last is the result."""
    for chunk in chunks:
        progress = chunk.get("progress")
        if progress is None:
            return result_of(chunk)
        if on_progress is not None:
            preview = progress.get("preview")
            on_progress(progress["step"], progress["steps"], base64.b64decode(preview) if preview else None)
    raise ClientError("ModelStreamErrorException", "the stream ended without a result")


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
    return result_of(json.loads(response["body"].read()))


def invoke_streaming(
    client: Any,
    body: dict[str, Any],
    on_progress: ProgressCallback | None = None,
    model_id: str = MODEL_ID,
    preview_every: int = 0,
) -> Result:
    """InvokeModelWithResponseStream; with `on_progress`, asks for (and reports) per-step progress."""
    if on_progress is not None:
        body = with_progress(body, preview_every)
    stream = client.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))["body"]
    try:
        return read_chunks((json.loads(e["chunk"]["bytes"]) for e in stream if "chunk" in e), on_progress)
    finally:
        stream.close()
