"""The fast path: layout and kernel choices that change speed, never results beyond float rounding.

Applied to every device (so the CPU suite tests the same code path the GPU runs): fused QKV projections
(one matmul instead of three per attention), channels_last memory format for the convolutions, SDPA
attention (diffusers' default on torch 2). On CUDA also TF32 matmuls. With `compile`, `UNetRunner` sends the
UNet through torch.compile in `reduce-overhead` mode (CUDA graphs; static shapes, one graph per warmed-up
input shape, made during warm-up rather than on a user's request). `max-autotune` is deliberately not
offered: it compiles for over ten minutes.

Prompt length is part of a graph's shape (77 tokens a chunk), so warm-up covers a ladder of chunk counts
(`chunk_buckets`) and each UNet row runs in the shortest warmed one that holds its prompt, padded with
masked-out chunks: a row's image is the same whatever the padding, and a long prompt neither compiles on a
request nor sends its companions' rows to eager mode.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdxl_bedrock.engine.prompts import CLIP_WINDOW

log = logging.getLogger(__name__)

# Each warmed-up input shape is one recompilation of the same code; dynamo's default limit (8) would
# silently send the ninth shape back to eager mode. Warm-up raises it further where it warms more.
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
    [B, 77 * chunks] or None, `pooled` [B, P], `time_ids` [B, 6]; `row_chunks`, each row's own prompt
    length in chunks (the rest of its tokens masked-out padding), or None where every row fills `tokens`."""

    sample: torch.Tensor
    timestep: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor | None
    pooled: torch.Tensor
    time_ids: torch.Tensor
    row_chunks: tuple[int, ...] | None = None

    @property
    def rows(self) -> int:
        return int(self.sample.shape[0])

    @property
    def chunks(self) -> int:
        return int(self.tokens.shape[1]) // CLIP_WINDOW

    def chunks_of_rows(self) -> tuple[int, ...]:
        return self.row_chunks if self.row_chunks is not None else (self.chunks,) * self.rows

    def shape(self) -> InputShape:
        return InputShape(
            tuple(self.sample.shape[1:]),
            int(self.tokens.shape[1]),
            self.token_mask is not None,
            self.sample.dtype,
        )

    def rows_slice(self, start: int, stop: int) -> UNetInputs:
        sliced = self.map_rows(lambda tensor: tensor[start:stop])
        return dataclasses.replace(sliced, row_chunks=self.chunks_of_rows()[start:stop])

    def rows_in_runs(self, runs: Sequence[tuple[int, int]]) -> UNetInputs:
        """The rows of these [start, stop) runs, in order, as one batch: slices joined on the device, so no
        index is copied from the host."""
        parts = [self.rows_slice(start, stop) for start, stop in runs]
        if len(parts) == 1:
            return parts[0]

        def joined(name: str) -> torch.Tensor:
            return torch.cat([getattr(part, name) for part in parts])

        return UNetInputs(
            joined("sample"),
            joined("timestep"),
            joined("tokens"),
            None if self.token_mask is None else joined("token_mask"),
            joined("pooled"),
            joined("time_ids"),
            tuple(itertools.chain.from_iterable(part.chunks_of_rows() for part in parts)),
        )

    def padded_to(self, rows: int) -> UNetInputs:
        """Padded with copies of the last row: UNet rows are independent, so padding changes no real row."""

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            if rows == tensor.shape[0]:
                return tensor
            return torch.cat([tensor, tensor[-1:].expand(rows - tensor.shape[0], *tensor.shape[1:])])

        own = self.chunks_of_rows()
        return dataclasses.replace(self.map_rows(pad), row_chunks=own + own[-1:] * (rows - len(own)))

    def in_chunks(self, chunks: int) -> UNetInputs:
        """The same rows with `tokens` cut or padded to `chunks` chunks (the padding zeros, masked out), and
        a `token_mask` exactly when `chunks` > 1: so each chunk count is one compiled graph, whatever the
        rows' own lengths. Masked-out tokens get no attention weight (diffusers adds -10000 to their
        logits), so no row's output changes beyond float rounding.

        Raises ValueError where a row's own prompt is longer than `chunks`."""
        if max(self.chunks_of_rows()) > chunks:
            raise ValueError(f"rows of {max(self.chunks_of_rows())} chunks do not fit in {chunks}")
        width = chunks * CLIP_WINDOW
        tokens, mask = self.tokens[:, :width], self.token_mask
        if chunks == 1:
            return dataclasses.replace(self, tokens=tokens, token_mask=None)
        if mask is None:
            mask = tokens.new_ones(tokens.shape[:2])
        mask = mask[:, :width]
        missing = width - tokens.shape[1]
        if missing > 0:
            # Made on the device: no host-to-device copy, so no wait on a GPU.
            tokens = torch.cat([tokens, tokens.new_zeros(self.rows, missing, tokens.shape[2])], dim=1)
            mask = torch.cat([mask, mask.new_zeros(self.rows, missing)], dim=1)
        return dataclasses.replace(self, tokens=tokens, token_mask=mask)

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
    masked: bool  # a padding-chunk mask is passed (always above one chunk when compiled: `in_chunks`)
    dtype: torch.dtype

    def __str__(self) -> str:
        _, height, width = self.latent
        masked = ", padding masked" if self.masked else ""
        return f"UNet input of {width}x{height} latents, {self.tokens} prompt tokens{masked}, {self.dtype}"


