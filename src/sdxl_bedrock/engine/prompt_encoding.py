"""Stage 2: prompts to the UNet's conditioning, through both SDXL text encoders and a bounded cache.

A request's prompts (styled by its preset, weighted, with A1111-style emphasis spans) are encoded in
77-token chunks, as A1111 and compel do for long prompts; several weighted prompts blend into one
conditioning (prompts.blend_prompts). The encoder owns the text encoders' calls and nothing else, so the
stage script (pipeline.py) reads as diffusers' `encode_prompt` step.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sdxl_bedrock.engine.adapters import AdapterPlan, LoadedAdapters
from sdxl_bedrock.engine.prompts import (
    Chunks,
    PromptEmbeddings,
    blend_prompts,
    chunk_spans,
    emphasize,
    tokenize_prompts,
)
from sdxl_bedrock.schema import GenerationRequest, PromptKey, WeightedPrompt

Prompts = tuple[WeightedPrompt, ...]
# SDXL conditions on each text encoder's penultimate hidden state (diffusers' `encode_prompt`).
PENULTIMATE = 2
AdapterWeights = tuple[tuple[str, float], ...]
LayerKey = tuple[int, AdapterWeights, PromptKey]
"""A cached encoding: the first encoder's layer (counted from its output), the text encoders' LoRA
adapters it was encoded with (engine/adapters.py keys and weights) and the prompt's key."""
# Bounded by bytes, not entries: a 2000-character prompt is ~27 chunks of 77 tokens.
PROMPT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class RowPrompts:
    """One request's conditioning: `positive`; `negative` (unconditional) only under classifier-free
    guidance; `empty`, the empty prompt's encoding, whose chunk pads shorter prompts in a shared batch."""

    positive: PromptEmbeddings
    negative: PromptEmbeddings | None
    empty: PromptEmbeddings


