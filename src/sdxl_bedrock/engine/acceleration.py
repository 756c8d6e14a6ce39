"""The fast path: layout and kernel choices that change speed, never results beyond float rounding.

Applied to every device (so the CPU suite tests the same code path the GPU runs): fused QKV projections
(one matmul instead of three per attention), channels_last memory format for the convolutions, SDPA
attention (diffusers' default on torch 2). On CUDA also TF32 matmuls. With `compile`, `UNetRunner` sends the
UNet through torch.compile in `reduce-overhead` mode (CUDA graphs; static shapes, one graph per warmed-up
input shape, made during warm-up rather than on a user's request). `max-autotune` is deliberately not
offered: it compiles for over ten minutes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

# Each warmed-up input shape is one recompilation of the same code; dynamo's default limit (8) would
# silently send the ninth shape back to eager mode.
RECOMPILE_LIMIT = 64


def accelerate(pipe: Any, device: torch.device) -> None:
    pipe.unet.fuse_qkv_projections()
    pipe.vae.fuse_qkv_projections()
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@dataclass(frozen=True)
class UNetInputs:
    """One UNet call's inputs, every tensor with one row per batch row: `sample` [B, C, h, w], `timestep` [B]
    (float32: each row at its own point of its own schedule), `tokens` [B, 77 * chunks, D], `token_mask`
    [B, 77 * chunks] or None, `pooled` [B, P], `time_ids` [B, 6]."""

    sample: torch.Tensor
    timestep: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor | None
    pooled: torch.Tensor
    time_ids: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.sample.shape[0])

    def shape(self) -> InputShape:
        return InputShape(
            tuple(self.sample.shape[1:]),
            int(self.tokens.shape[1]),
            self.token_mask is not None,
            self.sample.dtype,
        )

    def rows_slice(self, start: int, stop: int) -> UNetInputs:
        return self.map_rows(lambda tensor: tensor[start:stop])

    def padded_to(self, rows: int) -> UNetInputs:
        """Padded with copies of the last row: UNet rows are independent, so padding changes no real row."""

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            if rows == tensor.shape[0]:
                return tensor
            return torch.cat([tensor, tensor[-1:].expand(rows - tensor.shape[0], *tensor.shape[1:])])

        return self.map_rows(pad)

    def map_rows(self, function: Callable[[torch.Tensor], torch.Tensor]) -> UNetInputs:
        """`function` applied to every tensor (each has one row per batch row)."""
        return dataclasses.replace(
            self,
            sample=function(self.sample),
            timestep=function(self.timestep),
            tokens=function(self.tokens),
            token_mask=None if self.token_mask is None else function(self.token_mask),
            pooled=function(self.pooled),
            time_ids=function(self.time_ids),
        )


@dataclass(frozen=True)
class InputShape:
    """What a compiled graph is specialised on besides its number of rows."""

    latent: tuple[int, ...]  # (channels, height, width)
    tokens: int  # 77 per prompt chunk
    masked: bool  # a padding-chunk mask is passed (prompts of different chunk counts in one batch)
    dtype: torch.dtype

    def __str__(self) -> str:
        _, height, width = self.latent
        masked = ", padding masked" if self.masked else ""
        return f"UNet input of {width}x{height} latents, {self.tokens} prompt tokens{masked}, {self.dtype}"


def chunk_rows(rows: int, warmed: Collection[int]) -> list[tuple[int, int]]:
    """Split `rows` into chunks that each run as one warmed row count: [(rows in chunk, count run as)].

    Greedy: the largest warmed count that fits, then the next; a remainder smaller than every warmed count
    is padded up to the smallest."""
    counts = sorted(set(warmed), reverse=True)
    chunks = []
    while rows > 0:
        fitting = next((count for count in counts if count <= rows), None)
        if fitting is None:
            chunks.append((rows, counts[-1]))
            break
        chunks.append((fitting, fitting))
        rows -= fitting
    return chunks


class UNetRunner:
    """Calls the UNet; with `compile`, through torch.compile for the input shapes warmed up before serving.

    A compiled graph is specialised on its input shapes, and a new shape recompiles for a minute or more on
    the request that brings it. So once warm-up is over, a batch goes through the compiled graphs only where
    its shape was warmed up: its rows are cut into chunks of warmed row counts (`chunk_rows`), the last one
    padded. Any other shape (an image size not warmed up, prompts longer than 77 tokens, the float32 retry)
    runs the eager UNet, with a warning the first time.
    """

    def __init__(self, unet: Any, *, compile: bool = False) -> None:
        self.unet = unet
        self.compiled: Any = None
        if compile:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            self.compiled = torch.compile(unet, mode="reduce-overhead", fullgraph=False, dynamic=False)
            log.info("the UNet will be compiled (reduce-overhead, CUDA graphs) during warm-up")
        self.warmed: dict[InputShape, set[int]] = {}
        self.warming = False
        self.calls: collections.Counter[str] = collections.Counter()  # UNet calls by path: compiled, eager
        self._reported: set[InputShape] = set()

    @contextlib.contextmanager
    def warming_up(self) -> Iterator[None]:
        """Calls made inside compile (and capture) a graph for their shape, which later calls may use."""
        self.warming = True
        try:
            yield
        finally:
            self.warming = False

    def __call__(self, inputs: UNetInputs) -> torch.Tensor:
        if self.compiled is None:
            return self.run_eager(inputs)
        shape = inputs.shape()
        if self.warming:
            self.warmed.setdefault(shape, set()).add(inputs.rows)
            return self.run_compiled(inputs)
        warmed = self.warmed.get(shape)
        if not warmed:
            if shape not in self._reported:
                self._reported.add(shape)
                log.warning("%s was not warmed up: it runs eager (add its size to --warmup)", shape)
            return self.run_eager(inputs)
        outputs, start = [], 0
        for rows, run_as in chunk_rows(inputs.rows, warmed):
            chunk = inputs.rows_slice(start, start + rows).padded_to(run_as)
            outputs.append(self.run_compiled(chunk)[:rows])
            start += rows
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def run_eager(self, inputs: UNetInputs) -> torch.Tensor:
        self.calls["eager"] += 1
        return self.run(self.unet, inputs)

    def run_compiled(self, inputs: UNetInputs) -> torch.Tensor:
        self.calls["compiled"] += 1
        # Each call starts a new CUDA-graph generation: the previous call's outputs may be overwritten, so
        # every output is copied out of the graph's static buffers before the next call.
        torch.compiler.cudagraph_mark_step_begin()
        return self.run(self.compiled, inputs).clone()

    @staticmethod
    def run(unet: Any, inputs: UNetInputs) -> torch.Tensor:
        output: torch.Tensor = unet(
            # One memory layout whatever made the latents (noise is contiguous, the VAE's output channels
            # last): a compiled graph is specialised on strides too.
            inputs.sample.contiguous(memory_format=torch.channels_last),
            # The UNet embeds timesteps in float32 anyway; one dtype keeps one compiled graph per shape.
            inputs.timestep.to(torch.float32),
            encoder_hidden_states=inputs.tokens.contiguous(),
            encoder_attention_mask=None if inputs.token_mask is None else inputs.token_mask.contiguous(),
            added_cond_kwargs={
                "text_embeds": inputs.pooled.contiguous(),
                "time_ids": inputs.time_ids.contiguous(),
            },
            return_dict=False,
        )[0]
        return output