def chunk_buckets(largest: int) -> tuple[int, ...]:
    """The prompt lengths in 77-token chunks that warm-up compiles for: 1, 2, 4, ... doubling below
    `largest`, then `largest` itself. A prompt runs padded to the next one, so to at most twice its own
    length, and warm-up grows with the logarithm of `largest`.

    Raises ValueError below 1."""
    if largest < 1:
        raise ValueError(f"the longest prompt warmed up must be at least one chunk, not {largest}")
    buckets = [1]
    while buckets[-1] * 2 < largest:
        buckets.append(buckets[-1] * 2)
    return (*buckets, largest) if largest > 1 else (1,)


def runs_of(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Increasing indices as [start, stop) runs of consecutive ones: [0, 1, 3] -> [(0, 2), (3, 4)]."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


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
    its shape was warmed up. Each row runs in the shortest warmed prompt length that holds its own prompt
    (`UNetInputs.in_chunks`), rows of different lengths in calls of their own; each call's rows are cut
    into chunks of warmed row counts (`chunk_rows`), the last one padded. Rows of a shape not warmed up (an
    image size, a prompt longer than every warmed length) run the eager UNet, with a warning the first
    time; the other rows of their batch stay compiled.
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
        if self.warming:
            return self.warm(inputs.in_chunks(max(inputs.chunks_of_rows())))
        bucket_of = self.buckets_of_rows(inputs)
        if len(set(bucket_of)) == 1:
            return self.run_bucket(inputs, bucket_of[0])
        by_bucket: dict[int | None, list[int]] = {}
        for index, bucket in enumerate(bucket_of):
            by_bucket.setdefault(bucket, []).append(index)
        predicted = {
            bucket: self.run_bucket(inputs.rows_in_runs(runs_of(indices)), bucket)
            for bucket, indices in by_bucket.items()
        }
        # Back in the batch's order, each run of consecutive rows of one bucket one slice.
        pieces, taken = [], dict.fromkeys(by_bucket, 0)
        for bucket, run in itertools.groupby(bucket_of):
            count = len(list(run))
            pieces.append(predicted[bucket][taken[bucket] : taken[bucket] + count])
            taken[bucket] += count
        return torch.cat(pieces)

    def warm(self, inputs: UNetInputs) -> torch.Tensor:
        rows = self.warmed.setdefault(inputs.shape(), set())
        if inputs.rows not in rows:
            rows.add(inputs.rows)
            # Past the limit dynamo would quietly run the new shape eager, and it would count as warmed.
            graphs = sum(len(counts) for counts in self.warmed.values())
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, graphs + 8)
            config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * graphs + 32)
        return self.run_compiled(inputs)

    def buckets_of_rows(self, inputs: UNetInputs) -> list[int | None]:
        """Each row's shortest warmed prompt length (in chunks) that holds its own prompt; None where none
        does (or none is warmed for its latent shape and dtype)."""
        warmed = self.warmed_chunks(inputs.shape())
        return [next((bucket for bucket in warmed if bucket >= own), None) for own in inputs.chunks_of_rows()]

    def warmed_chunks(self, shape: InputShape) -> list[int]:
        """The prompt lengths in chunks warmed up for this shape's latents and dtype, shortest first."""
        kind = (shape.latent, shape.dtype)
        chunks = {known.tokens // CLIP_WINDOW for known in self.warmed if (known.latent, known.dtype) == kind}
        return sorted(chunks)

    def run_bucket(self, inputs: UNetInputs, bucket: int | None) -> torch.Tensor:
        """These rows, all of one bucket, through its warmed graphs; eager for bucket None."""
        if bucket is None:
            shape = inputs.shape()
            if shape not in self._reported:
                self._reported.add(shape)
                if warmed := self.warmed_chunks(shape):
                    log.warning(
                        "%s: prompts over the %d tokens warmed up run eager (raise --warmup-prompt-chunks)",
                        shape,
                        warmed[-1] * CLIP_WINDOW,
                    )
                else:
                    log.warning("%s was not warmed up: it runs eager (add its size to --warmup)", shape)
            return self.run_eager(inputs)
        fitted = inputs.in_chunks(bucket)
        outputs, start = [], 0
        for rows, run_as in chunk_rows(fitted.rows, self.warmed[fitted.shape()]):
            chunk = fitted.rows_slice(start, start + rows).padded_to(run_as)
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
