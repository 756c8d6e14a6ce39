"""What the scheduler reads of the engine: its rows and its stages (engine/pipeline.py implements both).

The loop never imports the engine; it holds these interfaces, so the same loop runs the real engine and a
test's stand-in, and the HTTP side stays free of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from PIL import Image

from sdxl_bedrock.schema import GeneratedImage, GenerationRequest


class PendingPreview(Protocol):
    """A small picture of a row's latents at one step, on its way to the host (engine/previews.py)."""

    def image(self) -> Image.Image:
        """The picture (RGB, 1/8 of the output size). It may wait for the device (up to a tick), so call it on
        a host thread (`Workers.on_host`), never on the engine thread or the event loop."""
        ...


Preview = Callable[[], PendingPreview]
"""`preview()` takes the row's latents as they are at that step and starts their copy to the host without
waiting: cheap enough for the engine thread (a step callback), and callable later from a host thread too."""

StepCallback = Callable[[int, int, Preview], None]
"""A job's progress hook, called on the engine thread after each of its steps with (done, total, preview).
It must not wait: every row of the tick waits with it. Make the picture on a host thread."""


class EngineRow(Protocol):
    """What the loop reads of an engine's row (engine/rows.py)."""

    @property
    def done(self) -> bool: ...
    @property
    def steps_done(self) -> int: ...
    @property
    def pixel_size(self) -> Any: ...
    @property
    def unet_rows(self) -> int: ...

    checkpoint: str  # the model library's name of the checkpoint it runs on
    failed: BaseException | None
    result: GeneratedImage | None


class RowEngine(Protocol):
    """The engine's stages as the loop calls them (engine/pipeline.py, one checkpoint; engine/checkpoints.py,
    the model library's). An engine over several checkpoints also has `default_name` (the checkpoint of
    requests that name none), `max_on_device` (how many checkpoints' rows may be in flight at once) and
    `in_use(running, queued)` (the checkpoints rows in flight and waiting use, which it keeps)."""

    def start(
        self, requests: Sequence[GenerationRequest], on_steps: Sequence[StepCallback | None] | None = None
    ) -> Sequence[EngineRow]: ...
    def tick(self, rows: Sequence[Any]) -> None: ...
    def finish(self, rows: Sequence[Any]) -> None: ...
    def stop(self, rows: Sequence[Any]) -> None:
        """End running rows (each has taken a step) at their last step; `finish` then makes their images."""
        ...
