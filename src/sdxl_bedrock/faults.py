"""Fault injection, a testing aid for tests and operators: `SDXL_BEDROCK_FAULTS` makes chosen stage calls
fail the way a GPU fails (out of memory, non-finite output, any other error), on a CPU or a GPU alike.

The variable holds a comma-separated list of `STAGE=KIND[@TEXT][#N]`:

- STAGE: `encode` (a join's prompt and init-image encoding), `unet` (a tick's UNet call), `decode` (one VAE
  decode call) or `png` (one image's PNG encoding, on a host thread);
- KIND: `oom` raises torch's `OutOfMemoryError` (`MemoryError` for `png`, which runs on the host), `error`
  raises RuntimeError, `nan` makes the stage's output non-finite for the matching rows (not for `png`: a
  PNG holds no floats);
- `@TEXT`: only calls that include a row whose positive prompt contains TEXT (case-sensitive); `nan` then
  spoils only those rows;
- `#N`: only the first N such calls. A retry is a new call: `decode=nan@X#1` is a NaN a re-decode cures,
  `decode=nan@X` one it does not.

Never on by default; the server logs it loudly at start when set. No torch here: the engine applies what a
call returns.
"""

from __future__ import annotations

import enum
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

ENVIRONMENT_VARIABLE = "SDXL_BEDROCK_FAULTS"


class FaultStage(enum.StrEnum):
    ENCODE = "encode"
    UNET = "unet"
    DECODE = "decode"
    PNG = "png"


class FaultKind(enum.StrEnum):
    OOM = "oom"
    NAN = "nan"
    ERROR = "error"


_ENTRY = re.compile(r"^(?P<stage>[a-z]+)=(?P<kind>[a-z]+)(?:@(?P<text>[^#]+))?(?:#(?P<times>[0-9]+))?$")


@dataclass
class Fault:
    stage: FaultStage
    kind: FaultKind
    text: str | None = None
    times: int | None = None  # None: every matching call
    fired: int = 0

    def matching_rows(self, prompts: Sequence[str]) -> list[bool]:
        return [self.text is None or self.text in prompt for prompt in prompts]

    def __str__(self) -> str:
        text = "" if self.text is None else f"@{self.text}"
        times = "" if self.times is None else f"#{self.times}"
        return f"{self.stage}={self.kind}{text}{times}"


@dataclass
class Faults:
    """The parsed list; `call` is what each stage asks before (or, for `nan`, after) its work."""

    faults: list[Fault] = field(default_factory=list)
    on_fire: Callable[[FaultStage, FaultKind], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Raises ValueError naming the entry that is not `STAGE=KIND[@TEXT][#N]` or not meaningful."""
        faults = []
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            match = _ENTRY.match(entry)
            if match is None:
                raise ValueError(f"{ENVIRONMENT_VARIABLE}: {entry!r} is not STAGE=KIND[@TEXT][#N]")
            try:
                stage, kind = FaultStage(match["stage"]), FaultKind(match["kind"])
            except ValueError:
                raise ValueError(
                    f"{ENVIRONMENT_VARIABLE}: {entry!r}: STAGE is one of "
                    f"{', '.join(FaultStage)} and KIND one of {', '.join(FaultKind)}"
                ) from None
            if stage is FaultStage.PNG and kind is FaultKind.NAN:
                raise ValueError(f"{ENVIRONMENT_VARIABLE}: {entry!r}: a PNG has no floats to spoil")
            times = None if match["times"] is None else int(match["times"])
            faults.append(Fault(stage, kind, match["text"], times))
        return cls(faults)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Faults:
        return cls.parse((os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, ""))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def __str__(self) -> str:
        return ",".join(str(fault) for fault in self.faults)

    def call(self, stage: FaultStage, prompts: Sequence[str]) -> list[bool] | None:
        """One call of `stage` over rows with these positive prompts (in the call's row order).

        Raises torch.OutOfMemoryError (MemoryError for png) or RuntimeError where an `oom` or `error` fault
        matches; returns, where a `nan` fault matches, which rows to make non-finite; else None."""
        if not self.faults:
            return None
        spoiled: list[bool] | None = None
        for fault in self.faults:
            if fault.stage is not stage:
                continue
            rows = fault.matching_rows(prompts)
            if not any(rows):
                continue
            with self._lock:
                if fault.times is not None and fault.fired >= fault.times:
                    continue
                fault.fired += 1
            if self.on_fire is not None:
                self.on_fire(stage, fault.kind)
            if fault.kind is FaultKind.OOM:
                raise _out_of_memory(stage, fault)
            if fault.kind is FaultKind.ERROR:
                raise RuntimeError(f"injected fault {fault}")
            spoiled = rows if spoiled is None else [a or b for a, b in zip(spoiled, rows, strict=True)]
        return spoiled


def _out_of_memory(stage: FaultStage, fault: Fault) -> BaseException:
    message = f"injected fault {fault}"
    if stage is FaultStage.PNG:
        return MemoryError(message)
    import torch  # only the engine's stages get here, in the process that holds torch already

    return torch.OutOfMemoryError(message)
