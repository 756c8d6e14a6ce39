"""CheckpointEngines' tiers (engine/checkpoints.py): least recently used out first, host memory kept, a
checkpoint in use never moved, one that left the library dropped once unused. Stand-in engines: what is
tested is which engine is where and what was loaded, not a model."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from sdxl_bedrock.engine.checkpoints import CheckpointEngines
from sdxl_bedrock.errors import ModelFailure
from sdxl_bedrock.library import Checkpoint, UnknownCheckpoint


@dataclass
class StandInUNet:
    calls: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class StandInEngine:
    name: str
    device: torch.device
    unet: StandInUNet = field(default_factory=StandInUNet)
    non_finite: collections.Counter[str] = field(default_factory=collections.Counter)
    clip_guide: Any = None
    released: bool = False
    moves: list[str] = field(default_factory=list)

    @property
    def pipe(self) -> Any:
        engine = self

        class Pipe:
            def to(self, device: torch.device) -> None:
                engine.moves.append(str(device))

        return Pipe()

    def moved_to(self, device: torch.device) -> None:
        pass

    def release(self) -> None:
        self.released = True


def engines(
    device: str = "cpu", *, on_device: int = 1, on_host: int = 1
) -> tuple[CheckpointEngines, list[str], set[str]]:
    loads: list[str] = []
    listed = {"base", "a", "b", "c"}

    def lookup(name: str) -> Checkpoint:
        if name not in listed:
            raise UnknownCheckpoint(name, sorted(listed))
        return Checkpoint(name, "diffusers-folder", None, spec=name)

    def load(checkpoint: Checkpoint) -> Any:
        loads.append(checkpoint.name)
        return StandInEngine(checkpoint.name, torch.device(device))

    made = CheckpointEngines(
        StandInEngine("base", torch.device(device)),  # type: ignore[arg-type]
        "base",
        lookup=lookup,
        load=load,
        max_on_device=on_device,
        max_on_host=on_host,
    )
    return made, loads, listed


def test_on_a_cpu_host_memory_is_the_devices_and_the_bounds_add_up() -> None:
    made, loads, _ = engines("cpu", on_device=1, on_host=1)
    for name in ["a", "base", "a", "base", "a"]:
        made.engine(name)
    assert loads == ["a"], "both stay in memory: nothing is read twice"
    made.engine("b")
    assert loads == ["a", "b"] and set(made.resident()) == {"a", "b"}, "base was the least recently used"


def test_on_a_gpu_the_least_recently_used_go_to_host_memory_then_are_dropped() -> None:
    made, loads, _ = engines("meta", on_device=1, on_host=1)
    made.engine("a")
    assert made.resident() == {"base": "host", "a": "device"}
    base = made.on_host["base"]
    made.engine("base")
    assert loads == ["a"] and made.resident() == {"a": "host", "base": "device"}, "back from host, not disk"
    assert base.moves == ["cpu", "meta"]
    made.engine("b")
    assert made.resident() == {"base": "host", "b": "device"} and loads == ["a", "b"], "a dropped"


def test_a_checkpoint_in_use_is_never_moved_out() -> None:
    made, _, _ = engines("cpu", on_device=1, on_host=0)
    made.in_use(frozenset({"base"}))
    with pytest.raises(ModelFailure, match="No checkpoint slot"):
        made.engine("a")
    made.in_use(frozenset())
    made.engine("a")
    assert set(made.resident()) == {"a"}


def test_a_checkpoint_that_left_the_library_goes_once_no_row_uses_it() -> None:
    made, _, listed = engines("cpu", on_device=2, on_host=0)
    made.engine("a")
    listed.discard("a")
    made.in_use(frozenset(), frozenset({"a"}))
    assert "a" in made.resident(), "its queued requests are still served"
    released = made.on_device["a"]
    made.in_use(frozenset(), frozenset())
    assert "a" not in made.resident() and released.released
    with pytest.raises(ModelFailure, match="removed from the model library"):
        made.engine("a")
