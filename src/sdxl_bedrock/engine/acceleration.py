"""The fast path: layout and kernel choices that change speed, never results beyond float rounding.

Applied to every device (so the CPU suite tests the same code path the GPU runs): fused QKV projections
(one matmul instead of three per attention), channels_last memory format for the convolutions, SDPA
attention (diffusers' default on torch 2). On CUDA also TF32 matmuls, and with `compile` the UNet goes
through torch.compile in `reduce-overhead` mode (CUDA graphs; static shapes, one graph per size and batch
bucket, made during warm-up rather than on a user's request). `max-autotune` is deliberately not offered:
it compiles for over ten minutes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def accelerate(pipe: Any, device: torch.device, *, compile_unet: bool = False) -> None:
    pipe.unet.fuse_qkv_projections()
    pipe.vae.fuse_qkv_projections()
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=False, dynamic=False)
        log.info("the UNet will be compiled (reduce-overhead, CUDA graphs) during warm-up")


def parse_buckets(text: str) -> list[tuple[int, int, int]]:
    """`1024x1024:1,2,4;832x1216:1` -> [(width, height, batch size), ...] for warm-up."""
    buckets = []
    for group in filter(None, (part.strip() for part in text.split(";"))):
        size, _, batches = group.partition(":")
        width, _, height = size.partition("x")
        for batch in (batches or "1").split(","):
            buckets.append((int(width), int(height), int(batch)))
    return buckets
