"""Prompts of any length: CLIP's 77-token window, chunked; per-token emphasis; and the weighted blend of
several prompts.

A prompt longer than the window is not cut: its tokens are split into chunks of 75, each chunk wrapped in
BOS/EOS and padded as CLIP expects, each encoded on its own, and the encodings concatenated along the token
axis (as A1111 and compel do). A prompt of at most 75 tokens is one chunk, exactly diffusers' encoding.
The pooled embedding is the first chunk's (as A1111).

A prompt given as spans (schema.PromptSpan) is tokenized span by span, each token keeping its span's
emphasis, and a span that starts a chunk pads the current one first (A1111's tokenize_line, without its
comma backtracking). After encoding, each chunk's token embeddings are scaled by their emphasis and the
chunk's mean is restored (A1111's "Original" emphasis, modules/sd_hijack_clip.py); the pooled embedding is
not emphasised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdxl_bedrock.schema import PromptKey, PromptSpan

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
    (1 = attend) when some row was padded to K chunks, else None; `chunks`, each row's own chunk count
    (known on the host, so that a compiled UNet can pick a graph by it without reading the mask back)."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    token_mask: torch.Tensor | None
    chunks: tuple[int, ...]


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


@dataclass(frozen=True)
class Chunks:
    """A prompt's 77-token windows for one tokenizer: `token_ids` and each token's `emphasis` (1.0 for BOS,
    EOS and padding), chunk by chunk."""

    token_ids: list[list[int]]
    emphasis: list[list[float]]


def chunk_spans(spans: Sequence[tuple[list[int], float, bool]], bos: int, eos: int, pad: int) -> Chunks:
    """(token ids, emphasis, starts a chunk) per span -> chunks of up to 75 tokens, each wrapped in BOS/EOS
    and padded. A span that starts a chunk closes the current one first, even an empty one (as A1111's
    `BREAK`); no spans, or only empty ones, make one empty chunk."""
    chunks: list[list[int]] = []
    weights: list[list[float]] = []
    tokens: list[int] = []
    emphasis: list[float] = []

    def close() -> None:
        padding = CHUNK_TOKENS - len(tokens)
        chunks.append([bos, *tokens, eos, *[pad] * padding])
        weights.append([1.0, *emphasis, 1.0, *[1.0] * padding])
        tokens.clear()
        emphasis.clear()

    for ids, weight, starts_chunk in spans:
        if starts_chunk:
            close()
        for token in ids:
            if len(tokens) == CHUNK_TOKENS:
                close()
            tokens.append(token)
            emphasis.append(weight)
    if tokens or not chunks:
        close()
    return Chunks(chunks, weights)


def tokenize_prompts(tokenizer: Any, prompts: Sequence[PromptKey]) -> list[Chunks]:
    """Each prompt's chunks for this tokenizer: a plain text as `tokenize_in_chunks` makes it (emphasis 1
    everywhere), spans tokenized one by one with their emphasis."""
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    pieces: list[str] = []
    for prompt in prompts:
        pieces.extend([prompt] if isinstance(prompt, str) else [span.text for span in prompt])
    token_ids = iter(tokenizer(pieces, add_special_tokens=False, verbose=False).input_ids)
    result = []
    for prompt in prompts:
        spans: Sequence[PromptSpan] = (PromptSpan(prompt),) if isinstance(prompt, str) else prompt
        tokenized = [(next(token_ids), span.emphasis, span.starts_chunk) for span in spans]
        result.append(chunk_spans(tokenized, *special))
    return result


def emphasize(hidden_states: torch.Tensor, emphasis: Sequence[Sequence[float]]) -> torch.Tensor:
    """A1111's "Original" emphasis on encoded chunks: `hidden_states` [N, 77, D] scaled token by token by
    `emphasis` (N lists of 77 factors), then each chunk rescaled to its mean before (the mean over its
    tokens and features).

    Chunks whose emphasis is all 1 come back unchanged, to the bit (the choice is made on the host, so
    nothing is read back from the device). Computed in float32, returned in the input's dtype."""
    rows = [index for index, factors in enumerate(emphasis) if any(factor != 1.0 for factor in factors)]
    if not rows:
        return hidden_states
    chunks = hidden_states[rows].to(torch.float32)
    factors = torch.tensor([emphasis[index] for index in rows], dtype=torch.float32).to(chunks.device)
    original_mean = chunks.mean(dim=(1, 2), keepdim=True)
    scaled = chunks * factors[..., None]
    restored = scaled * (original_mean / scaled.mean(dim=(1, 2), keepdim=True))
    result = hidden_states.clone()
    result[rows] = restored.to(hidden_states.dtype)
    return result


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
    own = tuple(row.chunks for row in rows)
    if all(count == chunks for count in own):
        return BatchEmbeddings(tokens, pooled, None, own)
    # Made on the device from the chunk counts the host knows: no host-to-device copy, so no wait on a GPU.
    mask = torch.zeros(tokens.shape[:2], dtype=tokens.dtype, device=tokens.device)
    for index, row in enumerate(rows):
        mask[index, : row.chunks * CLIP_WINDOW] = 1
    return BatchEmbeddings(tokens, pooled, mask, own)
