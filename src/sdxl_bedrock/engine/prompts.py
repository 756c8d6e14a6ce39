"""Prompts of any length: CLIP's 77-token window, chunked; and the weighted blend of several prompts.

A prompt longer than the window is not cut: its tokens are split into chunks of 75, each chunk wrapped in
BOS/EOS and padded as CLIP expects, each encoded on its own, and the encodings concatenated along the token
axis (as A1111 and compel do). A prompt of at most 75 tokens is one chunk, exactly diffusers' encoding.
The pooled embedding is the first chunk's (as A1111).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

CLIP_WINDOW = 77
CHUNK_TOKENS = CLIP_WINDOW - 2  # the window less BOS and EOS


@dataclass(frozen=True)
class PromptEmbeddings:
    """One prompt's conditioning: `tokens` [77 * chunks, D] and `pooled` [P]."""

    tokens: torch.Tensor
    pooled: torch.Tensor

    @property
    def chunks(self) -> int:
        return self.tokens.shape[0] // CLIP_WINDOW


@dataclass(frozen=True)
class BatchEmbeddings:
    """Row-stacked conditioning: `tokens` [B, 77 * K, D], `pooled` [B, P], and `token_mask` [B, 77 * K]
    (1 = attend) when some row was padded to K chunks, else None."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    token_mask: torch.Tensor | None


def chunk_token_ids(token_ids: Sequence[int], bos: int, eos: int, pad: int) -> list[list[int]]:
    """A prompt's token ids (without special tokens) as 77-token windows: BOS, up to 75 ids, EOS, padding.

    An empty prompt is one chunk, [BOS, EOS, pad...], as the tokenizer itself makes it."""
    pieces = [token_ids[start : start + CHUNK_TOKENS] for start in range(0, len(token_ids), CHUNK_TOKENS)]
    return [[bos, *piece, eos, *[pad] * (CHUNK_TOKENS - len(piece))] for piece in pieces or [[]]]


def tokenize_in_chunks(tokenizer: Any, texts: Sequence[str]) -> list[list[list[int]]]:
    """Each text's chunks of token ids, for this tokenizer (SDXL's two pad differently)."""
    token_ids = tokenizer(list(texts), add_special_tokens=False, verbose=False).input_ids
    return [
        chunk_token_ids(ids, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        for ids in token_ids
    ]


def relative_weights(weights: Sequence[float]) -> list[float]:
    """The weights over the largest one, in double precision: a weighted mean is the same, and any valid
    JSON weight (1e39, 1e-46) stays finite and non-zero in the model's float32 or float16."""
    largest = max(weights)
    return [weight / largest for weight in weights] if largest > 0 else list(weights)


def blend(embeddings: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean over the first axis: weight 0 adds nothing, and equal prompts blend to themselves."""
    weight_tensor = torch.tensor(relative_weights(weights), dtype=embeddings.dtype, device=embeddings.device)
    weight_tensor = weight_tensor.view(-1, *([1] * (embeddings.ndim - 1)))
    return (embeddings * weight_tensor).sum(0) / weight_tensor.sum()


def pad_chunks(tokens: torch.Tensor, chunks: int, empty_chunk: torch.Tensor) -> torch.Tensor:
    """`tokens` [77 * k, D] extended to `chunks` chunks with the encoding of an empty chunk."""
    missing = chunks - tokens.shape[0] // CLIP_WINDOW
    return torch.cat([tokens, *[empty_chunk] * missing]) if missing > 0 else tokens


def blend_prompts(
    encoded: Sequence[PromptEmbeddings], weights: Sequence[float], empty_chunk: torch.Tensor
) -> PromptEmbeddings:
    """The weighted blend of prompts; prompts of weight 0 are left out, so that they cannot even lengthen
    the blend. The others are padded to the longest one's chunk count."""
    kept = [(prompt, weight) for prompt, weight in zip(encoded, weights, strict=True) if weight > 0]
    chunks = max(prompt.chunks for prompt, _ in kept)
    tokens = torch.stack([pad_chunks(prompt.tokens, chunks, empty_chunk) for prompt, _ in kept])
    pooled = torch.stack([prompt.pooled for prompt, _ in kept])
    kept_weights = [weight for _, weight in kept]
    return PromptEmbeddings(blend(tokens, kept_weights), blend(pooled, kept_weights))


def stack_rows(rows: Sequence[PromptEmbeddings], empty_chunk: torch.Tensor) -> BatchEmbeddings:
    """Rows padded to one chunk count. The padding is masked out of the UNet's cross-attention, so that a
    request's image does not depend on the length of its batch neighbours' prompts."""
    chunks = max(row.chunks for row in rows)
    tokens = torch.stack([pad_chunks(row.tokens, chunks, empty_chunk) for row in rows])
    pooled = torch.stack([row.pooled for row in rows])
    if all(row.chunks == chunks for row in rows):
        return BatchEmbeddings(tokens, pooled, None)
    # Made on the device from the chunk counts the host knows: no host-to-device copy, so no wait on a GPU.
    mask = torch.zeros(tokens.shape[:2], dtype=tokens.dtype, device=tokens.device)
    for index, row in enumerate(rows):
        mask[index, : row.chunks * CLIP_WINDOW] = 1
    return BatchEmbeddings(tokens, pooled, mask)
