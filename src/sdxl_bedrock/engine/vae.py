"""The VAE under a memory budget: decode and encode in slices that fit it, tiles for an image that alone
does not, and a non-finite decode made again with the VAE alone in float32.

SDXL's VAE is the likeliest out-of-memory point of a server: its working memory grows with the pixels of
the whole call, and a tick can end 8 or 16 rows at 1024x1024 together. diffusers offers `enable_slicing`
(one image per call, always) and `enable_tiling` (tiles above the config's sample size, always); here a
call takes as many images as fit `budget_bytes`, so small images still decode together and large ones
never exceed the budget, and an image larger than the budget on its own goes through diffusers' own tiled
decode and encode with tiles sized to fit it.

The estimate is `VAE_BYTES_PER_PIXEL` per output pixel per byte of the VAE's dtype: bench/vae_memory.py
measures SDXL base's VAE (about 4.1 KB per pixel in float32 for one 512x512 decode on a CPU, less per
pixel for batches; docs/BATCHING.md has the table), rounded up so that the estimate holds for one image.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from sdxl_bedrock.faults import Faults, FaultStage

log = logging.getLogger(__name__)

# bench/vae_memory.py: 4138 bytes per pixel for one 512x512 decode in float32 (4 bytes), 1034 per byte.
VAE_BYTES_PER_PIXEL = 1100
# Tiles no smaller than this (pixels a side): smaller tiles cost more in overlap than they save.
MIN_TILE = 128


class BudgetedVae:
    """`vae`: a diffusers AutoencoderKL; `budget_bytes`: the working memory one call may take."""

    def __init__(self, vae: Any, budget_bytes: int, faults: Faults | None = None) -> None:
        self.vae = vae
        self.budget_bytes = budget_bytes
        self.faults = faults or Faults()
        self.calls = 0  # VAE decode and encode calls made (slices and tiles count once each)

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = self.vae.dtype
        return dtype

    def bytes_per_image(self, height: int, width: int, dtype: torch.dtype | None = None) -> int:
        element = torch.empty((), dtype=dtype or self.vae.dtype).element_size()
        return height * width * VAE_BYTES_PER_PIXEL * element

    def images_per_call(self, height: int, width: int, dtype: torch.dtype | None = None) -> int:
        """How many images of this size (pixels) one call takes; 0 where one image alone needs tiles."""
        return self.budget_bytes // self.bytes_per_image(height, width, dtype)

    def decode(self, latents: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """VAE latents [B, C, h, w] (already unscaled, in the VAE's dtype) -> pixels [B, 3, H, W] in [-1, 1].

        `prompts` (one per row) are what fault injection matches. Raises what the VAE raises (an
        out-of-memory error among them): the stage runner decides what to do about it."""
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        height, width = latents.shape[-2] * scale, latents.shape[-1] * scale
        per_call = self.images_per_call(height, width, latents.dtype)
        outputs = []
        for start in range(0, latents.shape[0], max(per_call, 1)):
            stop = start + max(per_call, 1)
            outputs.append(self._decode_call(latents[start:stop], prompts[start:stop], tiled=per_call == 0))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _decode_call(self, latents: torch.Tensor, prompts: Sequence[str], *, tiled: bool) -> torch.Tensor:
        spoiled = self.faults.call(FaultStage.DECODE, prompts)
        self.calls += 1
        if tiled:
            with self.tiles(latents.shape[-2], latents.shape[-1], latent=True, dtype=latents.dtype):
                pixels: torch.Tensor = self.vae.tiled_decode(latents, return_dict=False)[0]
        else:
            pixels = self.vae.decode(latents, return_dict=False)[0]
        return spoil(pixels, spoiled)

    def encode(self, pixels: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] -> VAE latents [B, C, h, w] sampled from the posterior, each row
        with its own generator (so slicing draws what one call would)."""
        height, width = pixels.shape[-2:]
        per_call = self.images_per_call(height, width, pixels.dtype)
        outputs = []
        for start in range(0, pixels.shape[0], max(per_call, 1)):
            stop = start + max(per_call, 1)
            self.calls += 1
            if per_call == 0:
                with self.tiles(height, width, latent=False, dtype=pixels.dtype):
                    posterior = self.vae.encode(pixels[start:stop]).latent_dist
            else:
                posterior = self.vae.encode(pixels[start:stop]).latent_dist
            outputs.append(posterior.sample(generator=list(generators[start:stop])))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    @contextlib.contextmanager
    def tiles(self, height: int, width: int, *, latent: bool, dtype: torch.dtype) -> Iterator[None]:
        """diffusers' tiling, with tiles (and their 25% overlap) sized to fit the budget, for one call."""
        vae = self.vae
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        per_pixel = self.bytes_per_image(1, 1, dtype)
        side = max(MIN_TILE, math.isqrt(self.budget_bytes // per_pixel) // 64 * 64)
        saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size)
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = True, side, side // scale
        pixels = (height * scale, width * scale) if latent else (height, width)
        log.info("a %dx%d image exceeds the VAE budget alone: tiles of %d pixels", pixels[1], pixels[0], side)
        try:
            yield
        finally:
            vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = saved

    @contextlib.contextmanager
    def in_float32(self) -> Iterator[None]:
        """The VAE alone in float32 for one call, then back in its dtype (diffusers' `upcast_vae`, undone):
        also when the conversion fails halfway, so the engine never believes in a dtype it does not have."""
        dtype = self.vae.dtype
        if dtype == torch.float32:
            yield
            return
        try:
            self.vae.to(torch.float32)
            yield
        finally:
            self.vae.to(dtype)


def spoil(tensor: torch.Tensor, rows: Sequence[bool] | None) -> torch.Tensor:
    """`tensor` [B, ...] with the given rows made NaN (fault injection's `nan`); the others unchanged."""
    if rows is None or not any(rows):
        return tensor
    keep = torch.tensor([not row for row in rows], device=tensor.device).view(-1, *[1] * (tensor.ndim - 1))
    return torch.where(keep, tensor, torch.full_like(tensor, float("nan")))
