"""Several checkpoints behind the one engine the batcher drives: each row runs on its request's checkpoint,
and the checkpoints live in three tiers, least recently used first out.

- on the device: at most `max_on_device` checkpoints, each a whole Engine (pipeline.py) ready to tick;
- in host memory: at most `max_on_host` more, moved off the device whole (`.to("cpu")`), so that coming
  back costs a host-to-device copy, not a read from disk;
- on disk: the rest, loaded again when asked for (library.py says where each one is).
A checkpoint in use (rows in flight or waiting, as the batcher says through `in_use`) is never moved out;
the batcher admits rows of at most `max_on_device` checkpoints at a time, so one that must be loaded always
finds a slot whose checkpoint is not in use. A checkpoint that left the library (its file removed) keeps
serving the rows it has, and goes as soon as none uses it.

Rows of different checkpoints never share a model call: `tick` takes rows of one checkpoint (the planner
chooses ticks by checkpoint and size), `start`, `stop` and `finish` split theirs by checkpoint.

Every move is timed (`moves`: (checkpoint, to, seconds), read by /metrics) and announced while it runs
(`moving`: the checkpoint and where to, or None), for A1111's progress.
"""

from __future__ import annotations

import collections
import functools
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sdxl_bedrock.engine.adapters import HostLoras
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.errors import ModelFailure
from sdxl_bedrock.library import Checkpoint, UnknownCheckpoint
from sdxl_bedrock.schema import GenerationRequest

log = logging.getLogger(__name__)

Lookup = Callable[[str], Checkpoint]
Loader = Callable[[Checkpoint], Engine]
MoveHook = Callable[[str, str, float], None]