class PromptEncoder:
    """SDXL's two CLIP text encoders (pipe.text_encoder, pipe.text_encoder_2) with their tokenizers;
    embeddings come out in `dtype` on `device`."""

    def __init__(
        self, pipe: Any, device: torch.device, dtype: torch.dtype, adapters: LoadedAdapters | None = None
    ) -> None:
        self.pipe = pipe
        self.adapters = adapters
        self.device = device
        self.dtype = dtype
        self.zero_unconditional = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
        # Repeated prompts (and style templates) skip the text encoders.
        self.cache: OrderedDict[LayerKey, PromptEmbeddings] = OrderedDict()
        self.cache_bytes = PROMPT_CACHE_BYTES

    def encode(
        self,
        requests: Sequence[GenerationRequest],
        guided: Sequence[bool],
        adapters: Sequence[AdapterWeights] | None = None,
    ) -> list[RowPrompts]:
        """Each request's conditioning (`guided[i]`: request i uses classifier-free guidance; `adapters[i]`
        the text encoders' LoRA adapters of request i, its negative and empty prompts included, as
        diffusers applies a loaded LoRA to every text it encodes). One text-encoder call per (layer,
        adapters) for the requests' texts not in the cache."""
        styled = [styled_prompts(request) for request in requests]
        layers = [
            (request.first_encoder_layer or PENULTIMATE, row_adapters)
            for request, row_adapters in zip(requests, adapters or [()] * len(requests), strict=True)
        ]
        wanted: dict[tuple[int, AdapterWeights], dict[PromptKey, None]] = {}
        for layer, (prompts, negatives) in zip(layers, styled, strict=True):
            keys = wanted.setdefault(layer, {"": None})
            keys.update(dict.fromkeys(p.encoding_key() for p in (*prompts, *negatives)))
        encoded = {
            (layer, key): embeddings
            for layer, keys in wanted.items()
            for key, embeddings in zip(keys, self.encode_texts(list(keys), *layer), strict=True)
        }

        def blended(
            prompts: Sequence[WeightedPrompt], layer: tuple[int, AdapterWeights], empty: PromptEmbeddings
        ) -> PromptEmbeddings | None:
            if not any(p.weight > 0 for p in prompts):
                return None
            return blend_prompts(
                [encoded[layer, p.encoding_key()] for p in prompts], [p.weight for p in prompts], empty.tokens
            )

        embeddings = []
        for is_guided, layer, (prompts, negative_prompts) in zip(guided, layers, styled, strict=True):
            empty = encoded[layer, ""]
            positive = blended(prompts, layer, empty) or empty
            negative = (
                (blended(negative_prompts, layer, empty) or self.unconditional(positive, empty))
                if is_guided
                else None
            )
            embeddings.append(RowPrompts(positive, negative, empty))
        return embeddings

    def unconditional(self, positive: PromptEmbeddings, empty: PromptEmbeddings) -> PromptEmbeddings:
        """What guidance pushes away from when the request names no negative prompt: zeros where the
        checkpoint says so (`force_zeros_for_empty_prompt`, SDXL base's choice), else the empty prompt."""
        if self.zero_unconditional:
            return PromptEmbeddings(torch.zeros_like(positive.tokens), torch.zeros_like(positive.pooled))
        return empty

    def encode_texts(
        self, texts: Sequence[PromptKey], first_layer: int = PENULTIMATE, adapters: AdapterWeights = ()
    ) -> list[PromptEmbeddings]:
        """`encode_uncached` through a bounded LRU cache of recent prompts (texts, or spans with emphasis),
        kept apart by the first encoder's layer they are taken from and the adapters they are encoded with."""
        cache = self.cache
        keys = [(first_layer, adapters, text) for text in texts]
        missing = [key for key in dict.fromkeys(keys) if key not in cache]
        if missing:
            encoded = self.encode_uncached([text for _, _, text in missing], first_layer, adapters)
            cache.update(zip(missing, encoded, strict=True))
        for key in keys:
            cache.move_to_end(key)
        found = [cache[key] for key in keys]
        held = sum(e.tokens.nbytes + e.pooled.nbytes for e in cache.values())
        while held > self.cache_bytes and len(cache) > len(keys):
            _, evicted = cache.popitem(last=False)
            held -= evicted.tokens.nbytes + evicted.pooled.nbytes
        return found

    def encode_uncached(
        self, texts: list[PromptKey], first_layer: int = PENULTIMATE, adapters: AdapterWeights = ()
    ) -> list[PromptEmbeddings]:
        """Both CLIP encoders' hidden states (the first encoder's `first_layer`-th from its output, the
        second's penultimate), chunk by chunk, each encoder's emphasised by the spans' emphasis
        (prompts.emphasize), concatenated along the feature axis: tokens [77 * chunks, 768 + 1280]; the
        pooled output of the second encoder's first chunk [1280]."""
        pipe = self.pipe
        hidden_states = []
        pooled: torch.Tensor | None = None
        encoders = (
            (pipe.tokenizer, pipe.text_encoder, first_layer),
            (pipe.tokenizer_2, pipe.text_encoder_2, PENULTIMATE),
        )
        # Two tokenizers with different vocabularies (a fine-tune's, the tiny model's) can cut one text
        # into different chunk counts, and the features are concatenated chunk by chunk.
        tokenized = equal_chunk_counts(
            [(tokenize_prompts(tokenizer, texts), tokenizer) for tokenizer, _, _ in encoders]
        )
        for chunked, (_, text_encoder, layer) in zip(tokenized, encoders, strict=True):
            token_ids = torch.tensor(
                [chunk for chunks in chunked for chunk in chunks.token_ids], device=self.device
            )
            with self.adapted(adapters, token_ids.shape[0]):
                output = text_encoder(token_ids, output_hidden_states=True)
            if output[0].ndim == 2:
                pooled = output[0]
            emphasis = [factors for chunks in chunked for factors in chunks.emphasis]
            hidden_states.append(emphasize(output.hidden_states[-layer], emphasis))
            counts = [len(chunks.token_ids) for chunks in chunked]
        assert pooled is not None, "the second text encoder must have a projection"
        features = torch.cat(hidden_states, dim=-1).to(self.dtype)
        starts = [sum(counts[:i]) for i in range(len(counts))]
        return [
            PromptEmbeddings(features[start : start + count].flatten(0, 1), pooled[start].to(self.dtype))
            for start, count in zip(starts, counts, strict=True)
        ]

    def adapted(self, adapters: AdapterWeights, rows: int) -> contextlib.AbstractContextManager[None]:
        """Text-encoder calls of `rows` rows inside add these adapters' deltas to every row."""
        if not adapters or self.adapters is None:
            return contextlib.nullcontext()
        plan = AdapterPlan.of([adapters] * rows, self.device, self.pipe.text_encoder.dtype)
        return self.adapters.applied(plan)


def equal_chunk_counts(tokenized: Sequence[tuple[list[Chunks], Any]]) -> list[list[Chunks]]:
    """Each tokenizer's chunks of each prompt, the shorter ones padded at the end with empty chunks
    ([BOS, EOS, pad...], emphasis 1) to the longest count for that prompt, as A1111 pads the shorter
    prompts of a batch."""
    counts = [max(len(each[i].token_ids) for each, _ in tokenized) for i in range(len(tokenized[0][0]))]
    padded = []
    for chunked, tokenizer in tokenized:
        empty = chunk_spans([], tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        padded.append(
            [
                Chunks(
                    chunks.token_ids + empty.token_ids * (count - len(chunks.token_ids)),
                    chunks.emphasis + empty.emphasis * (count - len(chunks.token_ids)),
                )
                for chunks, count in zip(chunked, counts, strict=True)
            ]
        )
    return padded


def styled_prompts(request: GenerationRequest) -> tuple[Prompts, Prompts]:
    """The request's prompts and negative prompts with its style applied, if it has one."""
    if request.style is None:
        return request.prompts, request.negative_prompts
    return request.style.apply(request.prompts, request.negative_prompts)
