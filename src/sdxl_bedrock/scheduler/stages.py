"""The stage runner: how every stage of a row's life meets a failure, in one place.

Each stage (join: prompt and init-image encoding; tick: the UNet call and each row's step; finish: the
VAE decode and the screen; png: the image's encoding) is a call over a group of rows. A group call either
succeeds for every row it was given, or raises and changes no row's outcome; a failure that is one row's
own (its sampler step, its non-finite image) is set on that row by the stage itself and is not the
runner's business. When the call raises, the runner does what Ray Serve's `_handle_batches` does for a
batch, one outcome per row, with the retries a GPU's failures call for:

- out of memory: the group is halved and each half run again, down to one row; a row alone that runs out
  of memory runs once more (memory its companions held may have come back), then fails alone;
- any other error (a client's too, say an InvalidRequest raised inside the engine: the call cannot say
  whose it was): the rows run again one by one, once each; a row that fails alone fails alone, with the
  error as it is (the batcher gives it its wire's shape).

Invariant: every row given gets exactly one outcome (the stage's own, or `failed(stage, row, error)`),
and a row that succeeds is run with exactly the arithmetic it would have had alone or in any other group (the
stages keep rows independent), so its companions' failures never change its image. Rows whose caller has
gone (`skip`) are not run again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stage(enum.StrEnum):
    JOIN = "join"
    TICK = "tick"
    FINISH = "finish"
    PNG = "png"


def out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError (by name: the scheduler never imports torch) or the host's MemoryError."""
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


class StageRunner(Generic[T]):
    """Runs one stage's group calls under the policy above.

    `failed(stage, row, error)` gives a row its failure; `on_out_of_memory(stage, rows)` hears each group
    of `rows` that ran out of memory and is split (the tick planner lowers its cap there);
    `on_retry(stage, reason)` counts each retry for /metrics (`reason`: out_of_memory, error); `skip(row)`
    says a row's caller left."""

    def __init__(
        self,
        failed: Callable[[Stage, T, BaseException], None],
        *,
        skip: Callable[[T], bool] = lambda _: False,
        on_out_of_memory: Callable[[Stage, int], None] | None = None,
        on_retry: Callable[[Stage, str], None] | None = None,
    ) -> None:
        self.failed = failed
        self.skip = skip
        self.on_out_of_memory = on_out_of_memory
        self.on_retry = on_retry

    def run(self, stage: Stage, rows: Sequence[T], call: Callable[[Sequence[T]], None]) -> None:
        self._run(stage, list(rows), call, alone=False)

    def _run(self, stage: Stage, rows: list[T], call: Callable[[Sequence[T]], None], *, alone: bool) -> None:
        rows = [row for row in rows if not self.skip(row)]
        if not rows:
            return
        try:
            call(rows)
            return
        except Exception as error:
            if out_of_memory(error):
                self._after_out_of_memory(stage, rows, call, error, alone=alone)
                return
            if len(rows) == 1:
                self.failed(stage, rows[0], error)
                return
            log.warning("%s of %d rows failed (%r); running them one by one", stage, len(rows), error)
            self._retried(stage, "error")
            for row in rows:
                self._run_once_alone(stage, row, call)

    def _after_out_of_memory(
        self,
        stage: Stage,
        rows: list[T],
        call: Callable[[Sequence[T]], None],
        error: BaseException,
        *,
        alone: bool,
    ) -> None:
        if len(rows) == 1:
            if alone:
                self.failed(stage, rows[0], error)
                return
            log.warning("%s of one row ran out of memory; running it once more", stage)
            self._retried(stage, "out_of_memory")
            self._run(stage, rows, call, alone=True)
            return
        if self.on_out_of_memory is not None:
            self.on_out_of_memory(stage, len(rows))
        half = (len(rows) + 1) // 2
        log.warning("%s of %d rows ran out of memory; running it in halves", stage, len(rows))
        self._retried(stage, "out_of_memory")
        self._run(stage, rows[:half], call, alone=False)
        self._run(stage, rows[half:], call, alone=False)

    def _run_once_alone(self, stage: Stage, row: T, call: Callable[[Sequence[T]], None]) -> None:
        if self.skip(row):
            return
        try:
            call([row])
        except Exception as error:
            self.failed(stage, row, error)

    def _retried(self, stage: Stage, reason: str) -> None:
        if self.on_retry is not None:
            self.on_retry(stage, reason)
