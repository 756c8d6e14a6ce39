"""A1111's interrupt and skip as signals the engine loop acts on at its next tick boundary."""

from __future__ import annotations

import threading

from sdxl_bedrock.errors import ServiceError


class Stopped(ServiceError):
    """A row of a request stopped by its StopSignal before it took a step: it makes no image."""


class StopSignal:
    """Stops a request's rows early; set from any thread, acted on by the engine loop at its next tick.

    `skip()` (one-shot): the request's rows running at that tick that have taken a step end at it, each
    answering its image so far (the clean estimate of that step); its rows not started yet run as usual.
    `interrupt()` (lasting): the running rows end the same way, and every row of the request that has not
    taken a step is dropped, now or when it comes to join: its caller gets `Stopped`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interrupted = False
        self._skip = False

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True

    def skip(self) -> None:
        with self._lock:
            self._skip = True

    @property
    def interrupted(self) -> bool:
        with self._lock:
            return self._interrupted

    def take_skip(self) -> bool:
        """Whether a skip was asked since the last call (and forget it)."""
        with self._lock:
            asked, self._skip = self._skip, False
            return asked
