"""Which rows a tick takes: the checkpoint and latent size of the oldest row, and as many of its rows as pay.

Fairness: a tick serves the checkpoint and latent size of the oldest row in flight, and those rows oldest
first (rows of different checkpoints never share a UNet call: different weights). Costs and row caps are
kept per size, whatever the checkpoint: checkpoints of one architecture cost the same.
Rows of another size wait their turn without starving: the oldest row always advances, so every row
becomes the oldest in time. (Alternating sizes tick by tick would finish no request sooner on a busy
server and would make every size wait on every other.)

Throughput: batching pays on a GPU (a UNet call of 8 rows costs far less than 8 calls of one) and may not
on a CPU at large sizes (8 rows of 1024x1024 latents cost more per row than one: caches). So of the n rows
a tick could take, it takes the count k (oldest first) that maximises rows per second, k / t(u), where u is
the UNet rows of those k (2 per row under classifier-free guidance, else 1) and t(u) the measured cost of
a tick of u UNet rows at that size: a moving average of what ticks took, interpolated between the counts
measured. A count not measured near its UNet rows is tried (powers of two of rows, and all n: the largest
untried first), so a new size's table fills within a few ticks; the largest count is tried again every
`REFRESH_EVERY` ticks, so the table follows the machine's load. More company then never lowers images/s:
a larger tick is taken only where it measured cheaper per row.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Size = Hashable

# How much the latest measurement moves a cost estimate.
SMOOTHING = 0.3
# A measurement at this ratio of UNet rows or closer counts as one for another count.
NEAR = 1.25
REFRESH_EVERY = 50
# A size's row cap after an out-of-memory error grows back by one row per this many ticks that succeed at
# the cap (additive increase, multiplicative decrease, as TCP's congestion window): a transient shortage
# costs a few hundred ticks of smaller batches, not the rest of the process's life.
GROW_EVERY = 20


class PlannedRow(Protocol):
    @property
    def pixel_size(self) -> Size: ...

    @property
    def checkpoint(self) -> str: ...

    @property
    def unet_rows(self) -> int: ...


@dataclass
class SizeCosts:
    """Measured seconds per tick, by UNet rows, at one latent size."""

    seconds: dict[int, float] = field(default_factory=dict)
    ticks: int = 0

    def record(self, unet_rows: int, seconds: float) -> None:
        previous = self.seconds.get(unet_rows)
        self.seconds[unet_rows] = seconds if previous is None else previous + SMOOTHING * (seconds - previous)

    def measured_near(self, unet_rows: int) -> bool:
        return any(1 / NEAR <= measured / unet_rows <= NEAR for measured in self.seconds)

    def estimate(self, unet_rows: int) -> float:
        """Seconds for a tick of `unet_rows`: measured, else interpolated, else extrapolated linearly."""
        if unet_rows in self.seconds:
            return self.seconds[unet_rows]
        counts = sorted(self.seconds)
        at = bisect.bisect(counts, unet_rows)
        if 0 < at < len(counts):
            low, high = counts[at - 1], counts[at]
            weight = (unet_rows - low) / (high - low)
            return self.seconds[low] + weight * (self.seconds[high] - self.seconds[low])
        if len(counts) == 1:
            return self.seconds[counts[0]] * unet_rows / counts[0]
        low, high = counts[:2] if at == 0 else counts[-2:]
        slope = (self.seconds[high] - self.seconds[low]) / (high - low)
        return max(self.seconds[low] + slope * (unet_rows - low), 1e-9)


class TickPlanner:
    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.costs: dict[Size, SizeCosts] = {}
        # Sizes where a tick of more rows failed for lack of memory: no tick there takes more than this.
        self.row_caps: dict[Size, int] = {}
        self._at_cap: dict[Size, int] = {}  # ticks that succeeded at the cap since it last moved

    def choose(self, rows_oldest_first: Sequence[Any]) -> list[Any]:
        """The rows of the next tick, from rows in flight (oldest first, each waiting for a model call)."""
        oldest = rows_oldest_first[0]
        size = oldest.pixel_size
        candidates = [
            row for row in rows_oldest_first if row.pixel_size == size and row.checkpoint == oldest.checkpoint
        ]
        candidates = candidates[: self.cap(size)]
        costs = self.costs.setdefault(size, SizeCosts())
        unet_rows = [0]
        for row in candidates:
            unet_rows.append(unet_rows[-1] + row.unet_rows)
        counts = sorted({*(2**n for n in range(len(candidates).bit_length())), len(candidates)})
        counts = [count for count in counts if count <= len(candidates)]
        untried = [count for count in counts if not costs.measured_near(unet_rows[count])]
        if untried:
            return candidates[: untried[-1]]
        if costs.ticks % REFRESH_EVERY == REFRESH_EVERY - 1:
            return candidates
        best = max(counts, key=lambda count: (count / costs.estimate(unet_rows[count]), count))
        return candidates[:best]

    def record(self, size: Size, unet_rows: int, seconds: float) -> None:
        """A tick of `unet_rows` at `size` took `seconds`."""
        costs = self.costs.setdefault(size, SizeCosts())
        costs.record(unet_rows, seconds)
        costs.ticks += 1

    def out_of_memory(self, size: Size, rows: int) -> None:
        """A tick of `rows` rows at `size` ran out of memory: no tick there takes more than half of them
        (at least 1) until ticks succeed again (`succeeded`)."""
        self.row_caps[size] = max(1, min(rows // 2, self.row_caps.get(size, rows)))
        self._at_cap[size] = 0

    def succeeded(self, size: Size, rows: int) -> None:
        """A tick of `rows` rows at `size` succeeded: every `GROW_EVERY` such ticks at the cap raise it by
        one row, and a cap that reaches `max_rows` is gone."""
        cap = self.row_caps.get(size)
        if cap is None or rows < cap:
            return
        self._at_cap[size] = self._at_cap.get(size, 0) + 1
        if self._at_cap[size] < GROW_EVERY:
            return
        self._at_cap[size] = 0
        if cap + 1 >= self.max_rows:
            del self.row_caps[size]
        else:
            self.row_caps[size] = cap + 1

    def cap(self, size: Size) -> int:
        """The most rows a tick at `size` takes now."""
        return min(self.max_rows, self.row_caps.get(size, self.max_rows))


class TickClock:
    """Times ticks without waiting for the device: on a GPU with CUDA events read once they have passed,
    on a CPU with the wall clock (the work is done when the call returns)."""

    def __init__(self, device_type: str) -> None:
        self.cuda = device_type == "cuda"
        self.pending: list[tuple[Any, Any, Any]] = []

    def start(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, started: Any, key: Any) -> None:
        if not self.cuda:
            self.pending.append((key, started, time.perf_counter()))
            return
        import torch

        ended = torch.cuda.Event(enable_timing=True)
        ended.record()
        self.pending.append((key, started, ended))

    def measured(self) -> list[tuple[Any, float]]:
        """(key, seconds) of the ticks whose times are known by now, each once."""
        done, waiting = [], []
        for key, started, ended in self.pending:
            if not self.cuda:
                done.append((key, ended - started))
            elif ended.query():
                done.append((key, started.elapsed_time(ended) / 1000))
            else:
                waiting.append((key, started, ended))
        self.pending = waiting
        return done
