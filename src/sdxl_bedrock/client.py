"""A small client for this server (or Bedrock itself): request bodies, InvokeModel, streams with progress.

Two ways in:
- through boto3, exactly as a Bedrock user would (`bedrock_client`, `invoke`, `invoke_streaming`);
- without boto3, over plain HTTP (`HttpClient`): the Bedrock face (invoke and stream with progress) and the
  Stability v1 face, with an optional bearer API key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

MODEL_ID = "stability.stable-diffusion-xl-v1"
STABILITY_ENGINE = "stable-diffusion-xl-1024-v1-0"

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

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


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


# -- through boto3 ----------------------------------------------------------------------------------------


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


# -- over plain HTTP, without boto3 -----------------------------------------------------------------------


class HttpClient:
    """This server's two faces over plain HTTP (httpx), for users who do not want boto3."""

    def __init__(
        self, endpoint: str = "http://127.0.0.1:8080", api_key: str | None = None, timeout_s: float = 600
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=endpoint, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def invoke(self, body: dict[str, Any], model_id: str = MODEL_ID) -> Result:
        response = self.http.post(
            f"/model/{quote(model_id, safe='')}/invoke", json=body, headers={"Accept": "application/json"}
        )
        raise_for_bedrock_error(response)
        return result_of(response.json())

    def stream(
        self,
        body: dict[str, Any],
        on_progress: ProgressCallback | None = None,
        model_id: str = MODEL_ID,
        preview_every: int = 0,
    ) -> Result:
        from botocore.eventstream import EventStreamBuffer

        if on_progress is not None:
            body = with_progress(body, preview_every)
        path = f"/model/{quote(model_id, safe='')}/invoke-with-response-stream"
        with self.http.stream(
            "POST", path, json=body, headers={"X-Amzn-Bedrock-Accept": "application/json"}
        ) as response:
            if response.status_code != 200:
                response.read()
                raise_for_bedrock_error(response)

            def chunks() -> Iterator[dict[str, Any]]:
                frames = EventStreamBuffer()
                for data in response.iter_bytes():
                    frames.add_data(data)
                    for frame in frames:
                        if frame.headers.get(":message-type") == "exception":
                            raise ClientError(
                                str(frame.headers.get(":exception-type")),
                                json.loads(frame.payload)["message"],
                            )
                        yield json.loads(base64.b64decode(json.loads(frame.payload)["bytes"]))

            return read_chunks(chunks(), on_progress)

    def stability_text_to_image(self, body: dict[str, Any], engine: str = STABILITY_ENGINE) -> list[Result]:
        response = self.http.post(
            f"/v1/generation/{engine}/text-to-image", json=body, headers={"Accept": "application/json"}
        )
        return stability_results(response)

    def stability_image_to_image(
        self,
        init_image: bytes,
        fields: dict[str, Any],
        mask_image: bytes | None = None,
        engine: str = STABILITY_ENGINE,
    ) -> list[Result]:
        """Multipart image-to-image; with `mask_image` (or `mask_source: INIT_IMAGE_ALPHA`), masking."""
        files = {"init_image": ("init.png", init_image, "image/png")}
        if mask_image is not None:
            files["mask_image"] = ("mask.png", mask_image, "image/png")
        masking = mask_image is not None or "mask_source" in fields
        route = "image-to-image/masking" if masking else "image-to-image"
        response = self.http.post(
            f"/v1/generation/{engine}/{route}",
            files=files,
            data=form_fields(fields),
            headers={"Accept": "application/json"},
        )
        return stability_results(response)


def form_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Stability's form encoding: `text_prompts[0][text]`, `text_prompts[0][weight]`, other fields by name."""
    form: dict[str, str] = {}
    for key, value in fields.items():
        if key == "text_prompts":
            for index, prompt in enumerate(value):
                form.update({f"text_prompts[{index}][{name}]": str(part) for name, part in prompt.items()})
        else:
            form[key] = json.dumps(value) if isinstance(value, dict) else str(value)
    return form


def raise_for_bedrock_error(response: Any) -> None:
    if response.status_code >= 400:
        code = response.headers.get("x-amzn-errortype", "UnknownError").split(":")[0]
        raise ClientError(code, response.json().get("message", response.text), response.status_code)


def stability_results(response: Any) -> list[Result]:
    if response.status_code >= 400:
        error = response.json()
        raise ClientError(error.get("name", "error"), error.get("message", ""), response.status_code)
    return [
        Result(base64.b64decode(a["base64"]), int(a["seed"]), a["finishReason"])
        for a in response.json()["artifacts"]
    ]
