"""The body of a response stream: optional progress chunks, then the result chunk (or an exception frame).

Without the opt-in the stream is exactly Bedrock's: one `chunk` event holding the InvokeModel JSON.
With `"extras": {"progress": true}` a chunk `{"progress": {"step": i, "steps": n}}` precedes it after each
denoising step, and every `progress_preview_every` steps (default 5; 0 turns previews off) that progress
object also carries `"preview": "<base64 JPEG>"`, a small picture of the current latents.

The engine thread only starts a preview's copy to the host (scheduler.types.Preview); the picture and its
JPEG are made on a host thread as the stream sends the chunk, so a streaming client never holds up a tick.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from PIL import Image

from sdxl_bedrock.api.bedrock import eventstream
from sdxl_bedrock.api.bedrock.errors import bedrock_error, bedrock_message
from sdxl_bedrock.api.bedrock.responses import artifacts_json
from sdxl_bedrock.errors import InvalidRequest, ServiceError
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.scheduler.types import PendingPreview, Preview
from sdxl_bedrock.schema import Artifact, GenerationRequest

log = logging.getLogger(__name__)

DEFAULT_PREVIEW_EVERY = 5


@dataclass(frozen=True)
class ProgressOptions:
    enabled: bool = False
    preview_every: int = DEFAULT_PREVIEW_EVERY


def progress_options(extras: dict[str, object]) -> ProgressOptions:
    """The progress options a body's `extras` asks for (InvalidRequest where a value is mistyped)."""
    enabled = extras.get("progress", False)
    every = extras.get("progress_preview_every", DEFAULT_PREVIEW_EVERY)
    if not isinstance(enabled, bool):
        raise InvalidRequest("#/extras/progress: expected type: Boolean", field="extras.progress")
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise InvalidRequest(
            "#/extras/progress_preview_every: expected a non-negative Integer",
            field="extras.progress_preview_every",
        )
    return ProgressOptions(enabled, every)


def jpeg_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def preview_jpeg(preview: PendingPreview) -> str:
    """On a host thread: it may wait for the preview's copy."""
    return jpeg_base64(preview.image())


def progress_chunk(done: int, total: int, preview_jpeg: str | None) -> bytes:
    progress: dict[str, object] = {"step": done, "steps": total}
    if preview_jpeg is not None:
        progress["preview"] = preview_jpeg
    return eventstream.chunk_frame(json.dumps({"progress": progress}).encode())


async def stream_events(
    runtime: Runtime,
    request: GenerationRequest,
    options: ProgressOptions,
    encode: Callable[[list[Artifact]], bytes] = artifacts_json,
) -> AsyncIterator[bytes]:
    steps: asyncio.Queue[tuple[int, int, PendingPreview | None]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_step(done: int, total: int, preview: Preview) -> None:
        # On the engine thread, which must not wait: only the copy of the latents starts here.
        wants_preview = options.preview_every > 0 and (done % options.preview_every == 0 or done == total)
        loop.call_soon_threadsafe(steps.put_nowait, (done, total, preview() if wants_preview else None))

    async def frame(done: int, total: int, preview: PendingPreview | None) -> bytes:
        jpeg = await runtime.workers.on_host(preview_jpeg, preview) if preview is not None else None
        return progress_chunk(done, total, jpeg)

    work = asyncio.ensure_future(runtime.generations.generate(request, on_step if options.enabled else None))
    try:
        while not work.done():
            getter = asyncio.ensure_future(steps.get())
            await asyncio.wait({work, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield await frame(*getter.result())
            else:
                getter.cancel()
        while not steps.empty():
            yield await frame(*steps.get_nowait())
        try:
            artifacts = work.result()
        except ServiceError as error:
            yield eventstream.exception_frame(bedrock_error(error).stream_exception, bedrock_message(error))
            return
        except Exception as error:
            log.exception("unexpected error in a response stream", exc_info=error)
            yield eventstream.exception_frame("internalServerException", "An internal error occurred.")
            return
        yield eventstream.chunk_frame(await runtime.workers.on_host(encode, artifacts))
    finally:
        # The client went away (or the stream ended): let the batcher drop or stop this work.
        work.cancel()