class CheckpointEngines:
    """The batcher's RowEngine over the model library's checkpoints (see the module's docstring).

    `lookup` finds a library name's Checkpoint (raises UnknownCheckpoint); `load` makes an Engine of one
    on the device; `default` is the first, already loaded. Called on the engine thread only."""

    def __init__(
        self,
        default: Engine,
        default_name: str,
        *,
        lookup: Lookup,
        load: Loader,
        max_on_device: int = 1,
        max_on_host: int = 1,
        on_move: MoveHook | None = None,
    ) -> None:
        self.default_name = default_name
        self.lookup = lookup
        self.load = load
        self.max_on_device = max(1, max_on_device)
        self.max_on_host = max(0, max_on_host)
        if default.device.type == "cpu":
            # Host memory is the device's: a checkpoint "in host memory" is as ready as one "on the device",
            # so the two bounds add up, and rows of all of them may be in flight at once.
            self.max_on_device, self.max_on_host = self.max_on_device + self.max_on_host, 0
        self.on_move = on_move
        self.device = default.device
        self.on_device: OrderedDict[str, Engine] = OrderedDict({default_name: default})
        self.on_host: OrderedDict[str, Engine] = OrderedDict()
        self.in_use_now: frozenset[str] = frozenset()
        self.moving: tuple[str, str] | None = None
        # Counted over every checkpoint's engine, for /metrics (the engines add to these same counters).
        self.unet_calls: collections.Counter[str] = default.unet.calls
        self.non_finite: collections.Counter[str] = default.non_finite
        self.clip_guide = default.clip_guide
        self.loras: HostLoras | None = getattr(default, "loras", None)

    # -- what the batcher calls ----------------------------------------------------------------------------

    def start(
        self, requests: Sequence[GenerationRequest], on_steps: Sequence[Any] | None = None
    ) -> list[Any]:
        callbacks = list(on_steps) if on_steps is not None else [None] * len(requests)
        rows: list[Any] = [None] * len(requests)
        for name, indices in by_checkpoint(self.name_of(request) for request in requests).items():
            engine = self.engine(name)
            started = engine.start([requests[i] for i in indices], [callbacks[i] for i in indices])
            for index, row in zip(indices, started, strict=True):
                row.checkpoint = name
                rows[index] = row
        return rows

    def tick(self, rows: Sequence[Any]) -> None:
        names = {row.checkpoint for row in rows}
        if len(names) != 1:
            raise AssertionError(f"a tick took rows of several checkpoints: {sorted(names)}")
        self.engine(rows[0].checkpoint).tick(rows)

    def stop(self, rows: Sequence[Any]) -> None:
        for name, indices in by_checkpoint(row.checkpoint for row in rows).items():
            self.engine(name).stop([rows[i] for i in indices])

    def finish(self, rows: Sequence[Any]) -> None:
        for name, indices in by_checkpoint(row.checkpoint for row in rows).items():
            self.engine(name).finish([rows[i] for i in indices])

    def adapters_ready(self, request: GenerationRequest) -> bool:
        """Whether the request's LoRA files are in host memory (engine/adapters.py HostLoras); starts
        reading them if not. Never blocks."""
        return self.loras is None or not request.loras or self.loras.ready(request.loras)

    def loras_resident(self) -> dict[str, int]:
        """Adapters loaded into the checkpoints held, by where (device, host)."""
        counts = {"device": 0, "host": 0}
        for tier in (self.on_device, self.on_host):
            for engine in tier.values():
                adapters = getattr(engine, "adapters", None)
                for where in adapters.resident().values() if adapters is not None else ():
                    counts[where] += 1
        return counts

    def in_use(self, running: frozenset[str], queued: frozenset[str] = frozenset()) -> None:
        """The checkpoints of rows in flight or joining (`running`: never moved out) and of requests
        waiting (`queued`): a checkpoint that left the library goes once it is in neither."""
        self.in_use_now = running
        gone = False
        for tier in (self.on_device, self.on_host):
            for name in [name for name in tier if name not in running | queued and not self.listed(name)]:
                log.info("checkpoint %s left the library and has no rows left: dropped", name)
                self.moved(name, "disk", functools.partial(self.drop, tier, name))
                gone = True
        if gone:
            self.collect()

    # -- the tiers -----------------------------------------------------------------------------------------

    def name_of(self, request: GenerationRequest) -> str:
        return request.checkpoint or self.default_name

    def engine(self, name: str) -> Engine:
        """`name`'s engine on the device, moving or loading it there (and others out) first."""
        if name in self.on_device:
            self.on_device.move_to_end(name)
            return self.on_device[name]
        # Taken out of host memory before making room: the room made there must not evict it.
        coming_back = self.on_host.pop(name, None)
        self.make_room_on_device()
        if coming_back is not None:
            engine = coming_back
            if self.device.type != "cpu":  # on a CPU its weights never left: nothing to copy or refill
                self.moved(name, "device", functools.partial(move_engine, engine, self.device))
        else:
            try:
                checkpoint = self.lookup(name)
            except UnknownCheckpoint:
                raise ModelFailure(
                    f"The checkpoint {name!r} was removed from the model library before this request ran."
                ) from None
            engine = self.moved(name, "device", lambda: self.loaded(checkpoint), source="disk")
        self.on_device[name] = engine
        return engine

    def loaded(self, checkpoint: Checkpoint) -> Engine:
        engine = self.load(checkpoint)
        # One count over every checkpoint, and one CLIP model for guidance whatever the checkpoint.
        engine.unet.calls = self.unet_calls
        engine.non_finite = self.non_finite
        engine.clip_guide = self.clip_guide
        return engine

    def make_room_on_device(self) -> None:
        dropped = False
        while len(self.on_device) >= self.max_on_device:
            idle = [name for name in self.on_device if name not in self.in_use_now]
            if not idle:
                # The batcher admits rows of at most max_on_device checkpoints: this is a bug, not a load.
                raise ModelFailure("No checkpoint slot is free on the device; the request was not run.")
            name = idle[0]
            if self.max_on_host == 0 or not self.listed(name):
                self.moved(name, "disk", functools.partial(self.drop, self.on_device, name))
                dropped = True
                continue
            while len(self.on_host) >= self.max_on_host:
                oldest = next(iter(self.on_host))
                self.moved(oldest, "disk", functools.partial(self.drop, self.on_host, oldest))
                dropped = True
            engine = self.on_device.pop(name)
            if self.device.type != "cpu":  # on a CPU, host memory is the device's: nothing to copy
                self.moved(name, "host", functools.partial(move_engine, engine, torch.device("cpu")))
            self.on_host[name] = engine
        if dropped:
            self.collect()

    def moved(self, name: str, to: str, move: Callable[[], Any], source: str | None = None) -> Any:
        """Run `move`, announced in `moving` while it runs, timed for /metrics."""
        self.moving = (name, to)
        started = time.perf_counter()
        try:
            return move()
        finally:
            seconds = time.perf_counter() - started
            self.moving = None
            where = f"{source} to {to}" if source else f"to {to}"
            log.info("checkpoint %s moved %s in %.2f s", name, where, seconds)
            if self.on_move is not None:
                self.on_move(name, to if source is None else f"{source}-{to}", seconds)

    def drop(self, tier: OrderedDict[str, Engine], name: str) -> None:
        """Let `name`'s engine go from `tier`: its memory comes back once nothing refers to it (`collect`)."""
        tier.pop(name).release()

    def collect(self) -> None:
        """Give back what dropped engines held (their modules refer to each other: a cycle collection)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def listed(self, name: str) -> bool:
        try:
            self.lookup(name)
        except UnknownCheckpoint:
            return False
        return True

    # -- what the server reads -----------------------------------------------------------------------------

    @property
    def default(self) -> Engine:
        return self.on_device.get(self.default_name) or next(iter(self.on_device.values()))

    def gpu_memory_bytes(self) -> int:
        return self.default.gpu_memory_bytes()

    def cuda_memory(self) -> dict[str, dict[str, int]] | None:
        return self.default.cuda_memory()

    def resident(self) -> dict[str, str]:
        """Each checkpoint in memory, and where: `device` or `host`."""
        return {**{name: "host" for name in self.on_host}, **{name: "device" for name in self.on_device}}


def by_checkpoint(names: Any) -> dict[str, list[int]]:
    """Indices grouped by checkpoint name, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(name, []).append(index)
    return groups


def move_engine(engine: Engine, device: torch.device) -> Engine:
    """Every module of `engine`'s pipeline to `device` (its caches of device tensors are emptied: they
    refill). The CLIP guidance model is shared by every checkpoint and stays on the device."""
    engine.pipe.to(device)
    engine.moved_to(device)
    return engine
