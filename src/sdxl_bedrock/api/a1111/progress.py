"""The A1111 requests in progress: what `/sdapi/v1/progress` reports, and what `/interrupt` and `/skip` stop.

A1111 runs one job at a time and reports it; here every txt2img and img2img request of this wire runs at
once through the batcher, so `/progress` reports them all together: `job_count` their images, `job_no` the
images done, `sampling_step` / `sampling_steps` the latest step reported and its window, `progress` the
row steps done over all the steps asked (plus A1111's 0.01, so an idle bar reads 0 and a started one not),
`eta_relative` A1111's estimate from the oldest request's start, `current_image` the latest step's preview
(the cheap latent-to-RGB picture, 1/8 of the output size, made only when asked). `/interrupt` and `/skip`
act on all of them (batching.StopSignal). Requests of the other wires are not listed or stopped.

The engine thread only keeps a step's preview handle (scheduler.types.Preview): the copy of its latents to
the host, its picture and the PNG all happen when `/progress` asks, on a host thread, so a polling client
never holds up a tick.

Each request's rows report their steps from the engine thread (`Task.on_step`); the event loop reads the
counts, which only that thread writes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from PIL import Image

from sdxl_bedrock.scheduler.stops import StopSignal
from sdxl_bedrock.scheduler.types import Preview as StepPreview

Preview = Callable[[], Image.Image]
"""The latest step's picture; call it on a host thread (it may wait for the device)."""


def picture(preview: StepPreview) -> Image.Image:
    return preview().image()


@dataclass(eq=False)
class Task:
    """One request in progress: `images` rows of the same steps, in `passes` passes (2 with the hires fix,
    whose second pass A1111 counts as one more job per image); `steps_per_image` counts the steps of all
    passes where they are known before the first step."""

    job: str  # A1111's job name: "txt2img" or "img2img"
    images: int
    passes: int = 1
    steps_per_image: int | None = None
    skipped: bool = False
    skips: int = 0  # skips asked while it ran
    started: float = field(default_factory=time.time)
    stop: StopSignal = field(default_factory=StopSignal)
    window: int = 0  # steps each image runs (known from its first step)
    row_steps: int = 0  # steps done, all images together
    images_done: int = 0
    step: int = 0  # the latest step reported
    preview: StepPreview | None = None

    def on_step(self, done: int, total: int, preview: StepPreview) -> None:
        """The engine's step callback (engine thread): counts only, the preview is made when asked."""
        self.window = total
        self.row_steps += 1
        self.step = done
        if done == total:
            self.images_done += 1
        self.preview = preview


@dataclass(eq=False)
class FirstPass:
    """One image's first pass of the hires fix, as its task's steps see it, for whether a skip reached it.

    A1111 (modules/processing.py, process_images_inner) clears state.skipped only when the next batch
    starts, so a skip between an image's first step and its second pass's first step leaves the second
    pass no step to take (sd_samplers_cfg_denoiser.py, CFGDenoiser.forward raises InterruptedException at
    its first call). Here that is: the first pass ended before its last step, or a skip came after its
    first step. A pass that never took a step was never running when a skip came."""

    task: Task
    skips_at_first_step: int | None = None
    done: int = 0
    total: int = 0

    def on_step(self, done: int, total: int, preview: StepPreview) -> None:
        """The engine's step callback (engine thread), passed on to the task's."""
        if self.skips_at_first_step is None:
            self.skips_at_first_step = self.task.skips
        self.done, self.total = done, total
        self.task.on_step(done, total, preview)

    @property
    def skipped(self) -> bool:
        if self.skips_at_first_step is None:
            return False
        return self.done < self.total or self.task.skips > self.skips_at_first_step


@dataclass(frozen=True)
class Snapshot:
    progress: float
    eta_relative: float
    state: dict[str, object]
    textinfo: str | None
    preview: Preview | None


class Tasks:
    """The running A1111 requests of one app, and A1111's interrupted/skipped flags of the latest job."""

    def __init__(self) -> None:
        self.running: list[Task] = []
        self.interrupted = False
        self.skipped = False
        self.job_timestamp = ""

    @contextmanager
    def track(
        self, job: str, images: int, *, passes: int = 1, steps_per_image: int | None = None
    ) -> Iterator[Task]:
        if not self.running:  # A1111's state.begin: a new job clears the last one's flags
            self.interrupted = self.skipped = False
            self.job_timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        task = Task(job, images, passes, steps_per_image)
        self.running.append(task)
        try:
            yield task
        finally:
            self.running.remove(task)

    def interrupt(self) -> None:
        self.interrupted = True
        for task in self.running:
            task.stop.interrupt()

    def skip(self) -> None:
        self.skipped = True
        for task in self.running:
            task.skipped = True
            task.skips += 1
            task.stop.skip()

    def snapshot(self, now: float | None = None) -> Snapshot:
        tasks = list(self.running)
        latest = max(tasks, key=lambda task: task.row_steps, default=None)
        state: dict[str, object] = {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": False,
            "job": "+".join(sorted({task.job for task in tasks})),
            "job_count": sum(task.images * task.passes for task in tasks),
            "job_timestamp": self.job_timestamp,
            "job_no": sum(task.images_done for task in tasks),
            "sampling_step": latest.step if latest is not None else 0,
            "sampling_steps": latest.window if latest is not None else 0,
        }
        if not tasks:
            return Snapshot(0.0, 0.0, state, None, None)
        asked = sum(task.images * (task.steps_per_image or task.window) for task in tasks if task.window)
        done = sum(task.row_steps for task in tasks)
        progress = 0.01 + (done / asked if asked else 0.0)
        elapsed = (now if now is not None else time.time()) - min(task.started for task in tasks)
        eta_relative = elapsed / progress - elapsed
        textinfo = f"{state['job_no']} of {state['job_count']} images done ({len(tasks)} requests)"
        preview = next(
            (task.preview for task in sorted(tasks, key=lambda t: -t.row_steps) if task.preview), None
        )
        current = functools.partial(picture, preview) if preview is not None else None
        return Snapshot(min(progress, 1.0), eta_relative, state, textinfo, current)
