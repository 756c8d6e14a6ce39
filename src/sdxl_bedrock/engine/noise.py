"""A row's fresh noise for its sampler's steps: drawn ahead on the row's CPU generator, copied once.

Ancestral and stochastic samplers (Euler ancestral, DPM2 ancestral, DDPM, DDIM with eta > 0, our
DPM-Solver++(2S) ancestral) add new noise after each step. It is drawn from the row's CPU generator, so a
seed gives the same picture on any device. Drawn one step at a time, as diffusers does, each draw is a
host-to-device copy from pageable memory inside the tick, which makes the host wait for the device.
`RowNoise` makes the same draws, in the same order and with the same arguments, but `look_ahead` of them
at once, and moves them to the device in one copy that does not wait (from pinned memory on CUDA): a
step then only takes the next slice. Drawing ahead is exact while nothing else draws from the generator
during the run; a row whose CLIP guidance draws its cutouts from the same generator looks ahead one draw.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# At most this many draws are held on the device per row: 16 latents of a 1024x1024 row in float16 are
# 2 MiB, and a 50-step run needs four copies instead of fifty.
NOISE_LOOK_AHEAD = 16


class RowNoise:
    """One row's step noise: standard normal draws from `generator` (a CPU generator), `look_ahead` (>= 1)
    at a time, served as tensors on `device`."""

    def __init__(self, generator: torch.Generator, device: torch.device, look_ahead: int = NOISE_LOOK_AHEAD):
        if look_ahead < 1:
            raise ValueError(f"look_ahead must be at least 1, not {look_ahead}")
        self.generator = generator
        self.device = torch.device(device)
        self.look_ahead = look_ahead
        self.copies = 0  # host-to-device copies made so far (tests count them)
        self._ahead: collections.deque[torch.Tensor] = collections.deque()
        self._key: Hashable = None

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of `x`'s shape and dtype, on the row's device: what
        `torch.randn(x.shape, generator=generator, dtype=x.dtype)` would draw next."""
        shape, dtype = tuple(x.shape), x.dtype
        return self.draw((shape, dtype), lambda: torch.randn(shape, generator=self.generator, dtype=dtype))

    def draw(self, key: Hashable, draw_one: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The next draw, on the row's device. `draw_one()` makes one draw on the host from the generator;
        `key` names its shape and dtype, which every draw of a run shares.

        Raises RuntimeError where a draw of another key meets draws already made ahead: serving it would
        change the picture (the generator has moved past it)."""
        if not self._ahead:
            host = torch.stack([draw_one() for _ in range(self.look_ahead)])
            if self.device.type == "cuda":
                # From pageable memory the copy would wait for the device; pinned, it is queued.
                host = host.pin_memory()
            self._ahead.extend(host.to(self.device, non_blocking=True).unbind(0))
            self._key = key
            self.copies += 1
        if key != self._key:
            raise RuntimeError(f"a draw of {key} after draws of {self._key} were made ahead")
        return self._ahead.popleft()

    @contextmanager
    def serving_diffusers(self) -> Iterator[None]:
        """While a diffusers scheduler steps, its draws from this row's generator (`randn_tensor(...,
        generator=)`, then a copy to the device) come from here instead: its `step` has no parameter for
        the noise (EulerAncestral's and KDPM2Ancestral's have none; DDIM's `variance_noise` excludes the
        generator). Only around `step` itself: a torch function mode costs every op it sees."""
        with _ServedDraws(self):
            yield


class _ServedDraws(TorchFunctionMode):
    def __init__(self, noise: RowNoise) -> None:
        super().__init__()
        self.noise = noise

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.randn and kwargs.get("generator") is self.noise.generator:
            # randn_tensor draws on the generator's device (the CPU) and moves the draw to the model's device
            # itself; served from the device already, that move is a no-op.
            shape = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            key = (tuple(shape), kwargs.get("dtype"))
            return self.noise.draw(key, lambda: func(*args, **kwargs))
        return func(*args, **kwargs)
